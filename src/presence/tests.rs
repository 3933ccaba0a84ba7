//! Presence and the connection registry with an in-memory bus (no database, no Redis).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::connections::TooManyConnections;
use super::*;
use crate::bus::NoHistory;
use crate::conn::{ConnState, Out};
use crate::model::Membership;

fn local() -> Arc<Local> {
    Arc::new(Local {
        connections: Arc::new(Connections::default()),
        bus: Bus::new(Arc::new(NoHistory), None),
        // Never connected: only a dead node's reaping reads it, and there is no cluster here.
        store: Store::new("postgres://t@127.0.0.1:1/t", 1, Duration::from_millis(10)).unwrap(),
        max_room_members: 200,
    })
}

fn member(room_id: i64) -> Membership {
    Membership { room_id, member_count: 2, last_seq: 0 }
}

fn drain(conn: &ConnState) -> Vec<Out> {
    let mut items = Vec::new();
    conn.outbox.drain(&mut items, usize::MAX);
    items
}

fn frames(conn: &ConnState) -> Vec<serde_json::Value> {
    drain(conn)
        .into_iter()
        .filter_map(|o| match o {
            Out::Frame(f) => Some(payload(&f)),
            _ => None,
        })
        .collect()
}

fn payload(frame: &Bytes) -> serde_json::Value {
    serde_json::from_slice(&frame[2..]).unwrap()
}

fn connect(l: &Local, user: i64, rooms: &[i64]) -> (Arc<ConnHandle>, bool) {
    let ms: Vec<Membership> = rooms.iter().copied().map(member).collect();
    l.connections.register(user, &ms, Arc::new(ConnState::new(64)), 2, &l.bus).unwrap()
}

#[tokio::test]
async fn first_and_last_connection_and_the_per_user_limit() {
    let l = local();
    let (a, first) = connect(&l, 7, &[1]);
    assert!(first);
    let (b, first) = connect(&l, 7, &[1]);
    assert!(!first, "second connection of the same user");
    let over = l.connections.register(7, &[member(1)], Arc::new(ConnState::new(4)), 2, &l.bus);
    assert!(matches!(over, Err(TooManyConnections)));
    assert!(l.connections.is_online(7));
    assert_eq!(l.bus.subscriber_count(1), 2);
    assert!(!l.connections.unregister(&a, &l.bus), "b is still open");
    assert!(l.connections.unregister(&b, &l.bus), "the last one closed");
    assert!(!l.connections.is_online(7));
    assert_eq!(l.bus.subscriber_count(1), 0, "no subscription leaks");
}

#[tokio::test]
async fn joining_and_leaving_moves_live_connections() {
    let l = local();
    let (c, _) = connect(&l, 3, &[1]);
    l.connections.joined(3, 9, 1, &l.bus);
    assert!(c.in_room(9));
    assert_eq!(l.bus.subscriber_count(9), 1);
    let items = drain(&c.conn);
    assert!(matches!(items[..], [Out::Reset(9), Out::Hold(9), ..]), "a fresh stream, held for the replay");
    l.connections.joined(3, 9, 1, &l.bus);
    assert_eq!(l.bus.subscriber_count(9), 1, "joining twice subscribes once");
    l.bus.publish_message(9, 1, bytes::Bytes::from_static(b"join"));
    l.connections.left(3, 9, 2, &l.bus);
    assert!(!c.in_room(9));
    assert_eq!(l.bus.subscriber_count(9), 1, "kept until the leave (seq 2) is delivered here");
    l.bus.publish_message(9, 2, bytes::Bytes::from_static(b"leave"));
    l.bus.publish_message(9, 3, bytes::Bytes::from_static(b"after"));
    let seqs: Vec<i64> = drain(&c.conn)
        .into_iter()
        .filter_map(|o| match o {
            Out::Seq { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![1, 2], "nothing past the leave, even without its member marker");
    assert_eq!(l.bus.subscriber_count(9), 0);
    l.connections.joined(4, 9, 5, &l.bus);
    assert_eq!(l.bus.subscriber_count(9), 0, "a user with no live connection subscribes nothing");
}

#[tokio::test]
async fn a_connection_registered_with_stale_rooms_is_reconciled() {
    let l = local();
    let epoch = l.connections.membership_epoch();
    // Looked up: rooms 1 and 2. Meanwhile the user left 2 and joined 3 (no connection yet).
    l.connections.left(8, 2, 4, &l.bus);
    l.connections.joined(8, 3, 1, &l.bus);
    assert_ne!(l.connections.membership_epoch(), epoch, "the changes are counted");
    let (c, _) = connect(&l, 8, &[1, 2]);
    assert_eq!(l.bus.subscriber_count(2), 1, "stale: subscribed to the room it left");
    l.connections.reconcile(&c, &[member(1), member(3)], &l.bus);
    assert!(c.in_room(1) && c.in_room(3) && !c.in_room(2));
    assert_eq!((l.bus.subscriber_count(2), l.bus.subscriber_count(3)), (0, 1), "no leak, nothing missed");
}

#[tokio::test]
async fn typing_is_throttled_per_user_and_room() {
    let l = local();
    let _c = connect(&l, 5, &[1, 2]);
    assert!(l.connections.allow_typing(5, 1, 1, true));
    assert!(!l.connections.allow_typing(5, 1, 1, true), "within a second");
    assert!(l.connections.allow_typing(5, 2, 1, true), "another room has its own throttle");
    assert!(!l.connections.allow_typing(6, 1, 1, true), "a user without a connection relays nothing");
    // a stop ends a relayed start at once, once; then the rate holds again
    assert!(l.connections.allow_typing(5, 1, 1, false), "the stop of a relayed start");
    assert!(!l.connections.allow_typing(5, 1, 1, false), "a second stop within the second");
    assert!(!l.connections.allow_typing(5, 1, 1, true), "a start within the second");
    assert!(l.connections.allow_typing(5, 3, 1, false), "a first stop in a room is rated like a start");
    assert!(!l.connections.allow_typing(5, 3, 1, false), "and throttled like one");
}

#[tokio::test]
async fn node_local_presence_reaches_the_other_members_only() {
    let l = local();
    let presence = Presence::local(l.clone());
    let (watcher, _) = connect(&l, 1, &[4]);
    let (me, _) = connect(&l, 2, &[4]);
    presence.went_online(2, vec![4]);
    let got = frames(&watcher.conn);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], "presence");
    assert_eq!(got[0]["user_id"], 2);
    assert_eq!(got[0]["online"], true);
    assert!(frames(&me.conn).is_empty(), "not to the user's own connections");
    presence.went_offline(2, vec![4]);
    assert_eq!(frames(&watcher.conn)[0]["online"], false);
    let online = presence.online_among([1, 2, 3]).await;
    assert_eq!(online, [1, 2].into_iter().collect());
}
