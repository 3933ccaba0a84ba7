//! The per-room order on this node: each room's events reach its subscribers in seq order,
//! once, without gaps. An event that arrives past a missing seq is parked while the gap is
//! read through [`History`](super::History) (a batch whose commit outcome was unknown, or a
//! pub/sub envelope lost between nodes).
//!
//! A `leave` ends its member's delivery exactly: their subscriptions get the `leave` and are
//! dropped right after it, in the room's order, so it is the last event of the room they see
//! (README "Room events").

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use super::{Bus, Subscriber};
use crate::conn::Out;
use crate::model::RoomEvent;
use crate::telemetry::{self, names};
use crate::util::clock::stamp;
use crate::util::Backoff;
use crate::wire::server::event_frame;

/// Most events fetched by one gap fill (or one join's replay).
pub(super) const FILL_LIMIT: i64 = 1000;
/// `RoomState::last_seq` of a room with no delivered message and no baseline.
pub(super) const UNKNOWN: i64 = -1;
/// Messages parked behind a gap at most, per room; later ones are read back by the fill.
pub(super) const MAX_PARKED: usize = 4096;
/// How long a gap may wait for its commit (or for PostgreSQL to answer) before it is skipped.
const GAP_PATIENCE: Duration = Duration::from_secs(10);

pub(super) struct RoomState {
    pub(super) room: i64,
    pub(super) subs: Vec<Subscriber>,
    /// Highest seq delivered to this room's subscribers, or the baseline they joined at;
    /// `UNKNOWN` until either exists (the first message then starts the room).
    pub(super) last_seq: i64,
    /// Events that arrived past a gap, waiting for the fill: (frame, the member it removes).
    pub(super) pending: BTreeMap<i64, (Bytes, Option<i64>)>,
    /// Members who left at a seq not delivered here yet (told by the membership channel):
    /// nothing past it reaches them, even if the `leave` itself never arrives.
    pub(super) leaving: HashMap<i64, i64>,
    /// A catch-up asked for the messages up to this seq (`i64::MAX`: all there are) although
    /// nothing is parked past them: their envelopes may never arrive.
    pub(super) want: i64,
    pub(super) filling: bool,
}

impl RoomState {
    pub(super) fn new(room: i64, baseline: Option<i64>) -> Self {
        Self {
            room,
            subs: Vec::new(),
            last_seq: baseline.unwrap_or(UNKNOWN),
            pending: BTreeMap::new(),
            leaving: HashMap::new(),
            want: 0,
            filling: false,
        }
    }
}

impl Bus {
    /// Delivers a committed room event to this node's subscribers, keeping the room's order
    /// and filling gaps. `leaving`: the member whose delivery ends with it (a `leave`).
    pub fn sequence(self: &Arc<Self>, room: i64, seq: i64, frame: Bytes, leaving: Option<i64>) {
        let mut rooms = self.shard(room).lock();
        let Some(st) = rooms.get_mut(&room) else { return };
        if seq <= st.last_seq {
            return; // duplicate (e.g. a fill raced the live copy)
        }
        if st.last_seq == UNKNOWN || seq == st.last_seq + 1 {
            deliver(st, seq, frame, leaving);
            // Events parked behind a gap that is now closed.
            while let Some(entry) = st.pending.first_entry() {
                if *entry.key() != st.last_seq + 1 {
                    break;
                }
                let (s, (f, l)) = entry.remove_entry();
                deliver(st, s, f, l);
            }
            // A `leave` may have taken the last subscriber.
            self.release(&mut rooms, room);
            return;
        }
        if st.pending.len() < MAX_PARKED {
            st.pending.insert(seq, (frame, leaving));
        } else {
            // Bounded: past it the message is not kept here but read back by the fill (it is
            // committed: nothing reaches the bus before its COMMIT).
            st.want = st.want.max(seq);
        }
        self.start_fill(rooms, room);
    }

    /// Reads a room's messages after the last delivered one from PostgreSQL (up to `upto`, or
    /// all there are) and delivers them: they were committed elsewhere while their envelopes
    /// could not reach this node. A room that has delivered nothing yet has no position to
    /// catch up from and is left alone.
    pub fn catch_up(self: &Arc<Self>, room: i64, upto: Option<i64>) {
        let mut rooms = self.shard(room).lock();
        let Some(st) = rooms.get_mut(&room) else { return };
        let upto = upto.unwrap_or(i64::MAX);
        if st.last_seq == UNKNOWN || upto <= st.last_seq {
            return;
        }
        st.want = st.want.max(upto);
        metrics::counter!(names::BUS_BRIDGE_CATCHUPS_TOTAL).increment(1);
        self.start_fill(rooms, room);
    }

    /// Spawns the room's fill task unless one runs (it picks up the new work).
    pub(super) fn start_fill(self: &Arc<Self>, mut rooms: MutexGuard<'_, HashMap<i64, RoomState>>, room: i64) {
        let Some(st) = rooms.get_mut(&room) else { return };
        if st.filling {
            return;
        }
        st.filling = true;
        let after = st.last_seq;
        drop(rooms);
        metrics::counter!(names::BUS_GAP_FILLS_TOTAL).increment(1);
        let bus = self.clone();
        tokio::spawn(async move { bus.fill(room, after).await });
    }

