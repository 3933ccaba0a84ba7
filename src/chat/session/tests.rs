//! The session with in-memory fakes: no database, no sockets. Writes are checked at the group
//! commit's queue (its depth), events at the connections' outboxes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures_util::future::BoxFuture;
use serde_json::Value;

use super::*;
use crate::bus::{Bus, History};
use crate::chat::rooms::RoomLimits;
use crate::chat::{Parts, Publisher, Reads, Rooms, Settings};
use crate::config::LimitsConfig;
use crate::conn::ConnState;
use crate::error::StoreError;
use crate::model::{Membership, Message, MessageMeta, RoomEvent};
use crate::presence::{Connections, Local, Presence};
use crate::store::batch_loader::{BatchLoader, Memberships};
use crate::store::group_commit::{self, Batcher};
use crate::store::Store;

/// Room 1 holds messages with seqs 1..=5; message id N is seq N of room 1 by user 2.
struct FakeReads;

fn message(seq: i64) -> Message {
    Message {
        id: seq,
        room_id: 1,
        seq,
        sender_id: 2,
        content: format!("m{seq}"),
        timestamp: Utc::now(),
        client_msg_id: None,
        reply_to: None,
        mentions: vec![],
    }
}

impl Reads for FakeReads {
    fn message_meta(&self, id: i64) -> BoxFuture<'_, Result<Option<MessageMeta>, StoreError>> {
        Box::pin(async move { Ok((1..=5).contains(&id).then_some(MessageMeta { room_id: 1, seq: id, sender_id: 2 })) })
    }
}

impl History for FakeReads {
    fn between(
        &self,
        room: i64,
        after: i64,
        before: i64,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<RoomEvent>, StoreError>> {
        Box::pin(async move {
            if room != 1 {
                return Ok(Vec::new());
            }
            Ok((after + 1..before.min(6)).take(limit as usize).map(|s| RoomEvent::Message(message(s))).collect())
        })
    }
}

struct Fixture {
    chat: Arc<Chat>,
    connections: Arc<Connections>,
    bus: Arc<Bus>,
    /// Kept so the writer's queues stay open (never run: nothing commits).
    _lanes: Vec<Batcher<Publisher>>,
}

fn fixture(limits: LimitsConfig, max_replay: i64) -> Fixture {
    let store = Store::new("postgres://t@127.0.0.1:1/t", 1, Duration::from_millis(10)).unwrap();
    let bus = Bus::new(Arc::new(FakeReads), None);
    let connections = Arc::new(Connections::default());
    let local =
        Local { connections: connections.clone(), bus: bus.clone(), store: store.clone(), max_room_members: 200 };
    let settings = group_commit::Settings {
        writers: 1,
        queue_max: 16,
        batch_max: 16,
        timeout: Duration::from_secs(5),
        outbox: false,
        reactions_max: 50,
    };
    let (writer, lanes) = group_commit::new(
        store.clone(),
        Publisher::new(bus.clone(), None),
        &settings,
        Arc::new(tokio::sync::Notify::new()),
    );
    let parts = Parts {
        reads: Arc::new(FakeReads),
        writer,
        bus: bus.clone(),
        presence: Arc::new(Presence::local(Arc::new(local))),
        memberships: BatchLoader::spawn(Memberships(store.clone())),
        rooms: Rooms::new(
            Arc::new(store),
            bus.clone(),
            RoomLimits { rooms_per_user: 1000, create_members: 1000, created_per_minute: 30 },
        ),
    };
    let settings = Settings { max_replay, initial_hold_ms: 0, sync_max_rooms: 500, presence_max_room_members: 200 };
    Fixture { chat: Chat::new(parts, settings, limits), connections, bus, _lanes: lanes }
}

impl Fixture {
    /// A connection of `user` in rooms 1 and 2, and its session.
    fn session(&self, user: i64) -> (Session, Arc<ConnState>) {
        let ms = [1, 2].map(|room_id| Membership { room_id, member_count: 3, last_seq: 0 });
        let conn = Arc::new(ConnState::new(64));
        let (handle, _) = self.connections.register(user, &ms, conn.clone(), 5, &self.bus).unwrap();
        (Session::new(self.chat.clone(), handle), conn)
    }

