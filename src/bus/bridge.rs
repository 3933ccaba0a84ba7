//! The Redis pub/sub bridge between the nodes' buses (README, "Cluster").
//!
//! Each room is one channel, `<prefix>:room:<id>`. A node subscribes to a room's channel when
//! the room gets its first local subscriber and unsubscribes when the last one leaves, so
//! Redis only sends a node the rooms it serves. Everything this node's bus publishes (committed
//! messages, typing, presence, receipts) is also published on the room's channel as an
//! [`envelope`](super::envelope) of already-encoded frames; envelopes carry the origin node id
//! and a node drops its own.
//!
//! Pub/sub is at-most-once, and the bus's per-room sequencer makes delivery gapless anyway: a
//! message that arrives past a missing seq waits while the gap is read from PostgreSQL. Two
//! holes remain that a later message would not reveal, and both are closed here:
//! - the subscriber connection was lost (Redis restarted, network): after re-subscribing, every
//!   local room catches up from PostgreSQL;
//! - this node could not publish (Redis down, queue full): the rooms and their highest seq are
//!   remembered and, once Redis answers again, published as catch-up hints that make the other
//!   nodes read those messages from PostgreSQL.
//!
//! Without Redis every node keeps serving its own connections (node-local delivery); the bridge
//! reconnects by itself and the cluster heals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::envelope::{self, Envelope};
use super::{Bus, MemberChange};
use crate::redis_link::RedisLink;
use crate::telemetry::names;
use crate::util::{lock, Backoff};

/// Envelopes waiting for the publisher; past it, messages become catch-up hints and events
/// are dropped (they are unordered and never stored).
const PUBLISH_QUEUE: usize = 65_536;
/// Most queued items merged into one pipelined round trip.
const PUBLISH_BATCH: usize = 1024;
/// Subscription changes waiting for the subscriber; past it the subscriber rebuilds every
/// room's subscription from a snapshot (at its next ping).
const SUBSCRIBE_QUEUE: usize = 65_536;
/// Channels per SUBSCRIBE when re-subscribing every local room.
const SUBSCRIBE_CHUNK: usize = 512;
/// Liveness check of the subscriber connection (a half-open socket never ends the stream).
const PING_EVERY: Duration = Duration::from_secs(5);
/// Deadline of one Redis call.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Something to publish.
enum Outgoing {
    Message { room: i64, seq: i64, frame: Bytes, leaving: Option<i64> },
    Event { room: i64, except_user: Option<i64>, frame: Bytes },
    Membership(MemberChange),
}

enum SubCmd {
    Subscribe(i64),
    Unsubscribe(i64),
}

/// The bus's handle on the bridge. Every method is non-blocking (called under shard locks).
pub struct Bridge {
    node: String,
    /// `<prefix>:room:`
    channel_prefix: String,
    /// `<prefix>:members`: every membership change, for every node.
    members_channel: String,
    /// A membership change could not be published: the other nodes are asked to re-sync.
    members_missed: AtomicBool,
    out: mpsc::Sender<Outgoing>,
    /// Bounded: past it, the subscription is rebuilt from the bus's rooms (`resubscribe`).
    subs: mpsc::Sender<SubCmd>,
    /// A subscribe command was dropped: the subscriber reconnects and subscribes to a snapshot.
    resubscribe: AtomicBool,
    /// Rooms whose committed messages could not be published → highest such seq.
    missed: Mutex<HashMap<i64, i64>>,
    /// Whether the subscriber connection is up (a drop starts a new outage's warning).
    connected: AtomicBool,
    /// Whether it ever was (a reconnect re-reads memberships).
    was_connected: AtomicBool,
}

