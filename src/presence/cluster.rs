//! Cluster-wide online state in Redis (README, "Cluster"): which users have a live connection on any
//! node, so `presence` events mean "first connection anywhere opened / last one closed", the
//! members endpoint's `online` is cluster-wide and notifications skip users online elsewhere.
//!
//! Keys, under the cluster prefix `P`:
//! - `P:presence:user:<id>` — SET of the nodes where the user is connected;
//! - `P:presence:node:<node>` — SET of the users connected to the node (to clean up after it);
//! - `P:presence:nodes` — ZSET node → expiry (ms); each node renews its entry every heartbeat.
//!
//! A node counts only while its entry has not expired, so a node that dies (`kill -9`, lost
//! host) stops counting within `cluster.node_ttl_ms`; the first live node to notice removes it
//! and announces `presence` offline for its users who are connected nowhere else. Each change
//! is one Lua script (atomic in Redis), so of two nodes connecting the same user at once
//! exactly one sees "first anywhere". While Redis is away, presence is node-local; when it
//! returns, the node registers its connected users again.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use super::Local;
use crate::redis_link::RedisLink;
use crate::telemetry::names;
use crate::util::clock;

/// Changes merged into one pipelined round trip.
const BATCH: usize = 512;
/// Changes waiting for the presence task.
const CHANGE_QUEUE: usize = 65_536;
/// Users per look-up script call.
const LOOKUP_CHUNK: usize = 500;
/// Deadline of one Redis round trip.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Counts the user's other live nodes and drops dead ones from the user's set, then adds or
/// removes this node. KEYS: user set, node set, nodes zset. ARGV: node, user, now ms, 1 = add.
const CHANGE_LUA: &str = r"
local others = 0
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if n ~= ARGV[1] then
    if tonumber(redis.call('ZSCORE', KEYS[3], n) or '0') > tonumber(ARGV[3]) then
      others = others + 1
    else
      redis.call('SREM', KEYS[1], n)
    end
  end
end
if ARGV[4] == '1' then
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[2])
else
  redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[2])
end
return others
";

/// 1 per user connected to a live node, else 0. KEYS: the users' sets, then the nodes zset.
/// ARGV: now ms.
const LOOKUP_LUA: &str = r"
local out = {}
local now = tonumber(ARGV[1])
for i = 1, #KEYS - 1 do
  out[i] = 0
  for _, n in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    if tonumber(redis.call('ZSCORE', KEYS[#KEYS], n) or '0') > now then
      out[i] = 1
      break
    end
  end
end
return out
";

/// A presence change of this node, queued for the presence task.
pub enum Change {
    /// The user's first local connection opened.
    Online {
        /// The user.
        user: i64,
        /// The user's rooms that get presence events.
        rooms: Vec<i64>,
    },
    /// The user's last local connection closed.
    Offline {
        /// The user.
        user: i64,
        /// The user's rooms that get presence events.
        rooms: Vec<i64>,
    },
    /// Shutting down: process what came before, then stop counting this node.
    Leave(oneshot::Sender<()>),
}

/// This node's side of the cluster presence.
pub struct ClusterPresence {
    link: Arc<RedisLink>,
    node: String,
    prefix: String,
    node_ttl: Duration,
    /// Bounded: past it a change is dropped and the node re-registers its users at the next
    /// heartbeat (the online state heals; that change's `presence` event is not sent).
    tx: mpsc::Sender<Change>,
    /// A change was dropped: re-register at the next heartbeat.
    dropped: AtomicBool,
    /// Whether the last Redis call worked (else answers are node-local).
    up: AtomicBool,
    /// [`CHANGE_LUA`] and [`LOOKUP_LUA`], hashed once.
    change_script: redis::Script,
    lookup_script: redis::Script,
}

impl ClusterPresence {
    /// A handle and the receiver that [`run`] consumes.
    pub fn new(
        link: Arc<RedisLink>,
        node: String,
        prefix: &str,
        node_ttl: Duration,
    ) -> (Arc<Self>, mpsc::Receiver<Change>) {
        let (tx, rx) = mpsc::channel(CHANGE_QUEUE);
        let me = Self {
            link,
            node,
            prefix: format!("{prefix}:presence"),
            node_ttl,
            tx,
            dropped: AtomicBool::new(false),
            up: AtomicBool::new(false),
            change_script: redis::Script::new(CHANGE_LUA),
            lookup_script: redis::Script::new(LOOKUP_LUA),
        };
        (Arc::new(me), rx)
    }

    /// Queues a change (non-blocking; called from connection set-up and teardown).
    pub fn change(&self, change: Change) {
        if self.tx.try_send(change).is_err() {
            self.dropped.store(true, Ordering::Relaxed);
        }
    }

    /// Stops counting this node after the queued changes (graceful shutdown), within a bound.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        let _ = tokio::time::timeout(CALL_TIMEOUT * 2, async {
            if self.tx.send(Change::Leave(tx)).await.is_ok() {
                let _ = rx.await;
            }
        })
        .await;
    }

    fn user_key(&self, user: i64) -> String {
        format!("{}:user:{user}", self.prefix)
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    fn mark(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("Cluster presence connected to Redis.");
            } else {
                tracing::warn!("Cluster presence cannot reach Redis; online state is node-local until it returns.");
            }
        }
    }

    async fn conn(&self) -> Option<ConnectionManager> {
        tokio::time::timeout(CALL_TIMEOUT, self.link.conn()).await.ok()?.ok()
    }

    /// Which of `users` are connected to another live node (this node's own are not asked
    /// here); `None` when Redis cannot answer.
    pub async fn online_elsewhere(&self, users: &[i64]) -> Option<HashSet<i64>> {
        let mut conn = self.conn().await?;
        let mut online = HashSet::new();
        for chunk in users.chunks(LOOKUP_CHUNK) {
            let mut inv = self.lookup_script.prepare_invoke();
            for &u in chunk {
                inv.key(self.user_key(u));
            }
            inv.key(self.nodes_key()).arg(now_ms());
            let flags: Vec<i64> = match tokio::time::timeout(CALL_TIMEOUT, inv.invoke_async(&mut conn)).await {
                Ok(Ok(f)) => f,
                _ => {
                    metrics::counter!(names::PRESENCE_REDIS_ERRORS_TOTAL).increment(1);
                    self.mark(false);
                    return None;
                }
            };
            online.extend(chunk.iter().zip(flags).filter(|(_, f)| *f == 1).map(|(u, _)| *u));
        }
        Some(online)
    }
}

