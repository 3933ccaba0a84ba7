//! Room membership and what each member sees of a room (SPEC §10, with the v2 rows of §4):
//! `member` join/leave events (room creation, the admin API, adding and removing members) and
//! the delivery they start and stop; `unread` and `mentions` counts; the v2 history message
//! object; mention notifications. Edits, deletes, reactions, replies, mentions and replay are in
//! tests/room_events.rs.
//!
//! Real parts only: the `livechat` binary, PostgreSQL, Redis (notifications), real WebSocket
//! clients and a real webhook receiver. Every wait is bounded; nothing sleeps to synchronise.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

// --- helpers -------------------------------------------------------------------------------------

/// `room`'s entry in `GET /v1/rooms` as the holder of `token`.
async fn room_entry(s: &TestServer, token: &str, room: i64) -> Value {
    let r = s.get_json("/v1/rooms", token).await;
    assert_eq!(r.status, 200, "GET /v1/rooms: {r:?}");
    r.body
        .as_array()
        .unwrap_or_else(|| panic!("GET /v1/rooms is not an array: {r:?}"))
        .iter()
        .find(|x| x["id"] == json!(room))
        .cloned()
        .unwrap_or_else(|| panic!("room {room} not in GET /v1/rooms: {r:?}"))
}

/// `(unread, mentions)` of `room` in `GET /v1/rooms` as the holder of `token`.
async fn unread_of(s: &TestServer, token: &str, room: i64) -> (i64, i64) {
    let e = room_entry(s, token, room).await;
    let unread = e["unread"].as_i64().unwrap_or_else(|| panic!("integer unread: {e}"));
    let mentions = e["mentions"].as_i64().unwrap_or_else(|| panic!("integer mentions: {e}"));
    (unread, mentions)
}

/// `GET /v1/unread` → `(unread, mentions, rooms)`.
async fn unread_summary(s: &TestServer, token: &str) -> (i64, i64, i64) {
    let r = s.get_json("/v1/unread", token).await;
    assert_eq!(r.status, 200, "GET /v1/unread: {r:?}");
    let get = |k: &str| r.body[k].as_i64().unwrap_or_else(|| panic!("integer {k} in GET /v1/unread: {r:?}"));
    (get("unread"), get("mentions"), get("rooms"))
}

// --- membership --------------------------------------------------------------------------------

/// §10: `POST /v1/rooms` writes a `member` `join` per member, the creator's first, each with
/// `by` = the creator, at seqs 1.. (so `last_seq` counts them); a member's open connection
/// gets the new room's events live (any join it sees comes in order, before the first message).
#[tokio::test]
async fn room_creation_writes_a_join_per_member_creator_first() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (a, ta) = s.create_user(&uname("rc_a")).await;
    let (b, tb) = s.create_user(&uname("rc_b")).await;
    let (c, _) = s.create_user(&uname("rc_c")).await;
    let mut cb = s.ws_ready(&tb).await;
    let r = s.post_json("/v1/rooms", &ta, json!({ "name": "fresh", "members": [b, c] })).await;
    assert_eq!(r.status, 201, "{r:?}");
    let room = id_of(&r.body);

    let ev = events_page(&s, &ta, room, 0, 100).await;
    assert_eq!(seqs(&ev), vec![1, 2, 3], "three joins at seqs 1..3: {ev:?}");
    assert_member_event(&ev[0], room, a, "join", json!(a));
    let mut joined = Vec::new();
    for e in &ev[1..] {
        let u = e["user_id"].as_i64().unwrap_or_else(|| panic!("user_id: {e}"));
        assert_member_event(e, room, u, "join", json!(a));
        joined.push(u);
    }
    joined.sort_unstable();
    let mut want = vec![b, c];
    want.sort_unstable();
    assert_eq!(joined, want, "one join per listed member: {ev:?}");
    assert_eq!(s.last_seq(&ta, room).await, 3);

    // b's connection, open before the room existed, gets the room's first message live.
    let mut ca = s.ws_ready(&ta).await;
    let m = ca.send_and_echo(room, "welcome").await;
    assert_eq!(seq_of(&m), 4, "the first message follows the joins: {m}");
    let (before, got) = {
        let mut before = Vec::new();
        loop {
            let v = next_room_event(&mut cb, room).await;
            if v["type"] == "message" {
                break (before, v);
            }
            before.push(v);
        }
    };
    assert_eq!(got["id"], m["id"]);
    assert!(before.iter().all(|v| v["type"] == "member"), "only joins before it: {before:?}");
    let s_before = seqs(&before);
    assert!(s_before.windows(2).all(|w| w[1] == w[0] + 1) && s_before.iter().all(|x| *x < 4), "{before:?}");
}

