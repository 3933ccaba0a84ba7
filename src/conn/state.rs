//! What the reader, the writer, the bus and the connection registry share about one live
//! connection: its outbound queue and when the client was last heard from.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::outbox::Outbox;

/// One connection's shared state.
pub struct ConnState {
    /// Outbound queue.
    pub outbox: Outbox,
    /// Milliseconds since `epoch` when the client last sent a frame (idle detection).
    last_rx_ms: AtomicU64,
    epoch: Instant,
}

impl ConnState {
    /// New state for a connection with an outbox bound of `cap`.
    pub fn new(cap: usize) -> Self {
        Self { outbox: Outbox::new(cap), last_rx_ms: AtomicU64::new(0), epoch: Instant::now() }
    }

    /// Records client activity.
    pub fn touch(&self) {
        self.last_rx_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since the client last sent a frame.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_rx_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}
