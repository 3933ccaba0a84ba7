//! Upgrading a database with data from the previous release's schema (migrations V1..V4) to
//! room events (V5, README "Room events"): the rows a v1 server wrote stay readable, the room
//! log continues at the next seq, and every v2 feature works on the old messages.
//!
//! Real parts only: the `livechat` binary (`migrate --target 4`, then `serve`), the shared test
//! PostgreSQL, real WebSocket and REST clients.

mod common;

use common::*;
use serde_json::{json, Value};

/// What a v1 server left behind: users 1 (ann) and 2 (bob) in room 1 and in room 2 (`ops`),
/// three messages in room 2 (seqs 1..3, the second with a client_msg_id) and bob's read
/// watermark at seq 1.
const V1_DATA: &str = "
    INSERT INTO users (id, username) VALUES (1, 'ann'), (2, 'bob');
    SELECT setval(pg_get_serial_sequence('users', 'id'), 2);
    INSERT INTO room_members (room_id, user_id) VALUES (1, 1), (1, 2);
    UPDATE rooms SET member_count = 2 WHERE id = 1;
    INSERT INTO rooms (id, name, last_seq, member_count) VALUES (2, 'ops', 3, 2);
    SELECT setval(pg_get_serial_sequence('rooms', 'id'), 2);
    INSERT INTO room_members (room_id, user_id, delivered_seq, read_seq) VALUES (2, 1, 0, 0), (2, 2, 1, 1);
    INSERT INTO messages (room_id, seq, sender_id, content, client_msg_id) VALUES
        (2, 1, 1, 'first', NULL), (2, 2, 1, 'second', 'v1-key'), (2, 3, 2, 'third', NULL);";

#[tokio::test]
async fn a_v1_database_upgrades_and_every_feature_works_on_its_data() {
    let db = TestDb::create().await;
    let out = run_cli(&["migrate", "--target", "4"], &[("DATABASE_URL", db.url.as_str())]).await;
    assert!(out.status.success(), "migrate --target 4: {out:?}");
    assert!(out.stdout.contains("applied 4 migration"), "{}", out.stdout);
    let c = db.client().await;
    c.batch_execute(V1_DATA).await.expect("v1 rows");
    drop(c);

    // `serve` applies V5 to the populated database.
    let s = TestServer::start_with_db(db, &[]).await;
    let (ann, bob) = (s.mint_token(1, 600), s.mint_token(2, 600));

    // Old rows read as v2 history objects, with the new fields at their defaults.
    let r = s.get_json("/chat/history?room_id=2", &ann).await;
    assert_eq!(r.status, 200, "{r:?}");
    let page = r.body.as_array().expect("a list").clone();
    let contents: Vec<&str> = page.iter().filter_map(|m| m["content"].as_str()).collect();
    assert_eq!(contents, ["third", "second", "first"]);
    for m in &page {
        assert_eq!(
            (&m["reply_to"], &m["mentions"], &m["edited_at"], &m["deleted"], &m["reply_count"], &m["reactions"]),
            (&Value::Null, &json!([]), &Value::Null, &json!(false), &json!(0), &json!([])),
            "{m}"
        );
    }
    let first_id = page[2]["id"].as_i64().expect("id");

    // Unread for bob: ann's message at seq 2 (seq 3 is his own), none of them mentions him.
    let rooms = s.get_json("/v1/rooms", &bob).await;
    let ops = rooms.body.as_array().and_then(|a| a.iter().find(|r| r["id"] == 2)).cloned().expect("room 2");
    assert_eq!((&ops["last_seq"], &ops["unread"], &ops["mentions"]), (&json!(3), &json!(1), &json!(0)), "{ops}");

    // The log goes on at seq 4, edits and reactions apply to old messages, and an old
    // client_msg_id still deduplicates.
    let mut ws = s.ws(&ann).await;
    let m = ws.send_and_echo(2, "after the upgrade").await;
    assert_eq!(m["seq"], 4, "{m}");
    ws.send_json(json!({"type": "edit", "message_id": first_id, "content": "first, edited"})).await;
    let edit = ws.recv_type("edit").await;
    assert_eq!((&edit["seq"], &edit["message_id"]), (&json!(5), &json!(first_id)), "{edit}");
    ws.send_json(json!({"type": "react", "message_id": first_id, "emoji": "👍", "on": true})).await;
    assert_eq!(ws.recv_type("reaction").await["seq"], 6);
    ws.send_json(json!({"type": "message", "room_id": 2, "content": "again", "client_msg_id": "v1-key"})).await;
    let repeat = ws.recv_type("message").await;
    assert_eq!((&repeat["seq"], &repeat["content"]), (&json!(2), &json!("second")), "idempotent across the upgrade");

    // A fresh client replays the whole room, old and new, in one seq order.
    let mut fresh = s.ws(&bob).await;
    fresh.send_json(json!({"type": "sync", "rooms": {"2": 0}})).await;
    let mut seqs = Vec::new();
    loop {
        let v = fresh.recv_types(&["message", "edit", "reaction", "synced"]).await;
        if v["type"] == "synced" {
            assert_eq!(v["rooms"]["2"], 6, "{v}");
            break;
        }
        if v["seq"] == 1 {
            assert_eq!(v["content"], "first, edited", "a replay shows the message as it stands now");
        }
        seqs.push(v["seq"].as_i64().expect("seq"));
    }
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());
    let events = s.get_json("/v1/rooms/2/events?after_seq=3", &bob).await;
    let kinds: Vec<&str> = events.body.as_array().expect("list").iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["message", "edit", "reaction"]);

    // Search covers the old history too (the indexer's start-up sweep backfills it), with the
    // edit's text.
    for q in ["third", "first%20edited"] {
        let deadline = std::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let r = s.get_json(&format!("/v1/search?q={q}"), &bob).await;
            assert_eq!(r.status, 200, "{r:?}");
            if r.body.as_array().is_some_and(|l| l.len() == 1) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "`{q}` never became searchable: {r:?}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