/// §10: a user created by the admin API joins room 1 with a `member` `join` whose `by` is null;
/// room 1's connected members get it live, and the events listing shows it.
#[tokio::test]
async fn admin_created_user_joins_room_1_with_by_null() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (_, ta) = s.create_user(&uname("au_a")).await;
    let mut ca = s.ws_ready(&ta).await;
    let before = s.last_seq(&ta, 1).await;

    let (d, _) = s.create_user(&uname("au_d")).await;
    let live = ca.recv_until("d's join in room 1", |v| v["type"] == "member" && v["user_id"] == json!(d)).await;
    assert_member_event(&live, 1, d, "join", Value::Null);
    assert_eq!(seq_of(&live), before + 1, "the join takes room 1's next seq: {live}");

    let listed = events_page(&s, &ta, 1, before, 10).await;
    assert_eq!(listed, vec![live.clone()], "the listing shows the same join");
    assert_eq!(s.last_seq(&ta, 1).await, before + 1);
}

/// §10: `POST /v1/rooms/{id}/members` writes a `join` with `by` = the caller; connected members
/// get it live, and the added user's already-open connection starts receiving the room: the
/// join first, then later events.
#[tokio::test]
async fn added_member_gets_join_then_live_events() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (_, ta) = s.create_user(&uname("am_a")).await;
    let (b, tb) = s.create_user(&uname("am_b")).await;
    let (c, tc) = s.create_user(&uname("am_c")).await;
    let room = s.create_room(&ta, "growing", &[b]).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;
    let mut cc = s.ws_ready(&tc).await;
    let m0 = ca.send_and_echo(room, "before c").await;
    assert_eq!(next_room_event(&mut cb, room).await["id"], m0["id"]);

    // b (not the creator) adds c.
    let r = s.post_json(&format!("/v1/rooms/{room}/members"), &tb, json!({ "user_id": c })).await;
    assert!(matches!(r.status, 200 | 201 | 204), "{r:?}");
    let j = next_room_event(&mut cb, room).await;
    assert_member_event(&j, room, c, "join", json!(b));
    assert_eq!(seq_of(&j), seq_of(&m0) + 1, "{j}");
    assert_eq!(next_room_event(&mut ca, room).await, j, "a gets the same join");
    let first = next_room_event(&mut cc, room).await;
    assert_eq!(first, j, "the added user's open connection gets its own join first");

    let m1 = ca.send_and_echo(room, "hello c").await;
    let got = next_room_event(&mut cc, room).await;
    assert_eq!((&got["id"], &got["seq"]), (&m1["id"], &json!(seq_of(&j) + 1)), "then the room live: {got}");
    let own = cc.send_and_echo(room, "thanks").await;
    assert_eq!(seq_of(&own), seq_of(&m1) + 1, "and c may write there");
}