impl Bridge {
    /// The bridge handle for [`Bus::new`] and its tasks, started once the bus exists. `prefix`
    /// namespaces the channels (every node of a cluster uses the same one).
    pub fn new(node: String, prefix: &str) -> (Arc<Bridge>, Tasks) {
        let (out, out_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (subs, subs_rx) = mpsc::channel(SUBSCRIBE_QUEUE);
        let bridge = Arc::new(Bridge {
            node,
            channel_prefix: format!("{prefix}:room:"),
            members_channel: format!("{prefix}:members"),
            members_missed: AtomicBool::new(false),
            out,
            subs,
            resubscribe: AtomicBool::new(false),
            missed: Mutex::new(HashMap::new()),
            connected: AtomicBool::new(false),
            was_connected: AtomicBool::new(false),
        });
        metrics::gauge!(names::BUS_BRIDGE_CONNECTED).set(0.0);
        (bridge.clone(), Tasks { bridge, out_rx, subs_rx })
    }

    fn channel(&self, room: i64) -> String {
        format!("{}{room}", self.channel_prefix)
    }

    pub(super) fn subscribe(&self, room: i64) {
        self.command(SubCmd::Subscribe(room));
    }

    pub(super) fn unsubscribe(&self, room: i64) {
        self.command(SubCmd::Unsubscribe(room));
    }

    fn command(&self, cmd: SubCmd) {
        if self.subs.try_send(cmd).is_err() {
            self.resubscribe.store(true, Ordering::Relaxed);
        }
    }

    pub(super) fn message(&self, room: i64, seq: i64, frame: &Bytes, leaving: Option<i64>) {
        if self.out.try_send(Outgoing::Message { room, seq, frame: frame.clone(), leaving }).is_err() {
            self.miss(room, seq);
        }
    }

    pub(super) fn membership(&self, change: MemberChange) {
        if self.out.try_send(Outgoing::Membership(change)).is_err() {
            self.members_missed.store(true, Ordering::Relaxed);
        }
    }

    pub(super) fn event(&self, room: i64, except_user: Option<i64>, frame: &Bytes) {
        if self.out.try_send(Outgoing::Event { room, except_user, frame: frame.clone() }).is_err() {
            metrics::counter!(names::BUS_BRIDGE_DROPPED_TOTAL).increment(1);
        }
    }

    fn miss(&self, room: i64, seq: i64) {
        let mut missed = lock(&self.missed);
        let e = missed.entry(room).or_insert(seq);
        *e = (*e).max(seq);
    }

    fn take_missed(&self) -> HashMap<i64, i64> {
        std::mem::take(&mut *lock(&self.missed))
    }
}

/// The bridge's publisher and subscriber, not yet running.
pub struct Tasks {
    bridge: Arc<Bridge>,
    out_rx: mpsc::Receiver<Outgoing>,
    subs_rx: mpsc::Receiver<SubCmd>,
}

impl Tasks {
    /// Starts publishing this node's events and delivering the other nodes' into `bus`, until
    /// `stop`.
    pub fn start(self, bus: Arc<Bus>, link: Arc<RedisLink>, stop: CancellationToken) {
        tokio::spawn(publisher(self.bridge.clone(), link.clone(), self.out_rx, stop.clone()));
        tokio::spawn(subscriber(self.bridge, bus, link, self.subs_rx, stop));
    }
}

// === impl publisher ===

/// Drains the queue into pipelined PUBLISHes: consecutive messages of a room become one
/// envelope, so a group commit of many rows costs one PUBLISH per room.
async fn publisher(
    bridge: Arc<Bridge>,
    link: Arc<RedisLink>,
    mut rx: mpsc::Receiver<Outgoing>,
    stop: CancellationToken,
) {
    let mut conn: Option<ConnectionManager> = None;
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, PUBLISH_BATCH) => if n == 0 { return },
            // Catch-up hints wait for Redis even when no new traffic comes.
            _ = retry.tick() => {}
            _ = stop.cancelled() => return,
        }
        let missed = bridge.take_missed();
        let members_missed = bridge.members_missed.swap(false, Ordering::Relaxed);
        if batch.is_empty() && missed.is_empty() && !members_missed {
            continue;
        }
        let mut pipe = redis::pipe();
        // (room, seq) of every message in this round trip: catch-up hints if it fails.
        let mut seqs: Vec<(i64, i64)> = Vec::with_capacity(batch.len() + missed.len());
        let mut events = 0u64;
        for (&room, &seq) in &missed {
            pipe.cmd("PUBLISH").arg(bridge.channel(room)).arg(envelope::catch_up(&bridge.node, seq).as_ref()).ignore();
            seqs.push((room, seq));
        }
        let mut lost_members = members_missed;
        if members_missed {
            pipe.cmd("PUBLISH").arg(&bridge.members_channel).arg(envelope::resync(&bridge.node).as_ref()).ignore();
        }
        let mut rest = &batch[..];
        while !rest.is_empty() {
            let n = bridge.add_to_pipe(&mut pipe, rest, &mut seqs);
            events += rest[..n].iter().filter(|o| matches!(o, Outgoing::Event { .. })).count() as u64;
            lost_members |= rest[..n].iter().any(|o| matches!(o, Outgoing::Membership(_)));
            rest = &rest[n..];
        }
        batch.clear();
        if conn.is_none() {
            conn = tokio::time::timeout(CALL_TIMEOUT, link.dedicated()).await.ok().and_then(Result::ok);
        }
        let sent = match conn.as_mut() {
            Some(c) => matches!(tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<()>(c)).await, Ok(Ok(()))),
            None => false,
        };
        if sent {
            metrics::counter!(names::BUS_BRIDGE_PUBLISHED_TOTAL).increment(pipe.cmd_iter().count() as u64);
            continue;
        }
        // Not published: the messages become catch-up hints for when Redis answers again.
        metrics::counter!(names::BUS_BRIDGE_PUBLISH_ERRORS_TOTAL).increment(1);
        metrics::counter!(names::BUS_BRIDGE_DROPPED_TOTAL).increment(events);
        for (room, seq) in seqs {
            bridge.miss(room, seq);
        }
        if lost_members {
            bridge.members_missed.store(true, Ordering::Relaxed);
        }
        if conn.take().is_some() {
            tracing::warn!("Redis publish failed; delivering node-locally until Redis answers.");
        }
    }
}

