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
    /// Lowest seq of the contiguous range sent (meaningful when `hi > 0`).
    lo: i64,
    /// Highest seq of that range (0 = nothing sent yet).
    hi: i64,
    /// Live frames held back (a `sync` replay is being fetched, or the connection's first
    /// moments, waiting for a `sync`).
    held: Option<Vec<(i64, Bytes)>>,
    /// The hold belongs to a `sync` in progress (released by its replay only).
    for_sync: bool,
}

impl Cursor {
    /// Sends a live frame if it continues the range; drops duplicates and frames past a gap
    /// (after a capped replay the client syncs again from `synced`, so nothing is lost).
    fn live(&mut self, seq: i64, frame: Bytes, out: &mut Vec<Bytes>) {
        if self.hi == 0 {
            self.lo = seq;
            self.hi = seq;
            out.push(frame);
        } else if seq == self.hi + 1 {
            self.hi = seq;
            out.push(frame);
        }
    }

    /// Releases held live frames through the live rule.
    fn release(&mut self, out: &mut Vec<Bytes>) -> usize {
        self.for_sync = false;
        let held = self.held.take().unwrap_or_default();
        let n = held.len();
        for (seq, f) in held {
            self.live(seq, f, out);
        }
        n
    }
}

/// Per-connection ordering state. Pure logic: turns outbox items into frames to write.
///
/// Invariant: per room, the frames written form one contiguous seq range with no repeats,
/// except that a `sync` replay may fill in seqs below a range sent before it. After a `sync`,
/// `synced` reports the highest seq up to which the client provably has every message.
#[derive(Debug)]
pub struct Sequencer {
    rooms: HashMap<i64, Cursor>,
    held_frames: usize,
    /// Fresh connection: hold live room messages until the client's first event, a `sync`, or
    /// the hold timer, so a reconnecting client's replay comes before newer live messages.
    initial_hold: bool,
}

/// The sequencer held more frames than the outbox bound allows.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

impl Sequencer {
    /// A sequencer; `initial_hold` holds live messages until [`Sequencer::end_initial_hold`].
    pub fn new(initial_hold: bool) -> Self {
        Self { rooms: HashMap::new(), held_frames: 0, initial_hold }
    }

    /// Whether the connection's initial hold is still on.
    pub fn holding(&self) -> bool {
        self.initial_hold
    }

    /// Ends the initial hold, releasing what it held (rooms with a `sync` in progress stay held).
    pub fn end_initial_hold(&mut self, out: &mut Vec<Bytes>) {
        if !self.initial_hold {
            return;
        }
        self.initial_hold = false;
        for c in self.rooms.values_mut() {
            if c.held.is_some() && !c.for_sync {
                self.held_frames -= c.release(out);
            }
        }
    }