/// §4/§10: `DELETE /v1/rooms/{id}/members/{user}` (self, or the admin with `by` null) writes a
/// `leave`; the removed user's connection gets it as its last event of the room — a later
/// message there never reaches it (a later message of another room and a sync barrier do);
/// the remaining members get the leave; the removed user's next writes there are `forbidden`.
#[tokio::test]
async fn removed_member_gets_leave_last_then_nothing_and_is_refused() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (_, ta) = s.create_user(&uname("lv_a")).await;
    let (b, tb) = s.create_user(&uname("lv_b")).await;
    let (c, tc) = s.create_user(&uname("lv_c")).await;
    let room = s.create_room(&ta, "shrinking", &[b, c]).await;
    let admin = s.admin_token.clone();
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;
    let mut cc = s.ws_ready(&tc).await;

    let m0 = ca.send_and_echo(room, "all three").await;
    let cm = cc.send_and_echo(room, "c's own words").await; // (c's reading skipped a's message)
    let got = next_room_events(&mut cb, room, 2).await;
    assert_eq!(seqs(&got), [seq_of(&m0), seq_of(&cm)]);
    assert_eq!(next_room_event(&mut ca, room).await["id"], cm["id"]);

    // b leaves by himself: by = b.
    let r = s.delete(&format!("/v1/rooms/{room}/members/{b}"), &tb).await;
    assert!(matches!(r.status, 200 | 204), "{r:?}");
    let lb = next_room_event(&mut cb, room).await;
    assert_member_event(&lb, room, b, "leave", json!(b));
    assert_eq!(seq_of(&lb), seq_of(&cm) + 1, "{lb}");
    for ws in [&mut ca, &mut cc] {
        assert_eq!(next_room_event(ws, room).await, lb, "the remaining members get b's leave");
    }

    // The admin removes c: by = null.
    let r = s.delete(&format!("/v1/rooms/{room}/members/{c}"), &admin).await;
    assert!(matches!(r.status, 200 | 204), "{r:?}");
    let lc = next_room_event(&mut cc, room).await;
    assert_member_event(&lc, room, c, "leave", Value::Null);
    assert_eq!(seq_of(&lc), seq_of(&lb) + 1, "{lc}");
    assert_eq!(next_room_event(&mut ca, room).await, lc, "a gets c's leave");

    // After the leaves: a message in the room, then one in room 1 (where b and c still are).
    let after = ca.send_and_echo(room, "after they left").await;
    let sentinel = ca.send_and_echo(1, "sentinel in general").await;
    for (who, ws) in [("b", &mut cb), ("c", &mut cc)] {
        let mut seen = Vec::new();
        loop {
            let v = ws
                .recv_until(&format!("{who}: the sentinel"), |v| v["type"] == "message" || is_room_event_of(v, room))
                .await;
            if v["id"] == sentinel["id"] {
                break;
            }
            seen.push(v);
        }
        assert!(seen.is_empty(), "{who} got events of the room it left (after {}): {seen:?}", after["id"]);
        let extra = room_events_of(ws.sync_barrier().await, room);
        assert!(extra.is_empty(), "{who}: the leave is the last event of the room: {extra:?}");
    }

    // Writes by the removed members: refused.
    let refused =
        send_expecting_error(&mut cb, json!({ "room_id": room, "content": "still here?" }), room, "forbidden").await;
    assert!(refused["message"].is_string());
    send_react(&mut cb, id_of(&after), "👋", true).await;
    expect_error(&mut cb, room, "forbidden", after["id"].clone()).await;
    send_edit(&mut cc, id_of(&cm), "rewrite after removal").await;
    expect_error(&mut cc, room, "forbidden", cm["id"].clone()).await;
    s.get_json(&format!("/v1/rooms/{room}/events?after_seq=0&limit=10"), &tb).await.assert_error(403, "forbidden");
    assert_eq!(s.last_seq(&ta, room).await, seq_of(&after), "the refused writes took no seq");
    assert_eq!(history_item(&s, &ta, room, id_of(&cm)).await["content"], json!("c's own words"));
}

// --- unread --------------------------------------------------------------------------------------