fn now_ms() -> i64 {
    clock::now_ms() as i64
}

/// The presence task: applies this node's changes in order, announces the ones that are
/// cluster-wide, renews the node's entry and cleans up after dead nodes.
pub async fn run(
    cp: Arc<ClusterPresence>,
    local: Arc<Local>,
    mut rx: mpsc::Receiver<Change>,
    heartbeat: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Register the node's users on the first heartbeat that reaches Redis, and after outages.
    let mut registered = false;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    return;
                }
                let mut changes = Vec::with_capacity(batch.len());
                for c in batch.drain(..) {
                    match c {
                        // What came before a Leave is applied before it.
                        Change::Leave(done) => {
                            apply(&cp, &local, std::mem::take(&mut changes)).await;
                            leave(&cp).await;
                            let _ = done.send(());
                        }
                        c => changes.push(c),
                    }
                }
                apply(&cp, &local, changes).await;
            }
            _ = beat.tick() => {
                let re_register = cp.dropped.swap(false, Ordering::Relaxed);
                registered = renew(&cp, &local, registered && !re_register).await;
            }
            _ = stop.cancelled() => return,
        }
    }
}

/// Applies changes in one pipeline and announces those that are first/last anywhere. Without
/// Redis every change counts as cluster-wide (node-local presence).
async fn apply(cp: &ClusterPresence, local: &Local, changes: Vec<Change>) {
    if changes.is_empty() {
        return;
    }
    let others: Option<Vec<i64>> = async {
        let mut conn = cp.conn().await?;
        let mut pipe = redis::pipe();
        // Loaded in the same pipeline, so EVALSHA never meets NOSCRIPT (a restarted Redis).
        pipe.cmd("SCRIPT").arg("LOAD").arg(CHANGE_LUA).ignore();
        let now = now_ms();
        for c in &changes {
            let (user, add) = match c {
                Change::Online { user, .. } => (*user, 1),
                Change::Offline { user, .. } => (*user, 0),
                Change::Leave(_) => continue,
            };
            pipe.cmd("EVALSHA")
                .arg(cp.change_script.get_hash())
                .arg(3)
                .arg(cp.user_key(user))
                .arg(cp.node_key(&cp.node))
                .arg(cp.nodes_key())
                .arg(&cp.node)
                .arg(user)
                .arg(now)
                .arg(add);
        }
        tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<Vec<i64>>(&mut conn)).await.ok()?.ok()
    }
    .await;
    match &others {
        Some(_) => cp.mark(true),
        None => {
            metrics::counter!(names::PRESENCE_REDIS_ERRORS_TOTAL).increment(1);
            cp.mark(false);
        }
    }
    let mut others = others.unwrap_or_default().into_iter();
    for c in changes {
        let (user, rooms, online) = match c {
            Change::Online { user, rooms } => (user, rooms, true),
            Change::Offline { user, rooms } => (user, rooms, false),
            Change::Leave(_) => continue,
        };
        let elsewhere = others.next().unwrap_or(0);
        // Between the change and now the user may have come back (or gone): announce only
        // what is still true on this node.
        if elsewhere == 0 && local.connections.is_online(user) == online {
            local.announce(user, &rooms, online);
        }
    }
}

