//! The in-process broadcast bus: rooms hashed over shards, each shard owning its rooms'
//! subscriber lists behind a short, never-awaited lock. An event is encoded once into a frame
//! (`Bytes`) and the same frame is queued to every subscriber's outbox (a refcount bump each).
//!
//! Room events pass through a per-room order ([`room`]): the bus delivers each room's events
//! in seq order, once, without gaps, filling gaps through a [`History`].
//!
//! With `REDIS_URL` set, [`bridge`] carries everything published here to the other nodes
//! subscribed to the room, and their events into [`Bus::sequence`] / [`Bus::deliver_event`].
//! Membership changes also go to every node ([`Bus::publish_membership`]), whatever rooms it
//! serves: a node must start delivering a room to a member who just joined it.

pub mod bridge;
pub mod envelope;
mod history;
pub mod replay;
mod room;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;

use crate::conn::{ConnState, Out};
use crate::util::lock;
pub use bridge::Bridge;
pub use history::History;
#[cfg(test)]
pub(crate) use history::NoHistory;
use room::{count_fanout, RoomState, UNKNOWN};

/// Shards: enough that publishers on different rooms rarely meet on one lock.
const SHARDS: usize = 64;

/// A connection subscribed to a room.
#[derive(Clone)]
pub struct Subscriber {
    /// Connection id (unique per process).
    pub conn_id: u64,
    /// The connection's user (for "everyone but the sender" events).
    pub user_id: i64,
    /// Where frames go.
    pub conn: Arc<ConnState>,
}

#[derive(Default)]
struct Shard {
    rooms: Mutex<HashMap<i64, RoomState>>,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, RoomState>> {
        lock(&self.rooms)
    }
}

/// A membership change committed somewhere in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberChange {
    /// Room.
    pub room: i64,
    /// The member.
    pub user: i64,
    /// Seq of its `member` event.
    pub seq: i64,
    /// Joined (true) or left.
    pub join: bool,
}

/// What this node does about membership changes (the connection registry, above the bus).
pub trait MembershipListener: Send + Sync + 'static {
    /// A change committed on this node or another one.
    fn changed(&self, change: MemberChange);
    /// Changes may have been missed (the membership channel was down): re-read them.
    fn resync(&self);
}

/// The bus. Shared as `Arc<Bus>`.
pub struct Bus {
    shards: Box<[Shard]>,
    /// Where gap fills read missing events.
    history: Arc<dyn History>,
    /// The Redis bridge, when this node is part of a cluster.
    bridge: Option<Arc<Bridge>>,
    /// Told about membership changes (set once at start-up).
    members: OnceLock<Arc<dyn MembershipListener>>,
}

impl Bus {
    /// A bus whose gap fills read from `history`, bridged to the other nodes through `bridge`
    /// (whose tasks are started afterwards with [`bridge::Tasks::start`]).
    pub fn new(history: Arc<dyn History>, bridge: Option<Arc<Bridge>>) -> Arc<Self> {
        let shards = (0..SHARDS).map(|_| Shard::default()).collect();
        Arc::new(Bus { shards, history, bridge, members: OnceLock::new() })
    }

    /// Sets who is told about membership changes (once; later calls are ignored).
    pub fn set_membership_listener(&self, listener: Arc<dyn MembershipListener>) {
        let _ = self.members.set(listener);
    }

    /// A membership change committed by this node: told to every node (this one included).
    pub fn publish_membership(&self, change: MemberChange) {
        if let Some(b) = self.bridge() {
            b.membership(change);
        }
        self.membership_changed(change);
    }

    /// A membership change from another node (or this one).
    pub fn membership_changed(&self, change: MemberChange) {
        if let Some(l) = self.members.get() {
            l.changed(change);
        }
    }

    /// Membership changes may have been missed (the bridge was disconnected).
    pub fn membership_resync(&self) {
        if let Some(l) = self.members.get() {
            l.resync();
        }
    }

    /// The Redis bridge, if this node has one.
    pub fn bridge(&self) -> Option<&Bridge> {
        self.bridge.as_deref()
    }

    fn shard(&self, room: i64) -> &Shard {
        // Fixed hasher: stable across runs, cheap, spreads sequential ids.
        let mut h =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
        h.write_i64(room);
        &self.shards[(h.finish() as usize) % self.shards.len()]
    }

    /// Subscribes a connection to a room. `baseline` is the room's last seq as of the
    /// connection's membership look-up, if known: a room new to this node starts its order
    /// there, so a message committed after the look-up but lost on its way here is a gap to
    /// fill rather than the unseen start of the room.
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

