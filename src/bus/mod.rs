//! The in-process broadcast bus: rooms hashed over shards, each shard owning its rooms'
//! subscriber lists behind a short, never-awaited lock. An event is encoded once into a frame
//! (`Bytes`) and the same frame is queued to every subscriber's outbox (a refcount bump each).
//!
//! Room messages pass through a per-room sequencer: the bus delivers each room's messages in
//! seq order, once, without gaps. A gap (a batch whose commit outcome was unknown, or — with
//! the Redis bridge — a lost pub/sub envelope) is filled from PostgreSQL before later
//! messages are delivered.
//!
//! With `REDIS_URL` set, [`bridge`] carries everything published here to the other nodes
//! subscribed to the room, and their events into [`Bus::sequence`] / [`Bus::deliver_event`].

pub mod bridge;
pub mod envelope;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;

use crate::store::Store;
use crate::ws::outbox::Out;
use crate::ws::protocol::{self, MessageEvent};
use crate::ws::writer::ConnShared;

/// Shards: enough that publishers on different rooms rarely meet on one lock.
const SHARDS: usize = 64;
/// Most messages fetched by one gap fill.
const FILL_LIMIT: i64 = 1000;
/// `RoomState::last_seq` of a room with no delivered message and no baseline.
const UNKNOWN: i64 = -1;
/// How long a gap may wait for its commit before it is skipped.
const GAP_PATIENCE: Duration = Duration::from_secs(10);

/// A connection subscribed to a room.
#[derive(Clone)]
pub struct Subscriber {
    /// Connection id (unique per process).
    pub conn_id: u64,
    /// The connection's user (for "everyone but the sender" events).
    pub user_id: i64,
    /// Where frames go.
    pub conn: Arc<ConnShared>,
}

struct RoomState {
    room: i64,
    subs: Vec<Subscriber>,
    /// Highest seq delivered to this room's subscribers, or the baseline they joined at;
    /// `UNKNOWN` until either exists (the first message then starts the room).
    last_seq: i64,
    /// Messages that arrived past a gap, waiting for the fill.
    pending: BTreeMap<i64, Bytes>,
    /// A catch-up asked for the messages up to this seq (`i64::MAX`: all there are) although
    /// nothing is parked past them: their envelopes may never arrive.
    want: i64,
    filling: bool,
}

impl RoomState {
    fn new(room: i64, baseline: Option<i64>) -> Self {
        Self {
            room,
            subs: Vec::new(),
            last_seq: baseline.unwrap_or(UNKNOWN),
            pending: BTreeMap::new(),
            want: 0,
            filling: false,
        }
    }
}

