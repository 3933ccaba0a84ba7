//! The connection's writer task: drains the outbox, keeps every room's messages in seq order
//! without duplicates across live delivery and `sync` replay, merges queued frames into one
//! vectored write, and owns the connection's timers (ping, idle timeout, token expiry).

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::conn::{CloseReq, ConnState, Out, StreamOrder, SLOW_CONSUMER};
use crate::error::ApiError;
use crate::telemetry::{self, names};
use crate::util::clock::stamp;
use crate::wire::frame;
use crate::wire::server::error_frame;

/// Frames merged into one write at most: ~64 frames / 64 KiB per `writev` kept fan-out
/// lossless to 2 M deliveries/s where one write per frame saturated near 300 k (BENCHMARKS.md).
const BATCH_FRAMES: usize = 64;
/// Bytes merged into one write at most.
const BATCH_BYTES: usize = 64 * 1024;

/// Timers the writer enforces.
#[derive(Debug, Clone, Copy)]
pub struct WriterTimers {
    /// Ping interval.
    pub ping: Duration,
    /// Close 1001 after this long without a client frame.
    pub idle_timeout: Duration,
    /// When the connection's token expires (close 1008 with `unauthorized`).
    pub expires_at: Option<Instant>,
    /// How long a `resume=1` connection holds live messages waiting for its `sync` (zero = off).
    pub initial_hold: Duration,
    /// `limits.write_timeout_secs`: a socket write that makes no progress this long drops the
    /// connection (a client that stopped reading).
    pub write_stall: Duration,
}

/// The writer's deadlines, checked on every turn of its loop (busy or idle).
struct Deadlines {
    next_ping: Instant,
    /// Token expiry, until it fired.
    expiry: Option<Instant>,
    /// End of the initial hold, while it lasts.
    hold_until: Option<Instant>,
}

impl Deadlines {
    fn new(t: &WriterTimers) -> Self {
        let now = Instant::now();
        let hold_until = (!t.initial_hold.is_zero()).then(|| now + t.initial_hold);
        Self { next_ping: now + t.ping, expiry: t.expires_at, hold_until }
    }

    /// The earliest deadline.
    fn next(&self) -> Instant {
        [Some(self.next_ping), self.expiry, self.hold_until].into_iter().flatten().min().unwrap_or(self.next_ping)
    }

    /// Acts on every deadline that has passed: ping (or close an idle connection), token
    /// expiry, end of the initial hold.
    fn check(&mut self, t: &WriterTimers, shared: &ConnState, order: &mut StreamOrder, frames: &mut Vec<Bytes>) {
        let now = Instant::now();
        if now >= self.next_ping {
            self.next_ping = now + t.ping;
            if shared.idle_for() >= t.idle_timeout {
                shared.outbox.close(CloseReq { code: 1001, reason: "idle timeout", flush: false });
            } else {
                frames.push(frame::encode(frame::OP_PING, b""));
            }
        }
        if self.expiry.is_some_and(|e| now >= e) {
            self.expiry = None;
            let err = ApiError::unauthorized("token expired");
            let _ = shared.outbox.push(Out::Frame(error_frame(&err, None)));
            shared.outbox.close(CloseReq { code: 1008, reason: "token expired", flush: true });
        }
        if self.hold_until.is_some_and(|h| now >= h) || (self.hold_until.is_some() && !order.holding()) {
            self.hold_until = None;
            order.end_initial_hold(frames);
        }
    }
}