/// The heartbeat: renews this node's entry (first registering its users if they are not
/// registered), then cleans up after expired nodes. Returns whether the users are registered.
async fn renew(cp: &ClusterPresence, local: &Local, registered: bool) -> bool {
    let Some(mut conn) = cp.conn().await else {
        cp.mark(false);
        return false;
    };
    let expires = now_ms() + cp.node_ttl.as_millis() as i64;
    let mut pipe = redis::pipe();
    if !registered {
        // Redis may have restarted empty, or dropped this node as dead during an outage.
        let node_key = cp.node_key(&cp.node);
        let users = local.connections.online_users();
        pipe.atomic().del(&node_key).ignore();
        for chunk in users.chunks(1000) {
            pipe.sadd(&node_key, chunk).ignore();
        }
        for &u in &users {
            pipe.sadd(cp.user_key(u), &cp.node).ignore();
        }
    }
    pipe.zadd(cp.nodes_key(), &cp.node, expires).ignore();
    if !matches!(tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<()>(&mut conn)).await, Ok(Ok(()))) {
        metrics::counter!(names::PRESENCE_REDIS_ERRORS_TOTAL).increment(1);
        cp.mark(false);
        return false;
    }
    cp.mark(true);
    reap(cp, local, &mut conn).await;
    true
}

/// Removes expired nodes; the node whose ZREM wins announces their users offline where they
/// are connected nowhere else.
async fn reap(cp: &ClusterPresence, local: &Local, conn: &mut ConnectionManager) {
    let now = now_ms();
    let dead: Vec<String> = match tokio::time::timeout(
        CALL_TIMEOUT,
        redis::cmd("ZRANGEBYSCORE")
            .arg(cp.nodes_key())
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(16)
            .query_async(conn),
    )
    .await
    {
        Ok(Ok(d)) => d,
        _ => return,
    };
    for node in dead.into_iter().filter(|n| *n != cp.node) {
        let won: i64 = match redis::cmd("ZREM").arg(cp.nodes_key()).arg(&node).query_async(conn).await {
            Ok(n) => n,
            Err(_) => return,
        };
        if won != 1 {
            continue;
        }
        let node_key = cp.node_key(&node);
        let users: Vec<i64> = match redis::cmd("SMEMBERS").arg(&node_key).query_async(conn).await {
            Ok(u) => u,
            Err(e) => {
                // Never read a failure as "no users": the dead node's users would stay online
                // for ever. Put it back as expired; the next heartbeat (here or elsewhere)
                // reaps it again.
                tracing::warn!(node = %node, error = %e, "Cannot read an expired node's users; retrying later.");
                metrics::counter!(names::PRESENCE_REDIS_ERRORS_TOTAL).increment(1);
                let _ = redis::cmd("ZADD").arg(cp.nodes_key()).arg(0).arg(&node).query_async::<()>(conn).await;
                return;
            }
        };
        let mut gone = Vec::new();
        for &u in &users {
            let mut inv = cp.change_script.prepare_invoke();
            inv.key(cp.user_key(u)).key(&node_key).key(cp.nodes_key()).arg(&node).arg(u).arg(now).arg(0);
            if let Ok(0) = inv.invoke_async::<i64>(conn).await {
                if !local.connections.is_online(u) {
                    gone.push(u);
                }
            }
        }
        let _ = redis::cmd("DEL").arg(&node_key).query_async::<()>(conn).await;
        tracing::warn!(node = %node, users = users.len(), offline = gone.len(), "Removed an expired cluster node.");
        metrics::counter!(names::PRESENCE_NODES_REAPED_TOTAL).increment(1);
        if gone.is_empty() {
            continue;
        }
        // Their rooms small enough for presence events, as at connect time.
        let max = local.max_room_members;
        if let Ok(rooms) = local.store.memberships(&gone).await {
            for (user, ms) in rooms {
                let small: Vec<i64> = ms.iter().filter(|m| m.member_count <= max).map(|m| m.room_id).collect();
                local.announce(user, &small, false);
            }
        }
    }
}

/// Graceful stop: this node's entry expires now, so its users count as offline at once and
/// the next live node's heartbeat announces those who are connected nowhere else.
async fn leave(cp: &ClusterPresence) {
    if let Some(mut conn) = cp.conn().await {
        let _ = tokio::time::timeout(
            CALL_TIMEOUT,
            redis::cmd("ZADD").arg(cp.nodes_key()).arg(0).arg(&cp.node).query_async::<()>(&mut conn),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_change_queue_re_registers_instead_of_growing() {
        let link = Arc::new(RedisLink::new("redis://127.0.0.1:1").unwrap());
        let (cp, _rx) = ClusterPresence::new(link, "n1".into(), "p", Duration::from_secs(5));
        for user in 0..CHANGE_QUEUE as i64 {
            cp.change(Change::Online { user, rooms: vec![] });
        }
        assert!(!cp.dropped.load(Ordering::Relaxed));
        cp.change(Change::Offline { user: 1, rooms: vec![] });
        assert!(cp.dropped.load(Ordering::Relaxed), "the next heartbeat re-registers the node's users");
    }
}
