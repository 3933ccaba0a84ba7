//! The order of one connection's stream: per room, the frames written form one contiguous seq
//! range with no repeats, across live delivery, `sync` replays and the initial hold. Pure logic
//! (outbox items in, frames out), so every interleaving is unit-tested without a socket.
//!
//! Not to be confused with the bus's per-room order (`bus::room`), which makes one node's
//! delivery gapless; this one makes one connection's stream gapless and duplicate-free.

use std::collections::HashMap;

use bytes::Bytes;

use super::outbox::Out;
use crate::wire::server::synced_frame;

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
pub struct StreamOrder {
    rooms: HashMap<i64, Cursor>,
    held_frames: usize,
    /// A fresh connection that asked for `resume=1`: hold live room messages until its first
    /// `sync` is answered or the hold timer fires, so its replay comes before newer live ones.
    initial_hold: bool,
}

/// The sequencer held more frames than the outbox bound allows.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

impl StreamOrder {
    /// A sequencer; `initial_hold` holds live messages until [`StreamOrder::end_initial_hold`].
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
            Out::Unhold(room) => {
                if let Some(c) = self.rooms.get_mut(&room) {
                    self.held_frames -= c.release(out);
                }
            }
            Out::Replay { room, after, rows, last } => {
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
                if last {
                    self.held_frames -= c.release(out);
                }
            }
            Out::SyncDone { rooms, more } => {
                let sent: Vec<(i64, i64)> = rooms
                    .iter()
                    .map(|&(room, seen)| (room, self.rooms.get(&room).map_or(seen, |c| c.hi.max(seen))))
                    .collect();
                out.push(synced_frame(&sent, more));
                self.end_initial_hold(out);
            }
            Out::Reset(room) => {
                if let Some(c) = self.rooms.remove(&room) {
                    self.held_frames -= c.held.map_or(0, |h| h.len());
                }
            }
        }
        Ok(())
    }
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
        Out::Replay { room, after, rows: range.map(|s| (s, f(s))).collect(), last: true }
    }

    fn synced(out: &[Bytes]) -> serde_json::Value {
        let last = out.last().unwrap();
        serde_json::from_slice(&last[2..]).unwrap()
    }

    #[test]
    fn live_dedup_and_gap_drop() {
        let mut q = StreamOrder::new(false);
        let mut out = vec![];
        for s in [5, 6, 6, 4, 7, 9] {
            q.apply(live(1, s), &mut out, 100).unwrap();
        }
        assert_eq!(seqs(&out), vec![5, 6, 7], "duplicates and a frame past a gap are not sent");
    }

    #[test]
    fn replay_fills_before_held_live() {
        let mut q = StreamOrder::new(false);
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
        let mut q = StreamOrder::new(false);
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
        let mut q = StreamOrder::new(false);
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
        let mut q = StreamOrder::new(true);
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
    fn a_replay_in_chunks_holds_live_frames_until_its_last_chunk() {
        let mut q = StreamOrder::new(false);
        let mut out = vec![];
        q.apply(Out::Hold(1), &mut out, 100).unwrap();
        q.apply(live(1, 9), &mut out, 100).unwrap();
        let chunk = |after, range: std::ops::RangeInclusive<i64>, last| Out::Replay {
            room: 1,
            after,
            rows: range.map(|s| (s, f(s))).collect(),
            last,
        };
        q.apply(chunk(0, 1..=4, false), &mut out, 100).unwrap();
        q.apply(live(1, 10), &mut out, 100).unwrap();
        assert_eq!(seqs(&out), vec![1, 2, 3, 4], "live 9 and 10 wait for the rest of the replay");
        q.apply(chunk(4, 5..=8, true), &mut out, 100).unwrap();
        assert_eq!(seqs(&out), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn a_failed_replay_releases_the_hold_without_moving_the_stream() {
        let mut q = StreamOrder::new(false);
        let mut out = vec![];
        q.apply(live(1, 5), &mut out, 100).unwrap();
        q.apply(Out::Hold(1), &mut out, 100).unwrap();
        q.apply(live(1, 6), &mut out, 100).unwrap();
        assert_eq!(seqs(&out), vec![5]);
        q.apply(Out::Unhold(1), &mut out, 100).unwrap();
        q.apply(live(1, 7), &mut out, 100).unwrap();
        assert_eq!(seqs(&out), vec![5, 6, 7], "live delivery goes on after the failed replay");
    }

    #[test]
    fn reset_forgets_a_room() {
        let mut q = StreamOrder::new(false);
        let mut out = vec![];
        q.apply(live(1, 3), &mut out, 100).unwrap();
        q.apply(Out::Reset(1), &mut out, 100).unwrap();
        q.apply(live(1, 9), &mut out, 100).unwrap();
        assert_eq!(seqs(&out), vec![3, 9], "rejoined after missing 4..=8 as a non-member");
    }

    #[test]
    fn hold_overflow_is_reported() {
        let mut q = StreamOrder::new(false);
        let mut out = vec![];
        q.apply(Out::Hold(1), &mut out, 2).unwrap();
        q.apply(live(1, 1), &mut out, 2).unwrap();
        q.apply(live(1, 2), &mut out, 2).unwrap();
        assert_eq!(q.apply(live(1, 3), &mut out, 2), Err(Overflow));
    }
}