/// Runs until the connection is closed; returns the close code sent, if any.
pub async fn run<W: AsyncWrite + Unpin>(
    mut w: W,
    shared: Arc<ConnState>,
    timers: WriterTimers,
    cap: usize,
) -> Option<u16> {
    let mut order = StreamOrder::new(!timers.initial_hold.is_zero());
    let mut deadlines = Deadlines::new(&timers);
    // Both start empty and are freed before each wait: an idle connection holds no buffers.
    let mut items = Vec::new();
    let mut frames: Vec<Bytes> = Vec::new();
    // One timer for every deadline, re-armed only when the earliest one changes (not per turn:
    // a busy connection goes idle thousands of times a second).
    let timer = tokio::time::sleep_until(deadlines.next());
    tokio::pin!(timer);
    loop {
        deadlines.check(&timers, &shared, &mut order, &mut frames);
        let close = shared.outbox.drain(&mut items, BATCH_FRAMES);
        let mut overflow = false;
        // Publish stamp of the oldest room message in this batch (u64::MAX: none).
        let mut oldest = u64::MAX;
        for item in items.drain(..) {
            if let Out::Seq { at, .. } = &item {
                oldest = oldest.min(*at);
            }
            overflow = overflow || order.apply(item, &mut frames, cap).is_err();
        }
        if overflow {
            shared.outbox.close(SLOW_CONSUMER);
            metrics::counter!(names::WS_SLOW_CONSUMER_CLOSES_TOTAL).increment(1);
            frames.clear();
            continue;
        }
        if let Some(req) = close {
            return send_close(&mut w, &shared, &mut order, &mut frames, req, timers.write_stall).await;
        }
        if !frames.is_empty() {
            let n = frames.len() as u64;
            if write_guarded(&mut w, &mut frames, &shared, timers.write_stall).await.is_err() {
                return None;
            }
            let hot = telemetry::hot();
            hot.deliveries.increment(n);
            if oldest != u64::MAX {
                // Once per written batch: the worst latency in it.
                hot.delivery_latency.record(stamp().saturating_sub(oldest) as f64 / 1e6);
            }
            continue;
        }
        items = Vec::new();
        frames = Vec::new();
        let next = deadlines.next();
        if timer.deadline() != next {
            timer.as_mut().reset(next);
        }
        tokio::select! {
            _ = shared.outbox.wait() => {}
            _ = &mut timer => {}
        }
    }
}

/// Why a guarded write ended early.
#[derive(Debug, PartialEq, Eq)]
enum WriteEnd {
    /// The socket failed or made no progress for `write_stall`.
    Dead,
    /// A close was requested and the write did not finish within [`CLOSE_WRITE_GRACE`].
    Interrupted,
}

/// How long a write in progress may still finish after a close was requested.
const CLOSE_WRITE_GRACE: Duration = Duration::from_secs(1);

/// [`write_all`] that gives up when a write makes no progress for `stall`, and that a close
/// request interrupts (after a short grace, so a healthy client still gets its close frame).
async fn write_guarded<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &mut Vec<Bytes>,
    shared: &ConnState,
    stall: Duration,
) -> Result<(), WriteEnd> {
    let write = write_all(w, frames, stall);
    tokio::pin!(write);
    tokio::select! {
        r = &mut write => return r.map_err(|_| WriteEnd::Dead),
        _ = shared.outbox.closed() => {}
    }
    match tokio::time::timeout(CLOSE_WRITE_GRACE.min(stall), write).await {
        Ok(r) => r.map_err(|_| WriteEnd::Dead),
        Err(_) => Err(WriteEnd::Interrupted),
    }
}

/// Sends the close frame (after what was queued before it, if the close is graceful) and
/// shuts the socket down; returns the code sent.
async fn send_close<W: AsyncWrite + Unpin>(
    w: &mut W,
    shared: &ConnState,
    seq: &mut StreamOrder,
    frames: &mut Vec<Bytes>,
    req: CloseReq,
    stall: Duration,
) -> Option<u16> {
    if req.flush {
        // Deliver what was queued before the close, then the close frame.
        let mut rest = Vec::new();
        loop {
            shared.outbox.drain(&mut rest, usize::MAX);
            if rest.is_empty() {
                break;
            }
            for item in rest.drain(..) {
                let _ = seq.apply(item, frames, usize::MAX);
            }
        }
    } else {
        frames.clear();
    }
    frames.push(frame::close(req.code, req.reason));
    let written = write_all(w, frames, stall.min(CLOSE_WRITE_GRACE * 2)).await;
    let _ = tokio::time::timeout(CLOSE_WRITE_GRACE, w.shutdown()).await;
    written.ok().map(|()| req.code)
}