#[derive(Default)]
struct Shard {
    rooms: Mutex<HashMap<i64, RoomState>>,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, RoomState>> {
        // Every critical section is a plain map/vec update: a panic cannot leave it half-done.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The bus. Shared as `Arc<Bus>`.
pub struct Bus {
    shards: Box<[Shard]>,
    store: Store,
    me: Weak<Bus>,
    /// The Redis bridge, when this node is part of a cluster.
    bridge: OnceLock<Arc<bridge::Bridge>>,
}

impl Bus {
    /// A bus whose gap fills read from `store`.
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new_cyclic(|me| Bus {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            store,
            me: me.clone(),
            bridge: OnceLock::new(),
        })
    }

    fn attach_bridge(&self, bridge: Arc<bridge::Bridge>) {
        let _ = self.bridge.set(bridge);
    }

    /// The Redis bridge, if this node has one.
    pub fn bridge(&self) -> Option<&bridge::Bridge> {
        self.bridge.get().map(|b| &**b)
    }

    fn shard(&self, room: i64) -> &Shard {
        // Fixed hasher: stable across runs, cheap, spreads sequential ids.
        let mut h =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
        h.write_i64(room);
        &self.shards[(h.finish() as usize) % self.shards.len()]
    }

    /// Subscribes a connection to a room. `baseline` is the room's last seq as of the
    /// connection's membership look-up, if known: a room new to this node starts its
    /// sequencer there, so a message committed after the look-up but lost on its way here is
    /// a gap to fill rather than the unseen start of the room.
    pub fn subscribe(&self, room: i64, sub: Subscriber, baseline: Option<i64>) {
        let mut rooms = self.shard(room).lock();
        // No duplicate scan (O(room size) per connect): the registry subscribes a connection
        // to a room only when the room enters its set, so a pair is never added twice.
        let st = rooms.entry(room).or_insert_with(|| {
            if let Some(b) = self.bridge() {
                b.subscribe(room);
            }
            RoomState::new(room, baseline)
        });
        if let (UNKNOWN, Some(b)) = (st.last_seq, baseline) {
            st.last_seq = b;
        }
        st.subs.push(sub);
    }

    /// Rooms with local subscribers.
    pub fn local_rooms(&self) -> Vec<i64> {
        self.shards.iter().flat_map(|s| s.lock().keys().copied().collect::<Vec<_>>()).collect()
    }

    /// Drops a room's state once nothing needs it; the caller holds its shard's lock.
    fn release(&self, rooms: &mut HashMap<i64, RoomState>, room: i64) {
        if rooms.get(&room).is_some_and(|st| st.subs.is_empty() && !st.filling) {
            rooms.remove(&room);
            if let Some(b) = self.bridge() {
                b.unsubscribe(room);
            }
        }
    }

    /// Unsubscribes a connection; the room's state is dropped with its last subscriber.
    pub fn unsubscribe(&self, room: i64, conn_id: u64) {
        let mut rooms = self.shard(room).lock();
        if let Some(st) = rooms.get_mut(&room) {
            if let Some(i) = st.subs.iter().position(|s| s.conn_id == conn_id) {
                st.subs.swap_remove(i);
            }
        }
        self.release(&mut rooms, room);
    }

    /// Local subscribers of a room.
    pub fn subscriber_count(&self, room: i64) -> usize {
        self.shard(room).lock().get(&room).map_or(0, |st| st.subs.len())
    }

    /// Sends an unordered event (typing, presence, receipts) to a room's subscribers on every
    /// node, optionally skipping one user's connections.
    pub fn publish(&self, room: i64, frame: Bytes, except_user: Option<i64>) {
        if let Some(b) = self.bridge() {
            b.event(room, except_user, &frame);
        }
        self.deliver_event(room, frame, except_user);
    }

    /// [`Bus::publish`] to this node's subscribers only (an event from another node).
    pub fn deliver_event(&self, room: i64, frame: Bytes, except_user: Option<i64>) {
        let rooms = self.shard(room).lock();
        if let Some(st) = rooms.get(&room) {
            let (mut n, mut dropped) = (0u64, 0u64);
            for s in &st.subs {
                if Some(s.user_id) != except_user {
                    dropped += s.conn.outbox.push(Out::Frame(frame.clone())).is_err() as u64;
                    n += 1;
                }
            }
            count_fanout(n, dropped);
        }
    }

    /// Delivers a message committed by this node to the room's subscribers on every node.
    pub fn publish_message(&self, room: i64, seq: i64, frame: Bytes) {
        if let Some(b) = self.bridge() {
            b.message(room, seq, &frame);
        }
        self.sequence(room, seq, frame);
    }

    /// Delivers a committed room message to this node's subscribers, keeping the room's order
    /// and filling gaps.
    pub fn sequence(&self, room: i64, seq: i64, frame: Bytes) {
        let mut rooms = self.shard(room).lock();
        let Some(st) = rooms.get_mut(&room) else { return };
        if seq <= st.last_seq {
            return; // duplicate (e.g. a fill raced the live copy)
        }
        if st.last_seq == UNKNOWN || seq == st.last_seq + 1 {
            deliver(st, seq, frame);
            // Messages parked behind a gap that is now closed.
            while let Some(entry) = st.pending.first_entry() {
                if *entry.key() != st.last_seq + 1 {
                    break;
                }
                let (s, f) = entry.remove_entry();
                deliver(st, s, f);
            }
            return;
        }
        st.pending.insert(seq, frame);
        self.start_fill(rooms, room);
    }

    /// Reads a room's messages after the last delivered one from PostgreSQL (up to `upto`, or
    /// all there are) and delivers them: they were committed elsewhere while their envelopes
    /// could not reach this node. A room that has delivered nothing yet has no position to
    /// catch up from and is left alone.
    pub fn catch_up(&self, room: i64, upto: Option<i64>) {
        let mut rooms = self.shard(room).lock();
        let Some(st) = rooms.get_mut(&room) else { return };
        let upto = upto.unwrap_or(i64::MAX);
        if st.last_seq == UNKNOWN || upto <= st.last_seq {
            return;
        }
        st.want = st.want.max(upto);
        metrics::counter!("livechat_bus_bridge_catchups_total").increment(1);
        self.start_fill(rooms, room);
    }

    /// Spawns the room's fill task unless one runs (it picks up the new work).
    fn start_fill(&self, mut rooms: MutexGuard<'_, HashMap<i64, RoomState>>, room: i64) {
        let Some(st) = rooms.get_mut(&room) else { return };
        if st.filling {
            return;
        }
        st.filling = true;
        let after = st.last_seq;
        drop(rooms);
        metrics::counter!("livechat_bus_gap_fills_total").increment(1);
        if let Some(bus) = self.me.upgrade() {
            tokio::spawn(async move { bus.fill(room, after).await });
        }
    }

    /// Fetches the messages after `after` up to the first parked one and delivers them.
    async fn fill(self: Arc<Self>, room: i64, mut after: i64) {
        let mut delay = Duration::from_millis(50);
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
            let step = match self.store.messages_between(room, after, before, FILL_LIMIT).await {
                Ok(rows) => {
                    delay = Duration::from_millis(50);
                    self.apply_fill(room, rows, before, waited)
                }
                Err(e) => {
                    tracing::warn!(room, error = %e, "Gap fill failed; retrying.");
                    delay = (delay * 2).min(Duration::from_secs(2));
                    Fill::Retry
                }
            };
            match step {
                Fill::Done => break,
                Fill::Wait => {
                    tokio::time::sleep(delay).await;
                    waited += delay;
                }
                Fill::Retry => tokio::time::sleep(delay).await,
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
    /// PostgreSQL failed: try again after a pause (not counted against the patience).
    Retry,
    /// Delivered up to this seq; fill again from there.
    Continue(i64),
}

impl Bus {
    /// Delivers fetched rows and whatever they unblock.
    fn apply_fill(&self, room: i64, rows: Vec<MessageEvent>, before: i64, waited: Duration) -> Fill {
        let mut rooms = self.shard(room).lock();
        let Some(st) = rooms.get_mut(&room) else { return Fill::Done };
        let empty = rows.is_empty();
        let full = rows.len() as i64 >= FILL_LIMIT;
        for m in rows {
            if m.seq > st.last_seq {
                deliver(st, m.seq, protocol::message_frame(&m));
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
            st.last_seq = before - 1;
        }
        while let Some(entry) = st.pending.first_entry() {
            if *entry.key() > st.last_seq + 1 {
                break;
            }
            let (s, f) = entry.remove_entry();
            if s > st.last_seq {
                deliver(st, s, f);
            }
        }
        if st.pending.is_empty() && st.want <= st.last_seq {
            Fill::Done
        } else {
            Fill::Continue(st.last_seq)
        }
    }
}

fn deliver(st: &mut RoomState, seq: i64, frame: Bytes) {
    st.last_seq = seq;
    // One clock read per message, not per subscriber.
    let at = crate::telemetry::stamp();
    let mut dropped = 0u64;
    for s in &st.subs {
        dropped += s.conn.outbox.push(Out::Seq { room: st.room, seq, frame: frame.clone(), at }).is_err() as u64;
    }
    count_fanout(st.subs.len() as u64, dropped);
}

/// Metrics of one fan-out, emitted once for all its subscribers.
fn count_fanout(queued: u64, dropped: u64) {
    let hot = crate::telemetry::hot();
    hot.fanout.increment(queued);
    if dropped > 0 {
        hot.dropped.increment(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus() -> Arc<Bus> {
        // Never connects unless a gap needs filling.
        let store = Store::new("postgres://t@127.0.0.1:1/t", 2, Duration::from_millis(50)).unwrap();
        Bus::new(store)
    }

    fn sub(bus: &Bus, room: i64, conn_id: u64, user_id: i64) -> Arc<ConnShared> {
        let conn = Arc::new(ConnShared::new(100));
        bus.subscribe(room, Subscriber { conn_id, user_id, conn: conn.clone() }, None);
        conn
    }

    fn seqs(conn: &ConnShared) -> Vec<i64> {
        let mut items = Vec::new();
        conn.outbox.drain(&mut items, usize::MAX);
        items
            .into_iter()
            .filter_map(|o| match o {
                Out::Seq { seq, .. } => Some(seq),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn ordered_and_deduplicated() {
        let bus = bus();
        let a = sub(&bus, 1, 1, 10);
        let b = sub(&bus, 1, 2, 20);
        for s in [1, 2, 2, 3, 1] {
            bus.publish_message(1, s, Bytes::from_static(b"m"));
        }
        assert_eq!(seqs(&a), vec![1, 2, 3]);
        assert_eq!(seqs(&b), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn gap_parks_later_messages() {
        let bus = bus();
        let a = sub(&bus, 7, 1, 10);
        bus.publish_message(7, 1, Bytes::from_static(b"m"));
        bus.publish_message(7, 3, Bytes::from_static(b"m"));
        assert_eq!(seqs(&a), vec![1], "3 waits for 2");
        bus.publish_message(7, 2, Bytes::from_static(b"m"));
        assert_eq!(seqs(&a), vec![2, 3], "2 closes the gap and releases 3");
    }

    #[tokio::test]
    async fn publish_skips_excluded_user_and_unsubscribed() {
        let bus = bus();
        let a = sub(&bus, 1, 1, 10);
        let b = sub(&bus, 1, 2, 20);
        bus.publish(1, Bytes::from_static(b"t"), Some(10));
        assert!(a.outbox.is_empty());
        assert_eq!(b.outbox.len(), 1);
        bus.unsubscribe(1, 2);
        assert_eq!(bus.subscriber_count(1), 1);
        bus.unsubscribe(1, 1);
        assert_eq!(bus.subscriber_count(1), 0);
    }
}