    /// Subscribes a connection to a room it just joined at `seq`: its live events of the room
    /// are held while the room's events from `seq` on are read and replayed to it, so its
    /// stream of the room starts with the `join`, gapless, whatever this node delivered before.
    pub fn subscribe_from(self: &Arc<Self>, room: i64, sub: Subscriber, seq: i64) {
        let conn = sub.conn.clone();
        if conn.outbox.push(Out::Hold(room)).is_err() {
            return;
        }
        {
            let mut rooms = self.shard(room).lock();
            if let Some(st) = rooms.get_mut(&room) {
                st.leaving.remove(&sub.user_id);
            }
        }
        self.subscribe(room, sub, Some(seq - 1));
        tokio::spawn(join_replay(self.history.clone(), conn, room, seq - 1));
    }

    /// A member left `room` at `seq`: their connection `conn_id` stops receiving it after that
    /// event. Unsubscribed now if this node has delivered it already; else the room's order
    /// drops it right after the `leave` (or past it, if the `leave` never arrives).
    pub fn unsubscribe_after(&self, room: i64, conn_id: u64, user: i64, seq: i64) {
        let mut rooms = self.shard(room).lock();
        match rooms.get_mut(&room) {
            Some(st) if st.last_seq != UNKNOWN && st.last_seq < seq => {
                st.leaving.insert(user, seq);
            }
            _ => {
                drop(rooms);
                self.unsubscribe(room, conn_id);
            }
        }
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

    /// Delivers a room event committed by this node to the room's subscribers on every
    /// node. `leaving`: the member whose delivery of the room ends with it (a `leave`).
    pub fn publish_ordered(self: &Arc<Self>, room: i64, seq: i64, frame: Bytes, leaving: Option<i64>) {
        if let Some(b) = self.bridge() {
            b.message(room, seq, &frame, leaving);
        }
        self.sequence(room, seq, frame, leaving);
    }

    /// [`Bus::publish_ordered`] of a message (nobody leaves with it).
    pub fn publish_message(self: &Arc<Self>, room: i64, seq: i64, frame: Bytes) {
        self.publish_ordered(room, seq, frame, None);
    }
}

/// Replays a just-joined room to one connection from `after` (at most [`room::FILL_LIMIT`]
/// events): a member added to a busy room, or one of the thousand members of a new room,
/// never overflows its own queue.
async fn join_replay(history: Arc<dyn History>, conn: Arc<ConnState>, room: i64, after: i64) {
    if let replay::Replayed::Failed(e) =
        replay::replay_into(&*history, &conn, room, after, room::FILL_LIMIT, |_| {}).await
    {
        tracing::warn!(room, error = %e, "Join replay failed; live delivery goes on.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{ConnState, Out};

    fn bus() -> Arc<Bus> {
        Bus::new(Arc::new(NoHistory), None)
    }

    fn sub(bus: &Bus, room: i64, conn_id: u64, user_id: i64) -> Arc<ConnState> {
        let conn = Arc::new(ConnState::new(100));
        bus.subscribe(room, Subscriber { conn_id, user_id, conn: conn.clone() }, None);
        conn
    }

    fn seqs(conn: &ConnState) -> Vec<i64> {
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

    /// Every read fails (PostgreSQL unreachable).
    struct DownHistory;

    impl History for DownHistory {
        fn between(
            &self,
            _: i64,
            _: i64,
            _: i64,
            _: i64,
        ) -> futures_util::future::BoxFuture<'_, Result<Vec<crate::model::RoomEvent>, crate::error::StoreError>>
        {
            Box::pin(async { Err(crate::error::StoreError::Unavailable("down".into())) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_that_cannot_be_read_is_skipped_after_the_patience() {
        let bus = Bus::new(Arc::new(DownHistory), None);
        let a = sub(&bus, 3, 1, 10);
        bus.publish_message(3, 1, Bytes::from_static(b"m"));
        bus.publish_message(3, 3, Bytes::from_static(b"m"));
        assert_eq!(seqs(&a), vec![1], "3 waits for 2");
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        assert_eq!(seqs(&a), vec![3], "delivered once the fill gave up; 2 stays reachable by sync");
        bus.publish_message(3, 4, Bytes::from_static(b"m"));
        assert_eq!(seqs(&a), vec![4], "live again");
    }

    #[tokio::test(start_paused = true)]
    async fn parked_messages_are_bounded() {
        let bus = Bus::new(Arc::new(DownHistory), None);
        let _a = sub(&bus, 5, 1, 10);
        bus.publish_message(5, 1, Bytes::from_static(b"m"));
        for seq in 3..(room::MAX_PARKED as i64 + 100) {
            bus.publish_message(5, seq, Bytes::from_static(b"m"));
        }
        let rooms = bus.shard(5).lock();
        let st = rooms.get(&5).expect("room");
        assert_eq!(st.pending.len(), room::MAX_PARKED, "the rest is left to the fill");
        assert!(st.want >= room::MAX_PARKED as i64 + 99);
    }
}
