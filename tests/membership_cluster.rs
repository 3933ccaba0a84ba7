//! Room events across a cluster (SPEC §9, §10): two `livechat serve` nodes on one PostgreSQL
//! database and one Redis. Membership changes made on one node start and stop delivery on the
//! other node's connections (the `leave` is the last event of the room a removed user gets, and
//! the other node refuses that user's writes), and edits and reactions made on one node reach
//! members on the other in `seq` order.
//!
//! Real parts only: the `livechat` binary, the shared test PostgreSQL and Redis
//! (`LIVECHAT_TEST_PG_URL`, `LIVECHAT_TEST_REDIS_URL`), real WebSocket clients.

mod common;

use common::*;
use serde_json::{json, Value};

/// §10 on every node: a member removed through node A while connected to node B gets the
/// `leave` on B as its last event of the room — a message sent afterwards on A (which B
/// demonstrably received, since another member on B got it) never reaches the removed user's
/// connection, proven by a later message of another room and a sync barrier — and B refuses
/// that user's next writes to the room with `forbidden`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_on_one_node_stops_delivery_on_the_other() {
    let c = cluster_with(2, &redis_url(), FAST_LIMITS).await;
    let (n1, n2) = (&c[0], &c[1]);
    let (_, ta) = n1.create_user(&uname("ann")).await;
    let (bob, tb) = n1.create_user(&uname("bob")).await;
    let (cat, tc) = n1.create_user(&uname("cat")).await;
    let room = n1.create_room(&ta, "kick-across", &[bob, cat]).await;
    // ann on n1; bob and cat on n2 (so n2 keeps carrying the room after bob leaves).
    let mut ann_ws = n1.ws_ready(&ta).await;
    let mut bob_ws = n2.ws_ready(&tb).await;
    let mut cat_ws = n2.ws_ready(&tc).await;

    // The room is live on n2.
    let m0 = ann_ws.send_and_echo(room, "before").await;
    let bob_m = bob_ws.send_and_echo(room, "bob's words").await;
    assert_eq!(next_room_event(&mut ann_ws, room).await["id"], bob_m["id"]);
    let got = [next_room_event(&mut cat_ws, room).await, next_room_event(&mut cat_ws, room).await];
    assert_eq!((&got[0]["id"], &got[1]["id"]), (&m0["id"], &bob_m["id"]));

    // The admin removes bob through n1.
    let admin = n1.admin_token.clone();
    let r = n1.delete(&format!("/v1/rooms/{room}/members/{bob}"), &admin).await;
    assert!(matches!(r.status, 200 | 204), "{r:?}");
    let leave = next_room_event(&mut bob_ws, room).await;
    assert_member_event(&leave, room, bob, "leave", Value::Null);
    assert_eq!(seq_of(&leave), seq_of(&bob_m) + 1, "{leave}");
    for (who, ws) in [("cat@n2", &mut cat_ws), ("ann@n1", &mut ann_ws)] {
        assert_eq!(next_room_event(ws, room).await, leave, "{who} gets bob's leave");
    }

    // A message on n1 after the leave: n2 gets it (cat has it) but must not pass it to bob.
    let after = ann_ws.send_and_echo(room, "after bob left").await;
    let got = next_room_event(&mut cat_ws, room).await;
    assert_eq!((&got["id"], seq_of(&got)), (&after["id"], seq_of(&leave) + 1), "cat@n2: {got}");
    let sentinel = ann_ws.send_and_echo(1, "sentinel in general").await;
    let mut seen = Vec::new();
    loop {
        let v = bob_ws.recv_until("the sentinel", |v| v["type"] == "message" || is_room_event_of(v, room)).await;
        if v["id"] == sentinel["id"] {
            break;
        }
        seen.push(v);
    }
    assert!(seen.is_empty(), "bob@n2 got events of the room he left: {seen:?}");
    let extra = room_events_of(bob_ws.sync_barrier().await, room);
    assert!(extra.is_empty(), "the leave is the last event of the room bob gets: {extra:?}");

    // n2 refuses bob's writes to the room, whatever it had cached.
    bob_ws.send_msg(room, "still here?", Some("rm-1")).await;
    expect_error(&mut bob_ws, room, "forbidden", json!("rm-1")).await;
    send_react(&mut bob_ws, id_of(&after), "👋", true).await;
    expect_error(&mut bob_ws, room, "forbidden", after["id"].clone()).await;
    send_edit(&mut bob_ws, id_of(&bob_m), "rewritten").await;
    expect_error(&mut bob_ws, room, "forbidden", bob_m["id"].clone()).await;

    // Nothing of that reached the room: cat@n2's next room event is ann's next message.
    let last = ann_ws.send_and_echo(room, "last").await;
    let got = next_room_event(&mut cat_ws, room).await;
    assert_eq!((&got["id"], seq_of(&got)), (&last["id"], seq_of(&after) + 1), "refused writes took no seq: {got}");
}