impl Bridge {
    /// Adds the first items of `rest` to the pipeline (consecutive messages of one room become
    /// one envelope) and returns how many it took. Seqs of messages go to `seqs`.
    fn add_to_pipe(&self, pipe: &mut redis::Pipeline, rest: &[Outgoing], seqs: &mut Vec<(i64, i64)>) -> usize {
        match &rest[0] {
            Outgoing::Message { room, seq, frame, leaving: Some(user) } => {
                let env = envelope::leave(&self.node, *seq, *user, frame);
                pipe.cmd("PUBLISH").arg(self.channel(*room)).arg(env.as_ref()).ignore();
                seqs.push((*room, *seq));
                1
            }
            Outgoing::Message { room, .. } => {
                let room = *room;
                let len = rest
                    .iter()
                    .position(|o| !matches!(o, Outgoing::Message { room: r, leaving: None, .. } if *r == room))
                    .unwrap_or(rest.len());
                let run = rest[..len].iter().filter_map(|o| match o {
                    Outgoing::Message { seq, frame, .. } => Some((*seq, frame)),
                    _ => None,
                });
                seqs.extend(run.clone().map(|(seq, _)| (room, seq)));
                let env = envelope::messages(&self.node, run);
                pipe.cmd("PUBLISH").arg(self.channel(room)).arg(env.as_ref()).ignore();
                len
            }
            Outgoing::Event { room, except_user, frame } => {
                let env = envelope::event(&self.node, *except_user, frame);
                pipe.cmd("PUBLISH").arg(self.channel(*room)).arg(env.as_ref()).ignore();
                1
            }
            Outgoing::Membership(change) => {
                let env = envelope::member(&self.node, *change);
                pipe.cmd("PUBLISH").arg(&self.members_channel).arg(env.as_ref()).ignore();
                1
            }
        }
    }
}

// === impl subscriber ===