    /// Fetches the messages after `after` up to the first parked one and delivers them.
    async fn fill(self: Arc<Self>, room: i64, mut after: i64) {
        let mut pause = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut waited = Duration::ZERO;
        loop {
            let before = {
                let rooms = self.shard(room).lock();
                let Some(st) = rooms.get(&room) else { break };
                match st.pending.keys().next().copied() {
                    Some(first) => first.max(after + 1),
                    None if st.want > st.last_seq => st.want.saturating_add(1),
                    None => break,
                }
            };
            let step = match self.history.between(room, after, before, FILL_LIMIT).await {
                Ok(rows) => {
                    pause.reset();
                    self.apply_fill(room, rows, before, waited)
                }
                Err(e) => {
                    tracing::warn!(room, error = %e, "Gap fill failed; retrying.");
                    Fill::Retry
                }
            };
            match step {
                Fill::Done => break,
                Fill::Wait => {
                    let d = pause.peek();
                    tokio::time::sleep(d).await;
                    waited += d;
                }
                Fill::Retry => {
                    let d = pause.next_delay();
                    tokio::time::sleep(d).await;
                    // Failures count against the patience too: a room whose history cannot
                    // be read for that long goes on live (its members recover with `sync`).
                    waited += d;
                    if waited >= GAP_PATIENCE {
                        self.give_up(room);
                        break;
                    }
                }
                Fill::Continue(last) => after = last,
            }
        }
        let mut rooms = self.shard(room).lock();
        if let Some(st) = rooms.get_mut(&room) {
            st.filling = false;
            // Work that arrived after the last look (it saw `filling` and left it to us).
            if !st.pending.is_empty() || st.want > st.last_seq {
                self.start_fill(rooms, room);
                return;
            }
        }
        self.release(&mut rooms, room);
    }
}

/// Next step of a gap fill.
enum Fill {
    /// Nothing parked any more.
    Done,
    /// The missing rows are not visible yet: try again after a pause.
    Wait,
    /// PostgreSQL failed: try again after a pause (counted against the patience).
    Retry,
    /// Delivered up to this seq; fill again from there.
    Continue(i64),
}

impl Bus {
    /// The gap could not be read within [`GAP_PATIENCE`]: deliver what is parked, in order,
    /// and stop asking. The skipped events stay reachable through `sync`.
    fn give_up(&self, room: i64) {
        let mut rooms = self.shard(room).lock();
        let Some(st) = rooms.get_mut(&room) else { return };
        tracing::error!(
            room,
            last = st.last_seq,
            parked = st.pending.len(),
            "Gap fill kept failing; skipping the gap."
        );
        metrics::counter!(names::BUS_GAPS_SKIPPED_TOTAL).increment(1);
        for (seq, (frame, leaving)) in std::mem::take(&mut st.pending) {
            if seq > st.last_seq {
                deliver(st, seq, frame, leaving);
            }
        }
        st.want = 0;
    }

    /// Delivers fetched rows and whatever they unblock.
    fn apply_fill(&self, room: i64, rows: Vec<RoomEvent>, before: i64, waited: Duration) -> Fill {
        let mut rooms = self.shard(room).lock();
        let Some(st) = rooms.get_mut(&room) else { return Fill::Done };
        let empty = rows.is_empty();
        let full = rows.len() as i64 >= FILL_LIMIT;
        for e in rows {
            if e.seq() > st.last_seq {
                deliver(st, e.seq(), event_frame(&e), e.leaving());
            }
        }
        if st.pending.is_empty() {
            // A catch-up: PostgreSQL's rows are all there is to deliver (seqs are visible
            // gaplessly, so a short page is the end).
            if full && st.want > st.last_seq {
                return Fill::Continue(st.last_seq);
            }
            st.want = 0;
            return Fill::Done;
        }
        if empty && st.last_seq < before - 1 {
            if waited < GAP_PATIENCE {
                // The missing seqs are not in PostgreSQL (yet): a seq is only reserved inside
                // a committing transaction, so wait for it.
                return Fill::Wait;
            }
            // Never committed after all: do not stall the room for ever.
            tracing::error!(room, last = st.last_seq, before, "Sequence gap never filled; skipping it.");
            metrics::counter!(names::BUS_GAPS_SKIPPED_TOTAL).increment(1);
            st.last_seq = before - 1;
        }
        while let Some(entry) = st.pending.first_entry() {
            if *entry.key() > st.last_seq + 1 {
                break;
            }
            let (s, (f, l)) = entry.remove_entry();
            if s > st.last_seq {
                deliver(st, s, f, l);
            }
        }
        if st.pending.is_empty() && st.want <= st.last_seq {
            Fill::Done
        } else {
            Fill::Continue(st.last_seq)
        }
    }
}

pub(super) fn deliver(st: &mut RoomState, seq: i64, frame: Bytes, leaving: Option<i64>) {
    st.last_seq = seq;
    if !st.leaving.is_empty() {
        // Members whose `leave` (at a lower seq) was skipped here get nothing past it.
        let gone = &st.leaving;
        st.subs.retain(|s| gone.get(&s.user_id).is_none_or(|&at| seq <= at));
        st.leaving.retain(|_, at| *at >= seq);
    }
    // One clock read per event, not per subscriber.
    let at = stamp();
    let mut dropped = 0u64;
    for s in &st.subs {
        dropped += s.conn.outbox.push(Out::Seq { room: st.room, seq, frame: frame.clone(), at }).is_err() as u64;
    }
    count_fanout(st.subs.len() as u64, dropped);
    if let Some(user) = leaving {
        // The `leave` is the last event of the room its member receives.
        st.subs.retain(|s| s.user_id != user);
        st.leaving.remove(&user);
    }
}

/// Metrics of one fan-out, emitted once for all its subscribers.
pub(super) fn count_fanout(queued: u64, dropped: u64) {
    let hot = telemetry::hot();
    hot.fanout.increment(queued);
    if dropped > 0 {
        hot.dropped.increment(dropped);
    }
}