/// §4 `unread` / `mentions` in `GET /v1/rooms` (messages after the caller's `read_seq` from
/// other senders, not deleted; those mentioning the caller) and `GET /v1/unread` (summed, and
/// how many rooms have unread): a deleted message stops counting; a read receipt for the latest
/// message brings the room to 0; a later message counts again.
#[tokio::test]
async fn unread_and_mentions_per_room_and_summed() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (_, ta) = s.create_user(&uname("un_a")).await;
    let (b, tb) = s.create_user(&uname("un_b")).await;
    let r1 = s.create_room(&ta, "unread-1", &[b]).await;
    let r2 = s.create_room(&ta, "unread-2", &[b]).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;

    for (tok, room) in [(&ta, 1), (&ta, r1), (&tb, r1), (&tb, r2)] {
        assert_eq!(unread_of(&s, tok, room).await, (0, 0), "nothing unread yet (joins are not messages)");
    }
    cb.send_and_echo(r1, "b's own").await;
    ca.send_and_echo(r1, "one").await;
    let m2 = send_with(&mut ca, json!({ "room_id": r1, "content": "two, for b", "mentions": [b] })).await;
    let m3 = ca.send_and_echo(r1, "three").await;
    send_with(&mut ca, json!({ "room_id": r2, "content": "r2 one, for b", "mentions": [b] })).await;
    ca.send_and_echo(r2, "r2 two").await;

    assert_eq!(unread_of(&s, &tb, r1).await, (3, 1), "b: three from a in r1, one mentions b");
    assert_eq!(unread_of(&s, &tb, r2).await, (2, 1));
    assert_eq!(unread_of(&s, &tb, 1).await, (0, 0));
    assert_eq!(unread_of(&s, &ta, r1).await, (1, 0), "a: only b's message is from someone else");
    assert_eq!(unread_of(&s, &ta, r2).await, (0, 0), "own messages never count");
    assert_eq!(unread_summary(&s, &tb).await, (5, 2, 2), "b's badge");
    assert_eq!(unread_summary(&s, &ta).await, (1, 0, 1), "a's badge");

    // A deleted message stops counting (here the one that mentioned b).
    send_delete(&mut ca, id_of(&m2)).await;
    ack(&mut ca, r1, "delete", id_of(&m2)).await;
    assert_eq!(unread_of(&s, &tb, r1).await, (2, 0), "the deleted message no longer counts");
    assert_eq!(unread_summary(&s, &tb).await, (4, 1, 2));

    // b reads the latest message of r1: nothing unread there.
    cb.send_json(json!({ "type": "status_update", "message_id": id_of(&m3), "read": true })).await;
    ca.recv_until("b's read receipt", |v| {
        v["type"] == "status_update" && v["user_id"] == json!(b) && v["message_id"] == m3["id"]
    })
    .await;
    let (s_ref, tb_ref) = (&s, tb.as_str());
    eventually("b's unread in r1 drops to 0 after reading the latest", RECV_TIMEOUT, move || async move {
        unread_of(s_ref, tb_ref, r1).await == (0, 0)
    })
    .await;
    assert_eq!(room_entry(&s, &tb, r1).await["read_seq"], m3["seq"]);
    assert_eq!(unread_summary(&s, &tb).await, (2, 1, 1), "only r2 is left unread");

    // A later message counts again.
    send_with(&mut ca, json!({ "room_id": r1, "content": "four, for b", "mentions": [b] })).await;
    assert_eq!(unread_of(&s, &tb, r1).await, (1, 1));
    assert_eq!(unread_summary(&s, &tb).await, (3, 2, 2));
}

/// §4: `unread` and `mentions` stop at `limits.unread_cap` (here 3): five unread messages, each
/// mentioning the caller, show 3 and 3.
#[tokio::test]
async fn unread_counts_stop_at_the_cap() {
    let mut env = FAST_LIMITS.to_vec();
    env.push(("LIVECHAT_LIMITS__UNREAD_CAP", "3"));
    let s = TestServer::start(&env).await;
    let (_, ta) = s.create_user(&uname("uc_a")).await;
    let (b, tb) = s.create_user(&uname("uc_b")).await;
    let room = s.create_room(&ta, "capped", &[b]).await;
    let mut ca = s.ws_ready(&ta).await;
    for i in 0..2 {
        send_with(&mut ca, json!({ "room_id": room, "content": format!("m{i}"), "mentions": [b] })).await;
    }
    assert_eq!(unread_of(&s, &tb, room).await, (2, 2), "under the cap: exact");
    for i in 2..5 {
        send_with(&mut ca, json!({ "room_id": room, "content": format!("m{i}"), "mentions": [b] })).await;
    }
    assert_eq!(unread_of(&s, &tb, room).await, (3, 3), "five unread, capped at 3");
    assert_eq!(unread_summary(&s, &tb).await, (3, 3, 1));
}

// --- the history object ----------------------------------------------------------------------