    /// Applies one item, appending frames to send to `out`.
    pub fn apply(&mut self, item: Out, out: &mut Vec<Bytes>, cap: usize) -> Result<(), Overflow> {
        match item {
            Out::Frame(f) => out.push(f),
            Out::Seq { room, seq, frame, .. } => {
                let hold = self.initial_hold;
                let c = self.rooms.entry(room).or_default();
                if c.held.is_none() && hold {
                    c.held = Some(Vec::new());
                }
                if let Some(held) = &mut c.held {
                    held.push((seq, frame));
                    self.held_frames += 1;
                    if self.held_frames > cap {
                        return Err(Overflow);
                    }
                } else {
                    c.live(seq, frame, out);
                }
            }
            Out::Hold(room) => {
                let c = self.rooms.entry(room).or_default();
                c.held.get_or_insert_with(Vec::new);
                c.for_sync = true;
            }
            Out::Replay { room, after, rows } => {
                let c = self.rooms.entry(room).or_default();
                let sent_before = (c.hi > 0).then_some((c.lo, c.hi));
                let (mut lo, mut hi) = (after + 1, after);
                for (seq, f) in rows {
                    if !sent_before.is_some_and(|(lo, hi)| (lo..=hi).contains(&seq)) {
                        out.push(f);
                    }
                    hi = hi.max(seq);
                }
                // The client now has everything in (after, hi]; a range sent live before the
                // sync joins it only if the replay reached it (else it is sent again later).
                if let Some((old_lo, old_hi)) = sent_before {
                    if old_lo <= hi + 1 {
                        hi = hi.max(old_hi);
                        lo = lo.min(old_lo);
                    }
                }
                c.lo = lo.max(1);
                c.hi = hi;
                self.held_frames -= c.release(out);
            }
            Out::SyncDone { rooms, more } => {
                let sent: Vec<(i64, i64)> = rooms
                    .iter()
                    .map(|&(room, seen)| (room, self.rooms.get(&room).map_or(seen, |c| c.hi.max(seen))))
                    .collect();
                out.push(protocol::synced_frame(&sent, more));
                self.end_initial_hold(out);
            }
            Out::Release => self.end_initial_hold(out),
            Out::Reset(room) => {
                if let Some(c) = self.rooms.remove(&room) {
                    self.held_frames -= c.held.map_or(0, |h| h.len());
                }
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
    /// How long a new connection holds live messages waiting for a `sync` (zero = off).
    pub initial_hold: Duration,
}

/// Runs until the connection is closed; returns the close code sent, if any.
pub async fn run<W: AsyncWrite + Unpin>(
    mut w: W,
    shared: Arc<ConnShared>,
    timers: WriterTimers,
    cap: usize,
) -> Option<u16> {
    let mut seq = Sequencer::new(!timers.initial_hold.is_zero());
    let hold_timer = tokio::time::sleep(timers.initial_hold);
    tokio::pin!(hold_timer);
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
            _ = &mut hold_timer, if seq.holding() => seq.end_initial_hold(&mut frames),
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
///
/// The `IoSlice` array is built inside each poll, never held across an await: it would
/// otherwise sit in every idle connection's writer future (~1 KiB each).
async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, frames: &mut Vec<Bytes>) -> std::io::Result<()> {
    let mut first = 0;
    while first < frames.len() {
        let n = std::future::poll_fn(|cx| {
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
        })
        .await?;
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

    fn f(s: i64) -> Bytes {
        Bytes::from(s.to_string())
    }

    fn seqs(out: &[Bytes]) -> Vec<i64> {
        out.iter().map(|b| std::str::from_utf8(b).unwrap().parse().unwrap()).collect()
    }

    fn live(room: i64, s: i64) -> Out {
        Out::Seq { room, seq: s, frame: f(s), at: 0 }
    }

    fn replay(room: i64, after: i64, range: std::ops::RangeInclusive<i64>) -> Out {
        Out::Replay { room, after, rows: range.map(|s| (s, f(s))).collect() }
    }

    fn synced(out: &[Bytes]) -> serde_json::Value {
        let last = out.last().unwrap();
        serde_json::from_slice(&last[2..]).unwrap()
    }

    #[test]
    fn live_dedup_and_gap_drop() {
        let mut q = Sequencer::new(false);
        let mut out = vec![];
        for s in [5, 6, 6, 4, 7, 9] {
            q.apply(live(1, s), &mut out, 100).unwrap();
        }
        assert_eq!(seqs(&out), vec![5, 6, 7], "duplicates and a frame past a gap are not sent");
    }

    #[test]
    fn replay_fills_before_held_live() {
        let mut q = Sequencer::new(false);
        let mut out = vec![];
        q.apply(Out::Hold(1), &mut out, 100).unwrap();
        q.apply(live(1, 11), &mut out, 100).unwrap();
        q.apply(live(1, 12), &mut out, 100).unwrap();
        assert!(out.is_empty(), "held while replay is fetched");
        q.apply(replay(1, 7, 8..=11), &mut out, 100).unwrap();
        assert_eq!(seqs(&out), vec![8, 9, 10, 11, 12]);
    }

    #[test]
    fn replay_skips_already_sent_live() {
        let mut q = Sequencer::new(false);
        let mut out = vec![];
        q.apply(live(1, 10), &mut out, 100).unwrap();
        q.apply(Out::Hold(1), &mut out, 100).unwrap();
        q.apply(replay(1, 7, 8..=10), &mut out, 100).unwrap();
        q.apply(live(1, 11), &mut out, 100).unwrap();
        q.apply(live(1, 9), &mut out, 100).unwrap();
        assert_eq!(seqs(&out), vec![10, 8, 9, 11]);
    }

    #[test]
    fn capped_replay_reports_its_end_and_drops_live_past_the_gap() {
        let mut q = Sequencer::new(false);
        let mut out = vec![];
        q.apply(Out::Hold(1), &mut out, 100).unwrap();
        q.apply(live(1, 50), &mut out, 100).unwrap();
        // max_replay = 3: rows 1..=3 of 49 missing
        q.apply(replay(1, 0, 1..=3), &mut out, 100).unwrap();
        q.apply(Out::SyncDone { rooms: vec![(1, 0)], more: true }, &mut out, 100).unwrap();
        assert_eq!(synced(&out)["rooms"]["1"], 3, "synced names the end of what the client has");
        out.clear();
        q.apply(live(1, 51), &mut out, 100).unwrap();
        assert!(out.is_empty(), "past the gap: the client syncs again");
        q.apply(Out::Hold(1), &mut out, 100).unwrap();
        q.apply(replay(1, 3, 4..=51), &mut out, 100).unwrap();
        q.apply(live(1, 52), &mut out, 100).unwrap();
        assert_eq!(seqs(&out), (4..=52).collect::<Vec<_>>());
    }

    #[test]
    fn initial_hold_puts_replay_first() {
        let mut q = Sequencer::new(true);
        let mut out = vec![];
        q.apply(live(1, 21), &mut out, 100).unwrap();
        q.apply(live(2, 5), &mut out, 100).unwrap();
        assert!(out.is_empty());
        q.apply(Out::Hold(1), &mut out, 100).unwrap();
        q.apply(replay(1, 18, 19..=21), &mut out, 100).unwrap();
        assert_eq!(seqs(&out), vec![19, 20, 21]);
        q.apply(Out::SyncDone { rooms: vec![(1, 18)], more: false }, &mut out, 100).unwrap();
        assert_eq!(synced(&out[..4])["rooms"]["1"], 21);
        out.remove(3);
        assert_eq!(seqs(&out), vec![19, 20, 21, 5], "other rooms are released after synced");
        assert!(!q.holding());
    }

    #[test]
    fn initial_hold_released_by_first_event() {
        let mut q = Sequencer::new(true);
        let mut out = vec![];
        q.apply(live(1, 3), &mut out, 100).unwrap();
        q.apply(Out::Release, &mut out, 100).unwrap();
        q.apply(live(1, 4), &mut out, 100).unwrap();
        assert_eq!(seqs(&out), vec![3, 4]);
    }

    #[test]
    fn reset_forgets_a_room() {
        let mut q = Sequencer::new(false);
        let mut out = vec![];
        q.apply(live(1, 3), &mut out, 100).unwrap();
        q.apply(Out::Reset(1), &mut out, 100).unwrap();
        q.apply(live(1, 9), &mut out, 100).unwrap();
        assert_eq!(seqs(&out), vec![3, 9], "rejoined after missing 4..=8 as a non-member");
    }

    #[test]
    fn hold_overflow_is_reported() {
        let mut q = Sequencer::new(false);
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
