//! Per-connection outbound queue: the bus and the session push, the connection's writer drains.
//!
//! Hand-rolled rather than a tokio mpsc because (a) an idle connection must cost no allocation
//! (an empty `VecDeque` allocates nothing; an mpsc allocates a block eagerly), (b) the writer
//! drains many frames under one lock to merge them into one `writev`, and (c) a full queue
//! must never block or slow the publisher: it marks the connection as a slow consumer instead.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;

/// One item for the writer, in the order it must take effect.
#[derive(Debug, Clone)]
pub enum Out {
    /// A ready frame outside any room's message order (typing, presence, errors, pongs).
    Frame(Bytes),
    /// A room message frame; the writer uses `room`/`seq` to keep each room gapless and unique.
    Seq {
        /// Room.
        room: i64,
        /// Per-room sequence.
        seq: i64,
        /// Encoded `message` frame.
        frame: Bytes,
        /// When the bus published it ([`crate::telemetry::stamp`]): the writer observes
        /// publish→socket-write latency once per written batch.
        at: u64,
    },
    /// A `sync` for `room` started: hold its live messages until the replay arrives.
    Hold(i64),
    /// Replayed rows of `room` (ascending seq), releasing the hold.
    Replay {
        /// Room.
        room: i64,
        /// The client's last seen seq the replay starts after.
        after: i64,
        /// (seq, encoded `message` frame), ascending.
        rows: Vec<(i64, Bytes)>,
    },
    /// All replays of one `sync` are queued: the writer answers `synced`.
    SyncDone {
        /// (room, last seq the client said it had seen).
        rooms: Vec<(i64, i64)>,
        /// A room hit `sync.max_replay`.
        more: bool,
    },
    /// The client sent its first non-`sync` event: end the connection's initial hold.
    Release,
    /// The connection joined or left `room`: forget what its stream carried.
    Reset(i64),
}

/// Why and how the connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReq {
    /// WebSocket close code.
    pub code: u16,
    /// Short reason (≤ 123 bytes).
    pub reason: &'static str,
    /// Send queued frames first (graceful) or drop them (slow consumer, protocol error).
    pub flush: bool,
}

struct State {
    queue: VecDeque<Out>,
    close: Option<CloseReq>,
}

/// Close for a connection that cannot keep up (SPEC §7: it resumes with `sync`).
pub const SLOW_CONSUMER: CloseReq = CloseReq { code: 1013, reason: "slow consumer", flush: false };

/// A connection's bounded outbound queue.
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    cap: usize,
}

/// The queue was full (the connection is now closing as a slow consumer) or already closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected;

impl Outbox {
    /// An empty outbox that holds at most `cap` items.
    pub fn new(cap: usize) -> Self {
        Self { state: Mutex::new(State { queue: VecDeque::new(), close: None }), notify: Notify::new(), cap }
    }

    // A panic while holding this lock cannot leave the queue logically broken (every
    // mutation is a single push/drain), so poisoning is ignored rather than propagated.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an item. Past the bound the connection is marked slow (close 1013) and its
    /// queue dropped: it resumes with `sync` after reconnecting.
    pub fn push(&self, item: Out) -> Result<(), Rejected> {
        let mut st = self.lock();
        if st.close.is_some() {
            return Err(Rejected);
        }
        if st.queue.len() >= self.cap {
            // The rejected item itself is counted by the caller (the bus, per fan-out).
            crate::telemetry::hot().dropped.increment(st.queue.len() as u64);
            st.queue = VecDeque::new();
            st.close = Some(SLOW_CONSUMER);
            drop(st);
            metrics::counter!("livechat_ws_slow_consumer_closes_total").increment(1);
            self.notify.notify_one();
            return Err(Rejected);
        }
        st.queue.push_back(item);
        drop(st);
        self.notify.notify_one();
        Ok(())
    }

    /// Queues a control reply (pong) regardless of the bound; it is tiny and owed.
    pub fn push_control(&self, frame: Bytes) {
        let mut st = self.lock();
        if st.close.is_none() {
            st.queue.push_back(Out::Frame(frame));
            drop(st);
            self.notify.notify_one();
        }
    }

    /// Asks the writer to close; the first request wins.
    pub fn close(&self, req: CloseReq) {
        let mut st = self.lock();
        if st.close.is_none() {
            if !req.flush {
                st.queue = VecDeque::new();
            }
            st.close = Some(req);
        }
        drop(st);
        self.notify.notify_one();
    }

    /// Moves up to `max` queued items into `into`; returns the close request if one is pending.
    pub fn drain(&self, into: &mut Vec<Out>, max: usize) -> Option<CloseReq> {
        let mut st = self.lock();
        let n = st.queue.len().min(max);
        into.extend(st.queue.drain(..n));
        if st.queue.is_empty() && st.queue.capacity() > 64 {
            // Give a burst's memory back: idle connections must stay small.
            st.queue = VecDeque::new();
        }
        st.close
    }

    /// Waits until something was pushed or a close was requested.
    pub async fn wait(&self) {
        self.notify.notified().await
    }

    /// Items currently queued.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_marks_slow_consumer() {
        let o = Outbox::new(2);
        assert!(o.push(Out::Frame(Bytes::from_static(b"a"))).is_ok());
        assert!(o.push(Out::Frame(Bytes::from_static(b"b"))).is_ok());
        assert_eq!(o.push(Out::Frame(Bytes::from_static(b"c"))), Err(Rejected));
        let mut v = Vec::new();
        let close = o.drain(&mut v, 10);
        assert!(v.is_empty(), "a slow consumer's queue is dropped");
        assert_eq!(close.map(|c| c.code), Some(1013));
        assert_eq!(o.push(Out::Frame(Bytes::new())), Err(Rejected));
    }

    #[test]
    fn first_close_wins_and_flush_keeps_queue() {
        let o = Outbox::new(8);
        o.push(Out::Frame(Bytes::from_static(b"a"))).unwrap();
        o.close(CloseReq { code: 1001, reason: "going away", flush: true });
        o.close(CloseReq { code: 1013, reason: "x", flush: false });
        let mut v = Vec::new();
        assert_eq!(o.drain(&mut v, 10).map(|c| c.code), Some(1001));
        assert_eq!(v.len(), 1);
    }
}
