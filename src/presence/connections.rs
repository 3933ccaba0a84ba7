//! This node's live connections by user: the connections-per-user limit, who is online here,
//! typing throttles, and moving live connections in and out of rooms when memberships change.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::bus::{Bus, Subscriber};
use crate::conn::{ConnState, Out};
use crate::model::Membership;
use crate::telemetry::names;
use crate::util::lock;

const SHARDS: usize = 16;

/// One live connection.
pub struct ConnHandle {
    /// Process-unique id.
    pub id: u64,
    /// Authenticated user.
    pub user_id: i64,
    /// Outbox and activity.
    pub conn: Arc<ConnState>,
    /// Rooms this connection receives (the user's memberships).
    rooms: Mutex<HashSet<i64>>,
    /// Rooms the user left whose `leave` this node has not delivered yet: still subscribed on
    /// the bus until it is (unsubscribed here too if the connection closes first).
    leaving: Mutex<HashSet<i64>>,
}

impl ConnHandle {
    /// Whether the connection's user is a member of `room`.
    pub fn in_room(&self, room: i64) -> bool {
        lock(&self.rooms).contains(&room)
    }

    /// The connection's rooms.
    pub fn rooms(&self) -> Vec<i64> {
        lock(&self.rooms).iter().copied().collect()
    }

    fn subscriber(&self) -> Subscriber {
        Subscriber { conn_id: self.id, user_id: self.user_id, conn: self.conn.clone() }
    }

    /// Starts receiving `room` (if not already): the stream order forgets what it carried of
    /// the room before, and the bus subscribes the connection from `baseline`.
    fn enter(&self, room: i64, baseline: Option<i64>, bus: &Bus) {
        if lock(&self.rooms).insert(room) {
            self.forget_leave(room, bus);
            let _ = self.conn.outbox.push(Out::Reset(room));
            bus.subscribe(room, self.subscriber(), baseline);
        }
    }

    /// Starts receiving `room`, which the user joined at `seq` (if not already): the stream
    /// starts with the `join` event, replayed along with whatever followed it.
    fn enter_at(&self, room: i64, seq: i64, bus: &Arc<Bus>) {
        if lock(&self.rooms).insert(room) {
            self.forget_leave(room, bus);
            let _ = self.conn.outbox.push(Out::Reset(room));
            bus.subscribe_from(room, self.subscriber(), seq);
        }
    }

    /// Joined `room` again before this node delivered the `leave`: drop the old subscription,
    /// a new one follows.
    fn forget_leave(&self, room: i64, bus: &Bus) {
        if lock(&self.leaving).remove(&room) {
            bus.unsubscribe(room, self.id);
        }
    }

    /// Stops receiving `room` (if it did).
    fn exit(&self, room: i64, bus: &Bus) {
        if lock(&self.rooms).remove(&room) {
            bus.unsubscribe(room, self.id);
            let _ = self.conn.outbox.push(Out::Reset(room));
        }
    }
}

#[derive(Default)]
struct UserEntry {
    conns: Vec<Arc<ConnHandle>>,
    /// Per room: when the last throttled event was relayed, and whether it was a `start` that
    /// no `stop` has followed yet.
    typing: HashMap<i64, (Instant, bool)>,
}

/// The connection would exceed `limits.connections_per_user`.
#[derive(Debug)]
pub struct TooManyConnections;

/// All live connections of this node.
pub struct Connections {
    shards: Box<[Mutex<HashMap<i64, UserEntry>>]>,
    next_id: AtomicU64,
    /// Bumped by every membership change applied here: a connection whose rooms were looked up
    /// before a change it could not see yet (it was not registered) re-checks them.
    membership_changes: AtomicU64,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(1),
            membership_changes: AtomicU64::new(0),
        }
    }
}