/// §4 history message object: every field present with its type — a plain message has
/// `reply_to` null, `mentions` [], `edited_at` null, `deleted` false, `reply_count` 0,
/// `reactions` []; after a reply, an edit and a reaction they read as such.
#[tokio::test]
async fn history_objects_carry_every_v2_field() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (a, ta) = s.create_user(&uname("ho_a")).await;
    let (b, tb) = s.create_user(&uname("ho_b")).await;
    let room = s.create_room(&ta, "shapes", &[b]).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;

    let m = ca.send_and_echo(room, "plain").await;
    let mid = id_of(&m);
    let h = history_item(&s, &tb, room, mid).await;
    assert_v2_history_message(&h);
    assert_fields(
        &h,
        &json!({ "id": mid, "room_id": room, "seq": m["seq"], "sender_id": a, "content": "plain",
                 "reply_to": null, "mentions": [], "edited_at": null, "deleted": false, "reply_count": 0,
                 "reactions": [] }),
    );

    let r =
        send_with(&mut cb, json!({ "room_id": room, "content": "a reply for a", "reply_to": mid, "mentions": [a] }))
            .await;
    send_edit(&mut ca, mid, "plain, edited").await;
    ack(&mut ca, room, "edit", mid).await;
    send_react(&mut cb, mid, "👀", true).await;
    ack(&mut cb, room, "reaction", mid).await;

    let h = history_item(&s, &tb, room, mid).await;
    assert_v2_history_message(&h);
    assert_eq!(h["content"], json!("plain, edited"), "{h}");
    assert!(h["edited_at"].is_string(), "edited_at set after an edit: {h}");
    assert_eq!(h["reply_count"], json!(1), "{h}");
    assert_eq!(h["reactions"], json!([{ "emoji": "👀", "count": 1, "me": true }]), "{h}");
    let hr = history_item(&s, &tb, room, id_of(&r)).await;
    assert_v2_history_message(&hr);
    assert_fields(&hr, &json!({ "reply_to": mid, "mentions": [a], "edited_at": null, "deleted": false }));
    let seen_by_a = history_item(&s, &ta, room, mid).await;
    assert_eq!(seen_by_a["reactions"], json!([{ "emoji": "👀", "count": 1, "me": false }]), "{seen_by_a}");
}

// --- notifications ---------------------------------------------------------------------------

/// §10/§6.6: a mentioned member who is offline gets a notification job whose webhook payload
/// carries `"mention": true` (an offline member not mentioned gets one without it); an edit, a
/// reaction and a delete create no job: the next webhooks are the next message's, then none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mention_of_offline_member_notifies_with_mention_and_other_events_notify_nobody() {
    let mut hook = WebhookReceiver::start().await;
    let (p, r, url) = (notify_key_prefix(), redis_url(), hook.url());
    let mut env = webhook_env(&url, &p);
    env.push(("REDIS_URL", r.as_str()));
    env.extend_from_slice(FAST_LIMITS);
    let s = TestServer::start(&env).await;
    let (a, ta) = s.create_user(&uname("nt_a")).await;
    let (b, tb) = s.create_user(&uname("nt_b")).await;
    let (c, _) = s.create_user(&uname("nt_c")).await; // offline, mentioned
    let (d, _) = s.create_user(&uname("nt_d")).await; // offline, not mentioned
    let room = s.create_room(&ta, "notify", &[b, c, d]).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await; // online: no job

    let m1 = send_with(&mut ca, json!({ "room_id": room, "content": "ping c", "mentions": [c] })).await;
    let mut calls = BTreeMap::new();
    for _ in 0..2 {
        let call = hook.next().await.json;
        assert_eq!(call["message_id"], m1["id"], "{call}");
        assert_eq!(call["room_id"], json!(room), "{call}");
        assert_eq!(call["sender_id"], json!(a), "{call}");
        calls.insert(call["user_id"].as_i64().unwrap_or_else(|| panic!("user_id: {call}")), call);
    }
    assert_eq!(calls.keys().copied().collect::<BTreeSet<_>>(), BTreeSet::from([c, d]), "{calls:?}");
    assert_eq!(calls[&c]["mention"], json!(true), "the mentioned member's job: {}", calls[&c]);
    assert!(
        calls[&d].get("mention").is_none_or(|m| m == &json!(false)),
        "a member who was not mentioned: {}",
        calls[&d]
    );

    // Edit, reaction, delete: room events, but not messages — no jobs.
    let mid = id_of(&m1);
    send_edit(&mut ca, mid, "ping c (edited)").await;
    ack(&mut ca, room, "edit", mid).await;
    send_react(&mut cb, mid, "👍", true).await;
    ack(&mut cb, room, "reaction", mid).await;
    send_delete(&mut ca, mid).await;
    ack(&mut ca, room, "delete", mid).await;
    let m2 = ca.send_and_echo(room, "plain follow-up").await;
    let mut users = BTreeSet::new();
    for _ in 0..2 {
        let call = hook.next().await.json;
        assert_eq!(call["message_id"], m2["id"], "only the next message creates jobs: {call}");
        assert!(call.get("mention").is_none_or(|m| m == &json!(false)), "not a mention: {call}");
        users.insert(call["user_id"].as_i64().unwrap_or_default());
    }
    assert_eq!(users, BTreeSet::from([c, d]));
    if let Some(extra) = hook.next_within(Duration::from_millis(1000)).await {
        panic!("unexpected webhook (from an edit, reaction or delete?): {}", extra.json);
    }
    redis_cleanup(&p).await;
}