/// Writes every frame with as few `writev` calls as possible (batches of 64 frames / 64 KiB).
///
/// The `IoSlice` array is built inside each poll, never held across an await: it would
/// otherwise sit in every idle connection's writer future (~1 KiB each).
async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, frames: &mut Vec<Bytes>, stall: Duration) -> std::io::Result<()> {
    let mut first = 0;
    while first < frames.len() {
        let write = std::future::poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); BATCH_FRAMES];
            let mut count = 0;
            let mut bytes = 0;
            for (slot, b) in slices.iter_mut().zip(&frames[first..]) {
                if count > 0 && bytes >= BATCH_BYTES {
                    break;
                }
                *slot = IoSlice::new(b);
                count += 1;
                bytes += b.len();
            }
            std::pin::Pin::new(&mut *w).poll_write_vectored(cx, &slices[..count])
        });
        // Each call that makes progress restarts the clock: only a stalled peer times out.
        let n = tokio::time::timeout(stall, write).await.map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut n = n;
        while n > 0 {
            let len = frames[first].len();
            if n >= len {
                n -= len;
                first += 1;
            } else {
                frames[first].advance(n);
                n = 0;
            }
        }
        while first < frames.len() && frames[first].is_empty() {
            first += 1;
        }
    }
    frames.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_is_dropped_after_the_stall_deadline() {
        // Nobody reads the other end: the pipe's 64 bytes fill and the write makes no progress.
        let (mut a, _b) = tokio::io::duplex(64);
        let shared = ConnState::new(16);
        let mut frames: Vec<Bytes> = (0..100).map(|_| Bytes::from_static(b"0123456789")).collect();
        let r = write_guarded(&mut a, &mut frames, &shared, Duration::from_secs(10)).await;
        assert_eq!(r, Err(WriteEnd::Dead));
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_request_interrupts_a_stalled_write() {
        let (mut a, _b) = tokio::io::duplex(64);
        let shared = Arc::new(ConnState::new(16));
        let closer = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            closer.outbox.close(SLOW_CONSUMER);
        });
        let mut frames: Vec<Bytes> = (0..100).map(|_| Bytes::from_static(b"0123456789")).collect();
        let started = Instant::now();
        let r = write_guarded(&mut a, &mut frames, &shared, Duration::from_secs(600)).await;
        assert_eq!(r, Err(WriteEnd::Interrupted));
        assert!(started.elapsed() < Duration::from_secs(5), "long before the stall deadline");
    }

    /// A peer that accepts every write at once and, on each, gets more traffic queued for it:
    /// the writer is never idle. Gives up (an error) after a bound, so a writer that never acts
    /// on its deadlines fails instead of spinning for ever.
    struct BusyPeer {
        shared: Arc<ConnState>,
        writes: usize,
    }

    impl AsyncWrite for BusyPeer {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.writes += 1;
            if self.writes > 2_000_000 {
                return std::task::Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
            }
            let _ = self.shared.outbox.push(Out::Frame(Bytes::from_static(b"more")));
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn token_expiry_closes_a_connection_whose_writer_is_never_idle() {
        let shared = Arc::new(ConnState::new(1 << 20));
        let _ = shared.outbox.push(Out::Frame(Bytes::from_static(b"first")));
        let timers = WriterTimers {
            ping: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(7200),
            expires_at: Some(Instant::now() + Duration::from_millis(20)),
            initial_hold: Duration::ZERO,
            write_stall: Duration::from_secs(60),
        };
        let peer = BusyPeer { shared: shared.clone(), writes: 0 };
        let code = run(peer, shared, timers, 1 << 20).await;
        assert_eq!(code, Some(1008), "the expiry acts although the writer never idles");
    }

    #[tokio::test]
    async fn write_all_handles_partial_writes() {
        // A duplex pipe with a tiny buffer forces partial vectored writes.
        let (mut a, mut b) = tokio::io::duplex(7);
        let mut frames: Vec<Bytes> = (0..200).map(|i| Bytes::from(format!("frame-{i};"))).collect();
        let expected: Vec<u8> = frames.iter().flat_map(|b| b.to_vec()).collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut got).await.unwrap();
            got
        });
        write_all(&mut a, &mut frames, Duration::from_secs(5)).await.unwrap();
        drop(a);
        assert_eq!(reader.await.unwrap(), expected);
    }
}
