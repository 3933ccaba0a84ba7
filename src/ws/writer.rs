//! The connection's writer task: drains the outbox, keeps every room's messages in seq order
//! without duplicates across live delivery and `sync` replay, merges queued frames into one
//! vectored write, and owns the connection's timers (ping, idle timeout, token expiry).

use std::collections::HashMap;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::ws::frame;
use crate::ws::outbox::{CloseReq, Out, Outbox, SLOW_CONSUMER};
use crate::ws::protocol;

/// Frames merged into one write at most (DESIGN.md: ~64 frames / 64 KiB per `writev`).
const BATCH_FRAMES: usize = 64;
/// Bytes merged into one write at most.
const BATCH_BYTES: usize = 64 * 1024;

/// What a room's stream on this connection has carried.
#[derive(Debug, Default)]
struct Cursor {
    /// Lowest seq of the contiguous range sent (0 = nothing sent yet).
    lo: i64,
    /// Highest seq sent.
    hi: i64,
    /// Live frames held back while a `sync` replay for the room is being fetched.
    held: Option<Vec<(i64, Bytes)>>,
}

/// Per-connection ordering state. Pure logic: turns outbox items into frames to write.
#[derive(Debug, Default)]
pub struct Sequencer {
    rooms: HashMap<i64, Cursor>,
    held_frames: usize,
}

/// The sequencer held more frames than the outbox bound allows.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

impl Sequencer {
    /// Applies one item, appending frames to send to `out`.
    pub fn apply(&mut self, item: Out, out: &mut Vec<Bytes>, cap: usize) -> Result<(), Overflow> {
        match item {
            Out::Frame(f) => out.push(f),
            Out::Seq { room, seq, frame, .. } => {
                let c = self.rooms.entry(room).or_default();
                if let Some(held) = &mut c.held {
                    held.push((seq, frame));
                    self.held_frames += 1;
                    if self.held_frames > cap {
                        return Err(Overflow);
                    }
                } else if c.hi == 0 {
                    c.lo = seq;
                    c.hi = seq;
                    out.push(frame);
                } else if seq > c.hi {
                    c.hi = seq;
                    out.push(frame);
                }
                // seq <= hi: already delivered (replay raced live delivery): drop.
            }
            Out::Hold(room) => {
                let c = self.rooms.entry(room).or_default();
                c.held.get_or_insert_with(Vec::new);
            }
            Out::Replay { room, rows } => {
                let c = self.rooms.entry(room).or_default();
                let (first, last) = match (rows.first(), rows.last()) {
                    (Some(f), Some(l)) => (f.0, l.0),
                    _ => (0, 0),
                };
                for (seq, f) in rows {
                    if c.hi == 0 || seq < c.lo || seq > c.hi {
                        out.push(f);
                    }
                }
                if first > 0 {
                    if c.hi == 0 {
                        c.lo = first;
                        c.hi = last;
                    } else if last + 1 >= c.lo {
                        // Replay reaches the live range: one contiguous range again.
                        c.lo = c.lo.min(first);
                        c.hi = c.hi.max(last);
                    }
                }
                if let Some(held) = c.held.take() {
                    self.held_frames -= held.len();
                    for (seq, f) in held {
                        if c.hi == 0 || seq > c.hi {
                            if c.hi == 0 {
                                c.lo = seq;
                            }
                            c.hi = seq;
                            out.push(f);
                        }
                    }
                }
            }
            Out::SyncDone { rooms, more } => {
                let sent: Vec<(i64, i64)> = rooms
                    .iter()
                    .map(|&(room, seen)| (room, self.rooms.get(&room).map_or(seen, |c| c.hi.max(seen))))
                    .collect();
                out.push(protocol::synced_frame(&sent, more));
            }
        }
        Ok(())
    }
}

/// Shared between the reader, the writer and the connection registry.
pub struct ConnShared {
    /// Outbound queue.
    pub outbox: Outbox,
    /// Milliseconds since `epoch` when the client last sent a frame (idle detection).
    last_rx_ms: AtomicU64,
    epoch: Instant,
}