/// §10 "membership is checked in the committing transaction": a `leave` that commits while a
/// message of the leaving member waits for the room's row lock. The message must not be
/// stored after the leave: it answers `unavailable` (nothing stored), and its retry with the
/// same `client_msg_id` is refused `forbidden`. The leave is written here by hand, exactly as
/// the REST handler writes it, so the test can hold its transaction open.
#[tokio::test]
async fn a_write_racing_a_leave_is_not_stored_after_it() {
    let s = TestServer::start(&[]).await;
    let (_, ta) = s.create_user(&uname("ann")).await;
    let (bob, tb) = s.create_user(&uname("bob")).await;
    let room = s.create_room(&ta, "race", &[bob]).await;
    let mut bob_ws = s.ws(&tb).await;
    bob_ws.send_and_echo(room, "before").await;

    // The leave, uncommitted: it holds the room row's lock.
    let db = s.db_client().await;
    db.batch_execute("BEGIN").await.expect("begin");
    db.execute("SELECT 1 FROM rooms WHERE id = $1 FOR NO KEY UPDATE", &[&room]).await.expect("lock");
    db.execute("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2", &[&room, &bob]).await.expect("delete");
    db.execute(
        "WITH s AS (UPDATE rooms SET last_seq = last_seq + 1, member_count = member_count - 1, \
             membership_version = membership_version + 1 WHERE id = $1 RETURNING last_seq) \
         INSERT INTO room_events (room_id, seq, kind, user_id, flag) SELECT $1, last_seq, 'member', $2, false FROM s",
        &[&room, &bob],
    )
    .await
    .expect("leave event");

    // bob's message reaches the writer, which waits for the room's lock.
    bob_ws.send_msg(room, "racing the leave", Some("race-1")).await;
    let probe = s.db_client().await;
    let p = &probe;
    eventually("the writer waits for the room lock", Duration::from_secs(10), move || async move {
        let sql = "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype IN ('transactionid', 'tuple')";
        let n: i64 = p.query_one(sql, &[]).await.expect("pg_locks").get(0);
        n > 0
    })
    .await;
    db.batch_execute("COMMIT").await.expect("commit the leave");

    let err = expect_error(&mut bob_ws, room, "unavailable", json!("race-1")).await;
    assert!(err["retry_after_ms"].as_u64().is_some(), "{err}");
    bob_ws.send_msg(room, "racing the leave", Some("race-1")).await;
    expect_error(&mut bob_ws, room, "forbidden", json!("race-1")).await;
    let stored: i64 = probe
        .query_one("SELECT count(*) FROM messages WHERE room_id = $1 AND client_msg_id = 'race-1'", &[&room])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 0, "nothing of bob's was stored after his leave");
}