    fn queued_writes(&self) -> u64 {
        self.chat.write_queue_depth()
    }
}

fn drain(conn: &ConnState) -> Vec<Out> {
    let mut items = Vec::new();
    conn.outbox.drain(&mut items, usize::MAX);
    items
}

fn json(frame: &Bytes) -> Value {
    let skip = if frame[1] & 0x7f == 126 { 4 } else { 2 };
    serde_json::from_slice(&frame[skip..]).unwrap()
}

/// The JSON frames queued (ignoring ordering markers such as `Hold`).
fn events(conn: &ConnState) -> Vec<Value> {
    drain(conn)
        .into_iter()
        .filter_map(|o| match o {
            Out::Frame(f) => Some(json(&f)),
            _ => None,
        })
        .collect()
}

async fn text(s: &mut Session, v: Value) -> Option<CloseReq> {
    s.on_text(Bytes::from(v.to_string())).await
}

/// Membership is checked where the write commits (whatever this node has cached), so every
/// message goes to the group commit; nothing is echoed before the commit.
#[tokio::test]
async fn a_message_is_queued_for_the_group_commit() {
    let f = fixture(LimitsConfig::default(), 100);
    let (mut s, conn) = f.session(7);
    text(&mut s, serde_json::json!({"type": "message", "content": "hi", "client_msg_id": "a"})).await;
    assert_eq!(f.queued_writes(), 1);
    assert!(events(&conn).is_empty(), "no echo before the commit");
    text(&mut s, serde_json::json!({"type": "message", "room_id": 9, "content": "x", "client_msg_id": "b"})).await;
    assert_eq!(f.queued_writes(), 2, "the commit decides about a room this node thinks the user is not in");
}

/// An edit, delete or reaction of an unknown message is refused before the group commit.
#[tokio::test]
async fn room_events_of_unknown_messages_are_not_found() {
    let f = fixture(LimitsConfig::default(), 100);
    let (mut s, conn) = f.session(7);
    for e in [
        serde_json::json!({"type": "edit", "message_id": 99, "content": "x"}),
        serde_json::json!({"type": "delete", "message_id": 99}),
        serde_json::json!({"type": "react", "message_id": 99, "emoji": "👍", "on": true}),
    ] {
        text(&mut s, e).await;
        let got = events(&conn);
        assert_eq!((got[0]["code"].as_str(), got[0]["ref"].as_i64()), (Some("not_found"), Some(99)));
    }
    text(&mut s, serde_json::json!({"type": "react", "message_id": 3, "emoji": "👍", "on": true})).await;
    assert_eq!(f.queued_writes(), 1, "a known message's reaction is queued");
}

#[tokio::test]
async fn identity_fields_of_another_user_are_refused() {
    let f = fixture(LimitsConfig::default(), 100);
    let (mut s, conn) = f.session(7);
    text(&mut s, serde_json::json!({"type": "message", "content": "hi", "sender_id": 8})).await;
    assert_eq!(events(&conn)[0]["code"], "forbidden");
    assert_eq!(f.queued_writes(), 0);
}

#[tokio::test]
async fn past_the_burst_messages_are_rate_limited_then_the_connection_closes() {
    let limits = LimitsConfig { messages_per_sec: 1, messages_burst: 2, ..LimitsConfig::default() };
    let f = fixture(limits, 100);
    let (mut s, conn) = f.session(7);
    for _ in 0..2 {
        assert!(text(&mut s, serde_json::json!({"type": "message", "content": "hi"})).await.is_none());
    }
    text(&mut s, serde_json::json!({"type": "message", "content": "hi", "client_msg_id": "c"})).await;
    let err = events(&conn).pop().unwrap();
    assert_eq!(err["code"], "rate_limited");
    assert_eq!(err["ref"], "c");
    assert!(err["retry_after_ms"].as_u64().unwrap() > 0);
    let mut close = None;
    for _ in 0..20 {
        close = close.or(text(&mut s, serde_json::json!({"type": "message", "content": "hi"})).await);
    }
    assert_eq!(close.map(|c| c.code), Some(1008), "sustained abuse closes the connection");
}

#[tokio::test]
async fn typing_reaches_the_other_members_only() {
    let f = fixture(LimitsConfig::default(), 100);
    let (mut s, me) = f.session(7);
    let (_other, them) = f.session(8);
    text(&mut s, serde_json::json!({"type": "typing", "room_id": 2})).await;
    let got = events(&them);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0]["type"].as_str(), got[0]["user_id"].as_i64(), got[0]["state"].as_str()),
        (Some("typing"), Some(7), Some("start"))
    );
    assert!(events(&me).is_empty());
    text(&mut s, serde_json::json!({"type": "typing", "room_id": 2})).await;
    assert!(events(&them).is_empty(), "throttled to limits.typing_per_sec");
}

#[tokio::test]
async fn receipts_look_up_their_message() {
    let f = fixture(LimitsConfig::default(), 100);
    let (mut s, conn) = f.session(7);
    text(&mut s, serde_json::json!({"type": "status_update", "message_id": 3, "read": true})).await;
    assert_eq!(f.queued_writes(), 1);
    text(&mut s, serde_json::json!({"type": "status_update", "message_id": 99, "read": true})).await;
    let err = events(&conn).pop().unwrap();
    assert_eq!((err["code"].as_str(), err["ref"].as_i64()), (Some("not_found"), Some(99)));
}

#[tokio::test]
async fn sync_replays_each_room_then_answers_synced() {
    let f = fixture(LimitsConfig::default(), 3);
    let (mut s, conn) = f.session(7);
    text(&mut s, serde_json::json!({"type": "sync", "rooms": {"1": 1, "2": 0, "9": 0}})).await;
    let items = drain(&conn);
    let replayed: Vec<(i64, Vec<i64>)> = items
        .iter()
        .filter_map(|o| match o {
            Out::Replay { room, rows, .. } => Some((*room, rows.iter().map(|(seq, _)| *seq).collect())),
            _ => None,
        })
        .collect();
    assert_eq!(replayed, vec![(1, vec![2, 3, 4]), (2, vec![])], "capped at max_replay");
    let forbidden = items.iter().any(|o| matches!(o, Out::Frame(f) if json(f)["code"] == "forbidden"));
    assert!(forbidden, "room 9 is not the user's");
    match items.last() {
        Some(Out::SyncDone { rooms, more }) => {
            assert_eq!(rooms, &vec![(1, 1), (2, 0)]);
            assert!(*more, "room 1 hit max_replay");
        }
        other => panic!("expected SyncDone last, got {other:?}"),
    }
}

#[tokio::test]
async fn a_draining_node_refuses_new_messages() {
    let f = fixture(LimitsConfig::default(), 100);
    let (mut s, conn) = f.session(7);
    f.chat.start_draining();
    text(&mut s, serde_json::json!({"type": "message", "content": "hi", "client_msg_id": "d"})).await;
    let err = events(&conn).pop().unwrap();
    assert_eq!((err["code"].as_str(), err["ref"].as_str()), (Some("unavailable"), Some("d")));
    assert_eq!(f.queued_writes(), 0);
}