/// Keeps a subscriber connection up (reconnecting with backoff) until `stop`.
async fn subscriber(
    bridge: Arc<Bridge>,
    bus: Arc<Bus>,
    link: Arc<RedisLink>,
    mut cmds: mpsc::Receiver<SubCmd>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
    // Warn once per outage (and once if Redis is unreachable from the start).
    let mut warned = false;
    loop {
        let result: Result<(), BridgeDown> = tokio::select! {
            r = session(&bridge, &bus, &link, &mut cmds, &stop) => r,
            _ = stop.cancelled() => Ok(()),
        };
        let Err(BridgeDown(why)) = result else { return };
        if bridge.connected.swap(false, Ordering::Relaxed) {
            // A new outage: warn again, retry fast first.
            warned = false;
            backoff.reset();
        }
        metrics::gauge!(names::BUS_BRIDGE_CONNECTED).set(0.0);
        if !warned {
            warned = true;
            tracing::warn!(reason = %why, "Redis bridge down; delivering node-locally until Redis returns.");
        }
        tokio::select! {
            _ = backoff.wait() => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One subscriber connection: subscribe to every local room, catch them up, then follow
/// subscription changes and deliver the other nodes' envelopes until the link fails.
async fn session(
    bridge: &Bridge,
    bus: &Arc<Bus>,
    link: &RedisLink,
    cmds: &mut mpsc::Receiver<SubCmd>,
    stop: &CancellationToken,
) -> Result<(), BridgeDown> {
    let pubsub = link.pubsub().await?;
    let (mut sink, mut stream) = pubsub.split();
    // Commands queued while disconnected (or dropped past the queue's bound) are superseded
    // by the snapshot below.
    while cmds.try_recv().is_ok() {}
    bridge.resubscribe.store(false, Ordering::Relaxed);
    call(sink.subscribe(&bridge.members_channel)).await?;
    let rooms = bus.local_rooms();
    for chunk in rooms.chunks(SUBSCRIBE_CHUNK) {
        let channels: Vec<String> = chunk.iter().map(|r| bridge.channel(*r)).collect();
        call(sink.subscribe(channels)).await?;
    }
    bridge.connected.store(true, Ordering::Relaxed);
    metrics::gauge!(names::BUS_BRIDGE_CONNECTED).set(1.0);
    metrics::counter!(names::BUS_BRIDGE_CONNECTS_TOTAL).increment(1);
    tracing::info!(rooms = rooms.len(), "Redis bridge connected.");
    // Whatever other nodes published while we were not subscribed.
    for room in rooms {
        bus.catch_up(room, None);
    }
    // Membership changes made meanwhile: re-read (nothing to do on the first connect).
    if bridge.was_connected.swap(true, Ordering::Relaxed) {
        bus.membership_resync();
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(SubCmd::Subscribe(room)) => {
                    call(sink.subscribe(bridge.channel(room))).await?;
                    // A message another node committed between the subscriber's membership
                    // look-up (the room's baseline) and this SUBSCRIBE came to no one here; no
                    // later message may come to reveal the gap.
                    bus.catch_up(room, None);
                }
                Some(SubCmd::Unsubscribe(room)) => call(sink.unsubscribe(bridge.channel(room))).await?,
                None => return Ok(()),
            },
            msg = stream.next() => match msg {
                Some(msg) => receive(bridge, bus, &msg),
                None => return Err(BridgeDown("connection closed".into())),
            },
            _ = ping.tick() => {
                if bridge.resubscribe.load(Ordering::Relaxed) {
                    return Err(BridgeDown("subscription commands overflowed; resubscribing".into()));
                }
                call(sink.ping::<redis::Value>()).await.map(|_| ())?
            }
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

/// The subscriber connection failed.
struct BridgeDown(String);

impl From<crate::redis_link::RedisDown> for BridgeDown {
    fn from(e: crate::redis_link::RedisDown) -> Self {
        BridgeDown(e.to_string())
    }
}

async fn call<T>(f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, BridgeDown> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BridgeDown(format!("command failed: {e}"))),
        Err(_) => Err(BridgeDown("command timed out".into())),
    }
}

/// Delivers one envelope from another node to the local subscribers.
fn receive(bridge: &Bridge, bus: &Arc<Bus>, msg: &redis::Msg) {
    let channel = msg.get_channel_name();
    let room = match channel.strip_prefix(&bridge.channel_prefix).and_then(|r| r.parse::<i64>().ok()) {
        Some(room) => room,
        None if channel == bridge.members_channel => 0,
        None => return,
    };
    let (origin, env) = match envelope::decode(Bytes::copy_from_slice(msg.get_payload_bytes())) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(room, error = %e, "Dropped an envelope from Redis.");
            return;
        }
    };
    if origin == bridge.node.as_bytes() {
        return;
    }
    metrics::counter!(names::BUS_BRIDGE_RECEIVED_TOTAL).increment(1);
    match env {
        Envelope::Messages(msgs) => {
            for (seq, frame) in msgs {
                bus.sequence(room, seq, frame, None);
            }
        }
        Envelope::Leave { seq, user, frame } => bus.sequence(room, seq, frame, Some(user)),
        Envelope::Event { except_user, frame } => bus.deliver_event(room, frame, except_user),
        Envelope::CatchUp(seq) => bus.catch_up(room, Some(seq)),
        Envelope::Member(change) => bus.membership_changed(change),
        Envelope::Resync => bus.membership_resync(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Consecutive messages of a room share one envelope; a `leave` travels alone (its member
    /// rides with it), and membership changes go to the membership channel.
    #[test]
    fn leaves_and_membership_changes_get_their_own_envelopes() {
        let (bridge, _tasks) = Bridge::new("n1".into(), "p");
        let f = Bytes::from_static(b"f");
        let m = |seq, leaving| Outgoing::Message { room: 7, seq, frame: f.clone(), leaving };
        let change = MemberChange { room: 7, user: 3, seq: 4, join: false };
        let batch = [m(1, None), m(2, None), m(3, Some(3)), Outgoing::Membership(change), m(5, None)];
        let (mut pipe, mut seqs, mut rest, mut taken) = (redis::pipe(), Vec::new(), &batch[..], Vec::new());
        while !rest.is_empty() {
            let n = bridge.add_to_pipe(&mut pipe, rest, &mut seqs);
            taken.push(n);
            rest = &rest[n..];
        }
        assert_eq!(taken, vec![2, 1, 1, 1]);
        assert_eq!(seqs, vec![(7, 1), (7, 2), (7, 3), (7, 5)]);
        let channels: Vec<String> = pipe
            .cmd_iter()
            .map(|c| match c.args_iter().nth(1) {
                Some(redis::Arg::Simple(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(channels, ["p:room:7", "p:room:7", "p:members", "p:room:7"]);
    }

    #[test]
    fn a_full_subscription_queue_asks_for_a_resubscribe_instead_of_growing() {
        let (bridge, _tasks) = Bridge::new("n1".into(), "p");
        for room in 0..SUBSCRIBE_QUEUE as i64 {
            bridge.subscribe(room);
        }
        assert!(!bridge.resubscribe.load(Ordering::Relaxed));
        bridge.unsubscribe(1);
        assert!(bridge.resubscribe.load(Ordering::Relaxed), "past the bound: rebuild from a snapshot");
    }
}