/// §10 on every node: a user added through node A while connected to node B (and not a member
/// before) gets the `join` live on B, then the messages sent on A to that room, in seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addition_on_one_node_starts_delivery_on_the_other() {
    let c = cluster_with(2, &redis_url(), FAST_LIMITS).await;
    let (n1, n2) = (&c[0], &c[1]);
    let (ann, ta) = n1.create_user(&uname("ann")).await;
    let (bob, tb) = n1.create_user(&uname("bob")).await;
    let room = n1.create_room(&ta, "join-across", &[]).await;
    // ann on n1; bob (not a member yet) on n2, where nobody has the room.
    let mut ann_ws = n1.ws_ready(&ta).await;
    let mut bob_ws = n2.ws_ready(&tb).await;
    let m0 = ann_ws.send_and_echo(room, "before bob").await;

    let r = n1.post_json(&format!("/v1/rooms/{room}/members"), &ta, json!({ "user_id": bob })).await;
    assert!(matches!(r.status, 200 | 201 | 204), "{r:?}");
    let join = next_room_event(&mut bob_ws, room).await;
    assert_member_event(&join, room, bob, "join", json!(ann));
    assert_eq!(seq_of(&join), seq_of(&m0) + 1, "bob's first event of the room is his join: {join}");
    assert_eq!(next_room_event(&mut ann_ws, room).await, join, "ann@n1 gets the same join");

    const N: usize = 8;
    for i in 0..N {
        ann_ws.send_msg(room, &format!("for bob {i}"), Some(&format!("fb-{i}"))).await;
    }
    let echoes = next_room_events(&mut ann_ws, room, N).await;
    let got = next_room_events(&mut bob_ws, room, N).await;
    let want: Vec<i64> = ((seq_of(&join) + 1)..=(seq_of(&join) + N as i64)).collect();
    assert_eq!(got.iter().map(seq_of).collect::<Vec<_>>(), want, "bob@n2: gapless, in seq order: {got:?}");
    let ids = |v: &[Value]| v.iter().map(|m| (m["type"].clone(), m["id"].clone())).collect::<Vec<_>>();
    assert_eq!(ids(&got), ids(&echoes), "bob@n2 gets ann's messages, once each");
    let extra = room_events_of(bob_ws.sync_barrier().await, room);
    assert!(extra.is_empty(), "no duplicates: {extra:?}");

    // And bob can write there through n2.
    let own = bob_ws.send_and_echo(room, "thanks").await;
    assert_eq!(seq_of(&own), seq_of(&join) + N as i64 + 1);
    assert_eq!(next_room_event(&mut ann_ws, room).await["id"], own["id"]);
}

/// §10 on every node: a member on node B sends a message, edits it, reacts to it and deletes
/// it; another member connected to node A gets each event, identical to B's acknowledgements,
/// at consecutive seqs in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_reactions_cross_nodes_in_seq_order() {
    let c = cluster_with(2, &redis_url(), FAST_LIMITS).await;
    let (n1, n2) = (&c[0], &c[1]);
    let (_, ta) = n1.create_user(&uname("ann")).await;
    let (bob, tb) = n1.create_user(&uname("bob")).await;
    let room = n1.create_room(&ta, "edits-across", &[bob]).await;
    let mut ann_ws = n1.ws_ready(&ta).await;
    let mut bob_ws = n2.ws_ready(&tb).await;

    let m = bob_ws.send_and_echo(room, "from n2").await;
    let mid = id_of(&m);
    send_edit(&mut bob_ws, mid, "from n2, edited").await;
    let e = ack(&mut bob_ws, room, "edit", mid).await;
    send_react(&mut bob_ws, mid, "🚀", true).await;
    let r = ack(&mut bob_ws, room, "reaction", mid).await;
    send_delete(&mut bob_ws, mid).await;
    let d = ack(&mut bob_ws, room, "delete", mid).await;
    assert_eq!(
        [&m, &e, &r, &d].iter().map(|v| seq_of(v)).collect::<Vec<_>>(),
        ((seq_of(&m))..=(seq_of(&m) + 3)).collect::<Vec<_>>(),
        "one counter across kinds"
    );
    assert_fields(
        &e,
        &json!({ "type": "edit", "room_id": room, "message_id": mid, "user_id": bob, "content": "from n2, edited" }),
    );
    assert_fields(
        &r,
        &json!({ "type": "reaction", "room_id": room, "message_id": mid, "user_id": bob, "emoji": "🚀", "on": true }),
    );
    assert_fields(&d, &json!({ "type": "delete", "room_id": room, "message_id": mid, "user_id": bob }));

    let got = next_room_events(&mut ann_ws, room, 4).await;
    let types: Vec<&str> = got.iter().map(|v| v["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(types, ["message", "edit", "reaction", "delete"], "ann@n1: in seq order: {got:?}");
    for k in ["id", "room_id", "seq", "sender_id", "content", "timestamp", "client_msg_id", "reply_to", "mentions"] {
        assert_eq!(got[0][k], m[k], "ann@n1: message field {k}");
    }
    assert_eq!(got[1], e, "ann@n1 gets the edit as bob@n2 did");
    assert_eq!(got[2], r, "ann@n1 gets the reaction as bob@n2 did");
    assert_eq!(got[3], d, "ann@n1 gets the delete as bob@n2 did");
    let extra = room_events_of(ann_ws.sync_barrier().await, room);
    assert!(extra.is_empty(), "each once: {extra:?}");

    // Both nodes list the same log.
    let path = format!("/v1/rooms/{room}/events?after_seq=0&limit=100");
    let (l1, l2) = (n1.get_json(&path, &ta).await, n2.get_json(&path, &ta).await);
    assert_eq!((l1.status, l2.status), (200, 200), "{l1:?} {l2:?}");
    assert_eq!(l1.body, l2.body, "the events listing is the same on both nodes");
}