impl Connections {
    fn shard(&self, user: i64) -> MutexGuard<'_, HashMap<i64, UserEntry>> {
        lock(&self.shards[(user.unsigned_abs() as usize) % SHARDS])
    }

    /// Registers a connection with its rooms and subscribes it on the bus. Returns the handle
    /// and whether it is the user's first connection (presence goes online).
    pub fn register(
        &self,
        user_id: i64,
        rooms: &[Membership],
        conn: Arc<ConnState>,
        limit: usize,
        bus: &Bus,
    ) -> Result<(Arc<ConnHandle>, bool), TooManyConnections> {
        let handle = Arc::new(ConnHandle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            user_id,
            conn,
            rooms: Mutex::new(rooms.iter().map(|m| m.room_id).collect()),
            leaving: Mutex::new(HashSet::new()),
        });
        let first = {
            let mut shard = self.shard(user_id);
            let entry = shard.entry(user_id).or_default();
            if entry.conns.len() >= limit {
                if entry.conns.is_empty() {
                    shard.remove(&user_id);
                }
                return Err(TooManyConnections);
            }
            entry.conns.push(handle.clone());
            entry.conns.len() == 1
        };
        for m in rooms {
            bus.subscribe(m.room_id, handle.subscriber(), Some(m.last_seq));
        }
        metrics::gauge!(names::WS_CONNECTIONS).increment(1.0);
        Ok((handle, first))
    }

    /// Removes a connection; returns whether it was the user's last (presence goes offline).
    pub fn unregister(&self, handle: &ConnHandle, bus: &Bus) -> bool {
        let leaving: Vec<i64> = lock(&handle.leaving).drain().collect();
        for room in handle.rooms().into_iter().chain(leaving) {
            bus.unsubscribe(room, handle.id);
        }
        let mut shard = self.shard(handle.user_id);
        let Some(entry) = shard.get_mut(&handle.user_id) else { return false };
        let before = entry.conns.len();
        entry.conns.retain(|c| c.id != handle.id);
        if entry.conns.len() == before {
            return false;
        }
        metrics::gauge!(names::WS_CONNECTIONS).decrement(1.0);
        if entry.conns.is_empty() {
            shard.remove(&handle.user_id);
            return true;
        }
        false
    }

    /// Users with a live connection on this node.
    pub fn online_users(&self) -> Vec<i64> {
        self.shards.iter().flat_map(|s| lock(s).keys().copied().collect::<Vec<_>>()).collect()
    }

    /// Whether the user has a live connection on this node.
    pub fn is_online(&self, user_id: i64) -> bool {
        self.shard(user_id).get(&user_id).is_some_and(|e| !e.conns.is_empty())
    }

    /// Counts membership changes applied on this node (see [`Connections::reconcile`]).
    pub fn membership_epoch(&self) -> u64 {
        self.membership_changes.load(Ordering::SeqCst)
    }

    /// Brings a connection registered with rooms looked up earlier in line with `fresh` (looked
    /// up again after a membership change raced its registration): rooms left meanwhile stop,
    /// rooms joined meanwhile start.
    pub fn reconcile(&self, handle: &ConnHandle, fresh: &[Membership], bus: &Bus) {
        let now: HashSet<i64> = fresh.iter().map(|m| m.room_id).collect();
        for room in handle.rooms().into_iter().filter(|r| !now.contains(r)) {
            handle.exit(room, bus);
        }
        for m in fresh {
            handle.enter(m.room_id, Some(m.last_seq), bus);
        }
    }

    /// The user's live connections on this node.
    fn conns_of(&self, user_id: i64) -> Vec<Arc<ConnHandle>> {
        self.shard(user_id).get(&user_id).map(|e| e.conns.clone()).unwrap_or_default()
    }

    /// The user joined `room` with the `member` event at `seq`: their live connections start
    /// receiving the room from that event on.
    pub fn joined(&self, user_id: i64, room: i64, seq: i64, bus: &Arc<Bus>) {
        self.membership_changes.fetch_add(1, Ordering::SeqCst);
        for c in self.conns_of(user_id) {
            c.enter_at(room, seq, bus);
        }
    }

    /// The user left `room` with the `member` event at `seq`: their live connections stop
    /// receiving the room after that event (the bus drops them right after delivering it).
    pub fn left(&self, user_id: i64, room: i64, seq: i64, bus: &Bus) {
        self.membership_changes.fetch_add(1, Ordering::SeqCst);
        for c in self.conns_of(user_id) {
            if lock(&c.rooms).remove(&room) {
                lock(&c.leaving).insert(room);
                bus.unsubscribe_after(room, c.id, user_id, seq);
            }
        }
    }

    /// Brings every live connection of `user_id` in line with `fresh` memberships (after
    /// membership changes may have been missed).
    pub fn reconcile_user(&self, user_id: i64, fresh: &[Membership], bus: &Bus) {
        for c in self.conns_of(user_id) {
            self.reconcile(&c, fresh, bus);
        }
    }

    /// Typing throttle per user and room (`limits.typing_per_sec`): true if this event may be
    /// relayed. A `stop` that ends a relayed `start` always is, at no cost (else the others'
    /// indicator would stay on until it times out); other events share the rate.
    pub fn allow_typing(&self, user_id: i64, room: i64, per_sec: u32, start: bool) -> bool {
        let gap = Duration::from_secs(1) / per_sec.max(1);
        let now = Instant::now();
        let mut shard = self.shard(user_id);
        let Some(entry) = shard.get_mut(&user_id) else { return false };
        match entry.typing.get_mut(&room) {
            Some((_, typing)) if !start && *typing => {
                *typing = false;
                true
            }
            Some((last, _)) if now.duration_since(*last) < gap => false,
            _ => {
                entry.typing.insert(room, (now, start));
                true
            }
        }
    }
}