impl ConnShared {
    /// New state for a connection with an outbox bound of `cap`.
    pub fn new(cap: usize) -> Self {
        Self { outbox: Outbox::new(cap), last_rx_ms: AtomicU64::new(0), epoch: Instant::now() }
    }

    /// Records client activity.
    pub fn touch(&self) {
        self.last_rx_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_rx_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// Timers the writer enforces.
#[derive(Debug, Clone, Copy)]
pub struct WriterTimers {
    /// Ping interval.
    pub ping: Duration,
    /// Close 1001 after this long without a client frame.
    pub idle_timeout: Duration,
    /// When the connection's token expires (close 1008 with `unauthorized`).
    pub expires_at: Option<tokio::time::Instant>,
}

/// Runs until the connection is closed; returns the close code sent, if any.
pub async fn run<W: AsyncWrite + Unpin>(
    mut w: W,
    shared: Arc<ConnShared>,
    timers: WriterTimers,
    cap: usize,
) -> Option<u16> {
    let mut seq = Sequencer::default();
    // Both start empty and are freed before each wait: an idle connection holds no buffers.
    let mut items = Vec::new();
    let mut frames: Vec<Bytes> = Vec::new();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + timers.ping, timers.ping);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Far enough to never fire for a connection without a token deadline.
    let never = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let expiry = tokio::time::sleep_until(timers.expires_at.unwrap_or(never));
    tokio::pin!(expiry);
    let mut expired = false;

    loop {
        let close = shared.outbox.drain(&mut items, BATCH_FRAMES);
        let mut overflow = false;
        // Publish stamp of the oldest room message in this batch (u64::MAX: none).
        let mut oldest = u64::MAX;
        for item in items.drain(..) {
            if let Out::Seq { at, .. } = &item {
                oldest = oldest.min(*at);
            }
            overflow = overflow || seq.apply(item, &mut frames, cap).is_err();
        }
        if overflow {
            shared.outbox.close(SLOW_CONSUMER);
            metrics::counter!("livechat_ws_slow_consumer_closes_total").increment(1);
            frames.clear();
            continue;
        }
        if let Some(req) = close {
            if req.flush {
                // Deliver what was queued before the close, then the close frame.
                let mut rest = Vec::new();
                loop {
                    shared.outbox.drain(&mut rest, usize::MAX);
                    if rest.is_empty() {
                        break;
                    }
                    for item in rest.drain(..) {
                        let _ = seq.apply(item, &mut frames, usize::MAX);
                    }
                }
            } else {
                frames.clear();
            }
            frames.push(frame::close(req.code, req.reason));
            let _ = write_all(&mut w, &mut frames).await;
            let _ = w.shutdown().await;
            return Some(req.code);
        }
        if !frames.is_empty() {
            let n = frames.len() as u64;
            if write_all(&mut w, &mut frames).await.is_err() {
                return None;
            }
            let hot = crate::telemetry::hot();
            hot.deliveries.increment(n);
            if oldest != u64::MAX {
                // Once per written batch: the worst latency in it.
                hot.delivery_latency.record(crate::telemetry::stamp().saturating_sub(oldest) as f64 / 1e6);
            }
            continue;
        }
        items = Vec::new();
        frames = Vec::new();
        tokio::select! {
            _ = shared.outbox.wait() => {}
            _ = ping.tick() => {
                if shared.idle_for() >= timers.idle_timeout {
                    shared.outbox.close(CloseReq { code: 1001, reason: "idle timeout", flush: false });
                } else {
                    frames.push(frame::encode(frame::OP_PING, b""));
                }
            }
            _ = &mut expiry, if !expired => {
                expired = true;
                let err = crate::error::ApiError::unauthorized("token expired");
                let _ = shared.outbox.push(Out::Frame(protocol::error_frame(&err, None)));
                shared.outbox.close(CloseReq { code: 1008, reason: "token expired", flush: true });
            }
        }
    }
}


/// Writes every frame with as few `writev` calls as possible (batches of 64 frames / 64 KiB).
async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, frames: &mut Vec<Bytes>) -> std::io::Result<()> {
    let mut start = 0;
    while start < frames.len() {
        // Build one batch.
        let mut end = start;
        let mut bytes = 0;
        while end < frames.len() && end - start < BATCH_FRAMES && (bytes < BATCH_BYTES || end == start) {
            bytes += frames[end].len();
            end += 1;
        }
        let batch = &mut frames[start..end];
        let mut first = 0;
        while first < batch.len() {
            let n = {
                let mut slices = [IoSlice::new(&[]); BATCH_FRAMES];
                let pending = &batch[first..];
                for (slot, b) in slices.iter_mut().zip(pending) {
                    *slot = IoSlice::new(b);
                }
                w.write_vectored(&slices[..pending.len()]).await?
            };
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let mut n = n;
            while n > 0 && first < batch.len() {
                let len = batch[first].len();
                if n >= len {
                    n -= len;
                    first += 1;
                } else {
                    batch[first].advance(n);
                    n = 0;
                }
            }
            while first < batch.len() && batch[first].is_empty() {
                first += 1;
            }
        }
        start = end;
    }
    frames.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: i64) -> Bytes {
        Bytes::from(s.to_string())
    }

    fn seqs(out: &[Bytes]) -> Vec<i64> {
        out.iter().map(|b| std::str::from_utf8(b).unwrap().parse().unwrap()).collect()
    }

    fn live(room: i64, s: i64) -> Out {
        Out::Seq { room, seq: s, frame: f(s), at: 0 }
    }

    #[test]
    fn live_dedup() {
        let mut q = Sequencer::default();
        let mut out = vec![];
        for s in [5, 6, 6, 4, 7] {
            q.apply(live(1, s), &mut out, 100).unwrap();
        }
        assert_eq!(seqs(&out), vec![5, 6, 7]);
    }

    #[test]
    fn replay_fills_before_held_live() {
        let mut q = Sequencer::default();
        let mut out = vec![];
        q.apply(Out::Hold(1), &mut out, 100).unwrap();
        q.apply(live(1, 11), &mut out, 100).unwrap();
        q.apply(live(1, 12), &mut out, 100).unwrap();
        assert!(out.is_empty(), "held while replay is fetched");
        let rows = (8..=11).map(|s| (s, f(s))).collect();
        q.apply(Out::Replay { room: 1, rows }, &mut out, 100).unwrap();
        assert_eq!(seqs(&out), vec![8, 9, 10, 11, 12]);
    }

    #[test]
    fn replay_skips_already_sent_live() {
        let mut q = Sequencer::default();
        let mut out = vec![];
        q.apply(live(1, 10), &mut out, 100).unwrap();
        q.apply(Out::Hold(1), &mut out, 100).unwrap();
        let rows = (8..=10).map(|s| (s, f(s))).collect();
        q.apply(Out::Replay { room: 1, rows }, &mut out, 100).unwrap();
        q.apply(live(1, 11), &mut out, 100).unwrap();
        q.apply(live(1, 9), &mut out, 100).unwrap();
        assert_eq!(seqs(&out), vec![10, 8, 9, 11]);
    }

    #[test]
    fn hold_overflow_is_reported() {
        let mut q = Sequencer::default();
        let mut out = vec![];
        q.apply(Out::Hold(1), &mut out, 2).unwrap();
        q.apply(live(1, 1), &mut out, 2).unwrap();
        q.apply(live(1, 2), &mut out, 2).unwrap();
        assert_eq!(q.apply(live(1, 3), &mut out, 2), Err(Overflow));
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
        write_all(&mut a, &mut frames).await.unwrap();
        drop(a);
        assert_eq!(reader.await.unwrap(), expected);
    }
}
