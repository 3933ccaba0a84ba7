//! Room events (SPEC §10, with the v2 rows of §4 and §5) on one node: edits, deletes, reactions,
//! replies and mentions share each room's `seq` with messages, reach every member's connections
//! in `seq` order, are refused (with `ref`) when not allowed, are replayed by `sync` and listed by
//! `GET /v1/rooms/{id}/events` as they stand now; seed clients keep working. Membership, unread
//! counts, the history object and notifications are in tests/room_membership.rs.
//!
//! Real parts only: the `livechat` binary, PostgreSQL and real WebSocket clients. Every wait is
//! bounded; nothing sleeps to synchronise.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{json, Value};

/// A message id no test ever reaches.
const UNKNOWN_ID: i64 = 999_999_999;

// --- helpers -------------------------------------------------------------------------------------

/// The integer ids in the array `v`, sorted.
fn sorted_ids(v: &Value) -> Vec<i64> {
    let mut ids: Vec<i64> = v
        .as_array()
        .unwrap_or_else(|| panic!("expected an array of ids: {v}"))
        .iter()
        .map(|x| x.as_i64().unwrap_or_else(|| panic!("expected an integer id: {x}")))
        .collect();
    ids.sort_unstable();
    ids
}

/// `reactions` of a history object as `emoji → (count, me)`.
fn reactions_map(v: &Value) -> BTreeMap<String, (i64, bool)> {
    v["reactions"]
        .as_array()
        .unwrap_or_else(|| panic!("reactions array: {v}"))
        .iter()
        .map(|r| {
            (
                r["emoji"].as_str().unwrap_or_default().to_string(),
                (r["count"].as_i64().unwrap_or(-1), r["me"].as_bool().unwrap_or(false)),
            )
        })
        .collect()
}

// --- edit --------------------------------------------------------------------------------------

/// §10 `edit`: the sender's edit reaches every member's connection (the sender's included, as
/// its acknowledgement) with `room_id`, `seq` (the room's next), `message_id`, `user_id`,
/// `content`, `edited_at`; a non-sender gets `forbidden`, an unknown or deleted message
/// `not_found`, content past `limits.content_max_chars` `too_large`, empty content
/// `bad_request` — each with `ref` = the `message_id`, and none takes a seq or reaches anyone.
#[tokio::test]
async fn edit_reaches_every_member_and_is_refused_when_not_allowed() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (a, ta) = s.create_user(&uname("ed_a")).await;
    let (b, tb) = s.create_user(&uname("ed_b")).await;
    let (c, tc) = s.create_user(&uname("ed_c")).await;
    let room = s.create_room(&ta, "edits", &[b, c]).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;
    let mut cc = s.ws_ready(&tc).await;

    let m = ca.send_and_echo(room, "original text").await;
    let mid = id_of(&m);
    for ws in [&mut cb, &mut cc] {
        assert_eq!(next_room_event(ws, room).await["id"], json!(mid));
    }

    send_edit(&mut ca, mid, "edited text").await;
    let e = next_room_event(&mut ca, room).await;
    assert_fields(
        &e,
        &json!({ "type": "edit", "room_id": room, "seq": seq_of(&m) + 1, "message_id": mid, "user_id": a,
                 "content": "edited text" }),
    );
    assert_rfc3339_utc(&e["edited_at"]);
    for (who, ws) in [("b", &mut cb), ("c", &mut cc)] {
        let got = next_room_event(ws, room).await;
        assert_eq!(got, e, "{who} gets the same edit event as the sender's acknowledgement");
    }

    // Refusals: none changes anything, takes a seq, or reaches another member.
    send_edit(&mut cb, mid, "not yours").await;
    expect_error(&mut cb, room, "forbidden", json!(mid)).await;
    send_edit(&mut ca, UNKNOWN_ID, "nothing there").await;
    expect_error(&mut ca, room, "not_found", json!(UNKNOWN_ID)).await;
    send_edit(&mut ca, mid, &"x".repeat(4097)).await;
    expect_error(&mut ca, room, "too_large", json!(mid)).await;
    for empty in ["", "   \n\t "] {
        send_edit(&mut ca, mid, empty).await;
        expect_error(&mut ca, room, "bad_request", json!(mid)).await;
    }
    // A deleted message cannot be edited.
    let gone = ca.send_and_echo(room, "soon gone").await;
    let gone_id = id_of(&gone);
    send_delete(&mut ca, gone_id).await;
    let del = ack(&mut ca, room, "delete", gone_id).await;
    send_edit(&mut ca, gone_id, "resurrected").await;
    expect_error(&mut ca, room, "not_found", json!(gone_id)).await;

    // The other members saw exactly: the second message and its delete, nothing in between.
    for (who, ws) in [("b", &mut cb), ("c", &mut cc)] {
        let got = next_room_events(ws, room, 2).await;
        assert_eq!(types(&got), ["message", "delete"], "{who}: {got:?}");
        assert_eq!(seqs(&got), [seq_of(&e) + 1, seq_of(&e) + 2], "{who}: no seq taken by a refused edit");
        let extra = room_events_of(ws.sync_barrier().await, room);
        assert!(extra.is_empty(), "{who}: nothing else in the room: {extra:?}");
    }
    assert_eq!(s.last_seq(&ta, room).await, seq_of(&del));

    let h = history_item(&s, &ta, room, mid).await;
    assert_eq!(h["content"], json!("edited text"), "history shows the edited content: {h}");
    assert_rfc3339_utc(&h["edited_at"]);
    assert_eq!(h["deleted"], json!(false), "{h}");
    assert_eq!(h["seq"], m["seq"], "an edit keeps the message's own seq: {h}");
}

// --- delete ------------------------------------------------------------------------------------

/// §10 `delete` over WebSocket: only the sender may delete (`forbidden` for another member);
/// every member gets `delete` {`room_id`, `seq`, `message_id`, `user_id`}; a second delete is
/// `not_found`; history keeps a tombstone: `content` "" and `deleted` true.
#[tokio::test]
async fn delete_over_ws_by_sender_only_leaves_a_tombstone() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (a, ta) = s.create_user(&uname("dl_a")).await;
    let (b, tb) = s.create_user(&uname("dl_b")).await;
    let room = s.create_room(&ta, "deletes", &[b]).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;

    let m = ca.send_and_echo(room, "regrettable words").await;
    let mid = id_of(&m);
    assert_eq!(next_room_event(&mut cb, room).await["id"], json!(mid));

    send_delete(&mut cb, mid).await;
    expect_error(&mut cb, room, "forbidden", json!(mid)).await;

    send_delete(&mut ca, mid).await;
    let d = next_room_event(&mut ca, room).await;
    assert_fields(
        &d,
        &json!({ "type": "delete", "room_id": room, "seq": seq_of(&m) + 1, "message_id": mid, "user_id": a }),
    );
    assert_eq!(next_room_event(&mut cb, room).await, d, "b gets the same delete event");

    send_delete(&mut ca, mid).await;
    expect_error(&mut ca, room, "not_found", json!(mid)).await;
    send_delete(&mut ca, UNKNOWN_ID).await;
    expect_error(&mut ca, room, "not_found", json!(UNKNOWN_ID)).await;
    let extra = room_events_of(cb.sync_barrier().await, room);
    assert!(extra.is_empty(), "refused deletes send nothing to others: {extra:?}");
    assert_eq!(s.last_seq(&ta, room).await, seq_of(&d), "refused deletes take no seq");

    let h = history_item(&s, &tb, room, mid).await;
    assert_v2_history_message(&h);
    assert_eq!(h["content"], json!(""), "erased content: {h}");
    assert_eq!(h["deleted"], json!(true), "{h}");
    let raw = s.get_json(&format!("/chat/history?room_id={room}&limit=50"), &tb).await;
    assert!(!raw.text.contains("regrettable"), "the erased text is never sent again: {}", raw.text);
}

/// §4 `DELETE /v1/messages/{id}`: the sender or the admin → 200 with the `delete` event (the
/// same one the members receive); another member → 403; an unknown or already deleted id → 404.
#[tokio::test]
async fn delete_via_rest_by_sender_or_admin() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (a, ta) = s.create_user(&uname("rd_a")).await;
    let (b, tb) = s.create_user(&uname("rd_b")).await;
    let room = s.create_room(&ta, "rest-deletes", &[b]).await;
    let admin = s.admin_token.clone();
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;

    let m1 = ca.send_and_echo(room, "sender deletes this").await;
    let m2 = ca.send_and_echo(room, "a moderator deletes this").await;
    let (id1, id2) = (id_of(&m1), id_of(&m2));
    next_room_events(&mut cb, room, 2).await;

    // Another member: refused, nothing happens.
    s.delete(&format!("/v1/messages/{id1}"), &tb).await.assert_error(403, "forbidden");
    // The sender: 200 with the delete event, which every member receives.
    let r = s.delete(&format!("/v1/messages/{id1}"), &ta).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_fields(
        &r.body,
        &json!({ "type": "delete", "room_id": room, "seq": seq_of(&m2) + 1, "message_id": id1, "user_id": a }),
    );
    for (who, ws) in [("a", &mut ca), ("b", &mut cb)] {
        let got = next_room_event(ws, room).await;
        assert_eq!(got, r.body, "{who} gets the event the DELETE answered with");
    }
    s.delete(&format!("/v1/messages/{id1}"), &ta).await.assert_error(404, "not_found");

    // The admin: 200 with the delete event (its user_id is not specified for the admin API).
    let r = s.delete(&format!("/v1/messages/{id2}"), &admin).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_fields(&r.body, &json!({ "type": "delete", "room_id": room, "seq": seq_of(&m2) + 2, "message_id": id2 }));
    assert!(r.body.get("user_id").is_some(), "delete.user_id present: {r:?}");
    for (who, ws) in [("a", &mut ca), ("b", &mut cb)] {
        let got = next_room_event(ws, room).await;
        assert_eq!(got, r.body, "{who} gets the admin's delete event");
    }

    // Unknown ids.
    s.delete(&format!("/v1/messages/{UNKNOWN_ID}"), &admin).await.assert_error(404, "not_found");
    s.delete(&format!("/v1/messages/{UNKNOWN_ID}"), &ta).await.assert_error(404, "not_found");
    let anon = s.request(reqwest::Method::DELETE, &format!("/v1/messages/{id2}"), None, None).await;
    anon.assert_error(401, "unauthorized");

    for id in [id1, id2] {
        let h = history_item(&s, &tb, room, id).await;
        assert_eq!((h["content"].clone(), h["deleted"].clone()), (json!(""), json!(true)), "{h}");
    }
    assert_eq!(s.last_seq(&ta, room).await, seq_of(&m2) + 2, "refused deletes took no seq");
}

// --- reactions ---------------------------------------------------------------------------------

/// §10 `react`: adding and removing reach every member as `reaction` {`room_id`, `seq`,
/// `message_id`, `user_id`, `emoji`, `on`}; an add that exists or a remove that does not
/// sends nothing and takes no seq (the next room event is the following message); history's
/// `reactions` lists `{emoji, count, me}` with `me` true only for the caller's own.
#[tokio::test]
async fn reactions_add_remove_noops_and_history() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (a, ta) = s.create_user(&uname("re_a")).await;
    let (b, tb) = s.create_user(&uname("re_b")).await;
    let (c, tc) = s.create_user(&uname("re_c")).await;
    let room = s.create_room(&ta, "reactions", &[b, c]).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;

    let m = ca.send_and_echo(room, "react to me").await;
    let mid = id_of(&m);
    assert_eq!(next_room_event(&mut cb, room).await["id"], json!(mid));

    // b adds 👍: both connections get it.
    send_react(&mut cb, mid, "👍", true).await;
    let r1 = next_room_event(&mut cb, room).await;
    assert_fields(
        &r1,
        &json!({ "type": "reaction", "room_id": room, "seq": seq_of(&m) + 1, "message_id": mid, "user_id": b,
                 "emoji": "👍", "on": true }),
    );
    assert_eq!(next_room_event(&mut ca, room).await, r1);

    // b adds 👍 again: nothing. The next room event on either connection is b's next message.
    send_react(&mut cb, mid, "👍", true).await;
    cb.send_msg(room, "after the repeated add", Some("noop-1")).await;
    for (who, ws) in [("b", &mut cb), ("a", &mut ca)] {
        let next = next_room_event(ws, room).await;
        assert_eq!((&next["type"], &next["client_msg_id"]), (&json!("message"), &json!("noop-1")), "{who}: {next}");
        assert_eq!(seq_of(&next), seq_of(&r1) + 1, "{who}: the repeated add took no seq");
    }
    // a removes 🎉, which nobody added: nothing either.
    send_react(&mut ca, mid, "🎉", false).await;
    ca.send_msg(room, "after the missing remove", Some("noop-2")).await;
    for (who, ws) in [("a", &mut ca), ("b", &mut cb)] {
        let next = next_room_event(ws, room).await;
        assert_eq!((&next["type"], &next["client_msg_id"]), (&json!("message"), &json!("noop-2")), "{who}: {next}");
        assert_eq!(seq_of(&next), seq_of(&r1) + 2, "{who}: the missing remove took no seq");
    }

    // a adds 👍 and b adds ❤; history as seen by each member.
    send_react(&mut ca, mid, "👍", true).await;
    let ra = ack(&mut ca, room, "reaction", mid).await;
    assert_fields(&ra, &json!({ "user_id": a, "emoji": "👍", "on": true, "seq": seq_of(&r1) + 3 }));
    send_react(&mut cb, mid, "❤", true).await;
    let rb = next_room_events(&mut cb, room, 2).await;
    assert_eq!(rb[0], ra, "b gets a's reaction");
    assert_fields(&rb[1], &json!({ "type": "reaction", "user_id": b, "emoji": "❤", "on": true }));
    let expect = |me_thumb: bool, me_heart: bool| {
        BTreeMap::from([("👍".to_string(), (2, me_thumb)), ("❤".to_string(), (1, me_heart))])
    };
    for (who, tok, want) in
        [("a", &ta, expect(true, false)), ("b", &tb, expect(true, true)), ("c", &tc, expect(false, false))]
    {
        let h = history_item(&s, tok, room, mid).await;
        assert_v2_history_message(&h);
        assert_eq!(reactions_map(&h), want, "reactions as {who} sees them: {h}");
    }

    // b removes 👍: everyone gets `on` false; the count drops.
    send_react(&mut cb, mid, "👍", false).await;
    let off = next_room_event(&mut cb, room).await;
    assert_fields(
        &off,
        &json!({ "type": "reaction", "room_id": room, "message_id": mid, "user_id": b, "emoji": "👍", "on": false }),
    );
    assert_eq!(seq_of(&off), seq_of(&rb[1]) + 1, "{off}");
    let got = next_room_events(&mut ca, room, 2).await;
    assert_eq!(got[1], off, "a gets the removal");
    let h = history_item(&s, &tb, room, mid).await;
    assert_eq!(
        reactions_map(&h),
        BTreeMap::from([("👍".to_string(), (1, false)), ("❤".to_string(), (1, true))]),
        "after b's removal: {h}"
    );
    let _ = c;
}

/// §10 `react` validation: `emoji` is 1..=32 bytes of UTF-8 without whitespace (empty, with a
/// space or tab, 33 bytes, or 34 bytes in 17 chars → `bad_request` with `ref` = `message_id`;
/// exactly 32 bytes is accepted); an unknown message → `not_found`.
#[tokio::test]
async fn reaction_emoji_is_validated() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (_, ta) = s.create_user(&uname("rv_a")).await;
    let room = s.create_room(&ta, "emoji", &[]).await;
    let mut ca = s.ws_ready(&ta).await;
    let m = ca.send_and_echo(room, "validate").await;
    let mid = id_of(&m);

    let long_ascii = "x".repeat(33);
    let long_multibyte = "é".repeat(17); // 17 chars, 34 bytes
    for bad in ["", "a b", "👍 ", "\t", "x\ny", long_ascii.as_str(), long_multibyte.as_str()] {
        send_react(&mut ca, mid, bad, true).await;
        let e = expect_error(&mut ca, room, "bad_request", json!(mid)).await;
        assert!(e["message"].is_string(), "{bad:?}: {e}");
    }
    send_react(&mut ca, UNKNOWN_ID, "👍", true).await;
    expect_error(&mut ca, room, "not_found", json!(UNKNOWN_ID)).await;

    let max = "é".repeat(16); // 32 bytes
    send_react(&mut ca, mid, &max, true).await;
    let r = next_room_event(&mut ca, room).await;
    assert_fields(&r, &json!({ "type": "reaction", "emoji": max, "on": true, "seq": seq_of(&m) + 1 }));
    let h = history_item(&s, &ta, room, mid).await;
    assert_eq!(reactions_map(&h), BTreeMap::from([(max.clone(), (1, true))]), "only the valid one stored: {h}");
}

/// §7 `limits.reactions_per_message` (here 2): a third distinct emoji on one message is
/// `too_large`; another user's reaction with an emoji already there is still accepted.
#[tokio::test]
async fn reactions_past_the_limit_are_too_large() {
    let mut env = FAST_LIMITS.to_vec();
    env.push(("LIVECHAT_LIMITS__REACTIONS_PER_MESSAGE", "2"));
    let s = TestServer::start(&env).await;
    let (_, ta) = s.create_user(&uname("rl_a")).await;
    let (b, tb) = s.create_user(&uname("rl_b")).await;
    let room = s.create_room(&ta, "limit", &[b]).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;
    let m = ca.send_and_echo(room, "popular").await;
    let mid = id_of(&m);

    for emoji in ["👍", "🎉"] {
        send_react(&mut ca, mid, emoji, true).await;
        let r = ack(&mut ca, room, "reaction", mid).await;
        assert_eq!(r["emoji"], json!(emoji), "{r}");
    }
    send_react(&mut ca, mid, "🚀", true).await;
    expect_error(&mut ca, room, "too_large", json!(mid)).await;
    // b has seen the message and the two reactions; a third distinct emoji from b is refused too.
    assert_eq!(types(&next_room_events(&mut cb, room, 3).await), ["message", "reaction", "reaction"]);
    send_react(&mut cb, mid, "🔥", true).await;
    expect_error(&mut cb, room, "too_large", json!(mid)).await;
    // Not a new distinct emoji: accepted.
    send_react(&mut cb, mid, "👍", true).await;
    let r = ack(&mut cb, room, "reaction", mid).await;
    assert_eq!(seq_of(&r), seq_of(&m) + 3, "the refused ones took no seq: {r}");

    let h = history_item(&s, &tb, room, mid).await;
    assert_eq!(
        reactions_map(&h),
        BTreeMap::from([("👍".to_string(), (2, true)), ("🎉".to_string(), (1, false))]),
        "{h}"
    );
}

// --- replies and mentions ----------------------------------------------------------------------

/// §5 `reply_to` / §10: a reply to a message of the same room carries `reply_to` in every
/// copy; a reply to another room's message or an unknown id is `not_found` (`ref` =
/// `client_msg_id`); the parent's history object counts `reply_count`;
/// `GET /chat/history?room_id=R&thread=ID` lists only the replies, newest first.
#[tokio::test]
async fn replies_threads_and_reply_to_validation() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (_, ta) = s.create_user(&uname("rp_a")).await;
    let (b, tb) = s.create_user(&uname("rp_b")).await;
    let room = s.create_room(&ta, "threads", &[b]).await;
    let other = s.create_room(&ta, "elsewhere", &[]).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;

    let parent = ca.send_and_echo(room, "parent").await;
    let pid = id_of(&parent);
    assert_eq!(parent["reply_to"], Value::Null, "a plain message has reply_to null: {parent}");
    let unrelated = ca.send_and_echo(room, "not a reply").await;
    let foreign = ca.send_and_echo(other, "in another room").await;

    let r1 = send_with(&mut ca, json!({ "room_id": room, "content": "first reply", "reply_to": pid })).await;
    assert_eq!(r1["reply_to"], json!(pid), "echo carries reply_to: {r1}");
    // Every member's copy carries it: b gets the parent, the unrelated message, then the reply.
    let got = next_room_events(&mut cb, room, 3).await;
    assert_eq!(got[0]["reply_to"], Value::Null, "{}", got[0]);
    assert_eq!(got[2]["id"], r1["id"]);
    assert_eq!(got[2]["reply_to"], json!(pid), "b's copy of a's reply: {}", got[2]);
    let r2 = send_with(&mut cb, json!({ "room_id": room, "content": "second reply", "reply_to": pid })).await;
    assert_eq!(r2["reply_to"], json!(pid), "{r2}");
    let got = next_room_event(&mut ca, room).await;
    assert_eq!((&got["id"], &got["reply_to"]), (&r2["id"], &json!(pid)), "a's copy of b's reply: {got}");

    // reply_to outside the room, or unknown: not_found, nothing stored.
    let before = s.last_seq(&ta, room).await;
    let bad = json!({ "room_id": room, "content": "cross-room reply", "reply_to": id_of(&foreign) });
    send_expecting_error(&mut ca, bad, room, "not_found").await;
    let bad = json!({ "room_id": room, "content": "reply to nothing", "reply_to": UNKNOWN_ID });
    send_expecting_error(&mut ca, bad, room, "not_found").await;
    assert_eq!(s.last_seq(&ta, room).await, before, "refused replies took no seq");

    let h = history_item(&s, &tb, room, pid).await;
    assert_v2_history_message(&h);
    assert_eq!(h["reply_count"], json!(2), "{h}");
    assert_eq!(h["reply_to"], Value::Null, "{h}");
    let h1 = history_item(&s, &tb, room, id_of(&r1)).await;
    assert_eq!(h1["reply_to"], json!(pid), "{h1}");
    assert_eq!(h1["reply_count"], json!(0), "{h1}");
    assert_eq!(history_item(&s, &tb, room, id_of(&unrelated)).await["reply_count"], json!(0));

    let t = s.get_json(&format!("/chat/history?room_id={room}&thread={pid}"), &tb).await;
    assert_eq!(t.status, 200, "{t:?}");
    let thread = t.body.as_array().unwrap_or_else(|| panic!("thread is an array: {t:?}"));
    let ids: Vec<Value> = thread.iter().map(|m| m["id"].clone()).collect();
    assert_eq!(ids, vec![r2["id"].clone(), r1["id"].clone()], "only the replies, newest first: {t:?}");
    for m in thread {
        assert_v2_history_message(m);
        assert_eq!(m["reply_to"], json!(pid), "{m}");
    }
    let t = s.get_json(&format!("/chat/history?room_id={room}&thread={}", id_of(&unrelated)), &tb).await;
    assert_eq!((t.status, &t.body), (200, &json!([])), "a message without replies has an empty thread: {t:?}");
}

/// §5/§10 `mentions`: only members of the room are kept (a non-member's id is dropped from
/// every copy and from history); more than 50 ids is an `error` (`bad_request` or `too_large`)
/// and stores nothing; exactly 50 is accepted.
#[tokio::test]
async fn mentions_keep_only_members_and_are_bounded() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (_, ta) = s.create_user(&uname("mn_a")).await;
    let (b, tb) = s.create_user(&uname("mn_b")).await;
    let (c, _) = s.create_user(&uname("mn_c")).await;
    let (d, _) = s.create_user(&uname("mn_d")).await; // in room 1 only, not in `room`
    let room = s.create_room(&ta, "mentions", &[b, c]).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;

    let plain = ca.send_and_echo(room, "no mentions").await;
    assert_eq!(plain["mentions"], json!([]), "mentions is an empty list when none: {plain}");

    let m = send_with(&mut ca, json!({ "room_id": room, "content": "hi b and c", "mentions": [b, d, c] })).await;
    let mut want = vec![b, c];
    want.sort_unstable();
    assert_eq!(sorted_ids(&m["mentions"]), want, "the non-member {d} is dropped: {m}");
    let got = next_room_events(&mut cb, room, 2).await;
    assert_eq!(got[1]["id"], m["id"]);
    assert_eq!(sorted_ids(&got[1]["mentions"]), want, "b's copy: {}", got[1]);
    let h = history_item(&s, &tb, room, id_of(&m)).await;
    assert_eq!(sorted_ids(&h["mentions"]), want, "history: {h}");

    // 51 ids: refused, nothing stored.
    let before = s.last_seq(&ta, room).await;
    let mut many: Vec<i64> = vec![b];
    many.extend(100_000..100_050);
    assert_eq!(many.len(), 51);
    let cid = format!("c-{}", random_hex(8));
    ca.send_json(json!({ "type": "message", "room_id": room, "content": "too many", "mentions": many,
                         "client_msg_id": cid }))
        .await;
    let e = ca.recv_until("the error for 51 mentions", |v| v["type"] == "error" || is_room_event_of(v, room)).await;
    assert_eq!(e["type"], "error", "51 mentions must be refused: {e}");
    assert!(e["code"] == json!("bad_request") || e["code"] == json!("too_large"), "{e}");
    assert_eq!(e["ref"], json!(cid), "{e}");
    assert_eq!(s.last_seq(&ta, room).await, before, "nothing stored");

    // Exactly 50: accepted, the non-members dropped.
    let fifty: Vec<i64> = many[..50].to_vec();
    let ok = send_with(&mut ca, json!({ "room_id": room, "content": "fifty", "mentions": fifty })).await;
    assert_eq!(sorted_ids(&ok["mentions"]), vec![b], "{ok}");
    assert_eq!(seq_of(&ok), before + 1, "{ok}");
}

// --- one log: seq sharing, sync replay, the events listing -------------------------------------

/// §10: messages, edits, reactions, deletes and joins take seqs from one counter per room (no
/// gaps across kinds; `last_seq` is the last event's); live delivery is in that order; `sync`
/// from 0 replays every event once, in order, then `synced` with the last seq, each as it
/// stands now (an edited message with its current content, a deleted one with "" — erased or
/// replaced text never appears); `GET /v1/rooms/{id}/events` lists the same objects oldest
/// first, pages by `after_seq`, refuses `limit` 0 and 501 (400) and non-members (403).
#[tokio::test]
async fn all_room_events_share_one_seq_and_replay_as_they_stand() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (a, ta) = s.create_user(&uname("lg_a")).await;
    let (b, tb) = s.create_user(&uname("lg_b")).await;
    let (c, tc) = s.create_user(&uname("lg_c")).await;
    let (_, tx) = s.create_user(&uname("lg_x")).await;
    let room = s.create_room(&ta, "one-log", &[b, c]).await;
    let base = s.last_seq(&ta, room).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;
    let mut watcher = s.ws_ready(&tc).await;

    let m1 = ca.send_and_echo(room, "first original").await;
    let id1 = id_of(&m1);
    send_edit(&mut ca, id1, "first edited").await;
    let e1 = ack(&mut ca, room, "edit", id1).await;
    send_react(&mut cb, id1, "👍", true).await;
    let r1 = ack(&mut cb, room, "reaction", id1).await;
    let m2 = ca.send_and_echo(room, "doomed secret").await;
    let id2 = id_of(&m2);
    send_edit(&mut ca, id2, "doomed rewrite").await;
    let e2 = ack(&mut ca, room, "edit", id2).await;
    send_delete(&mut ca, id2).await;
    let d2 = ack(&mut ca, room, "delete", id2).await;
    let m3 = ca.send_and_echo(room, "third").await;
    let acks = [&m1, &e1, &r1, &m2, &e2, &d2, &m3];
    let want_seqs: Vec<i64> = ((base + 1)..=(base + 7)).collect();
    assert_eq!(acks.iter().map(|v| seq_of(v)).collect::<Vec<_>>(), want_seqs, "one counter, no gaps: {acks:?}");
    let want_types = ["message", "edit", "reaction", "message", "edit", "delete", "message"];
    assert_eq!(s.last_seq(&tc, room).await, base + 7, "last_seq is the last event's seq");

    // Live, on a member that only watched: the same events in seq order.
    let live = next_room_events(&mut watcher, room, 7).await;
    assert_eq!(seqs(&live), want_seqs);
    assert_eq!(types(&live), want_types);
    for (got, sent) in live.iter().zip(acks) {
        assert_eq!(got["seq"], sent["seq"]);
        assert_eq!(got["user_id"], sent["user_id"], "{got}");
    }
    assert_fields(&live[2], &json!({ "message_id": id1, "user_id": b, "emoji": "👍", "on": true }));

    // Replay from 0 on a fresh connection: joins, then the seven, each once, as they stand now.
    let mut fresh = s.ws(&tc).await;
    let (replay, synced) = fresh.sync_replay(json!({ (room.to_string()): 0 })).await;
    let replay = room_events_of(replay, room);
    assert_eq!(seqs(&replay), (1..=base + 7).collect::<Vec<_>>(), "every event once, in order: {replay:?}");
    assert!(types(&replay[..base as usize]).iter().all(|t| t == "member"), "the joins first: {replay:?}");
    assert_eq!(types(&replay[base as usize..]), want_types);
    assert_eq!(synced["rooms"], json!({ (room.to_string()): base + 7 }), "{synced}");
    assert_eq!(synced["more"], json!(false), "{synced}");
    let tail = &replay[base as usize..];
    assert_message_event(&tail[0]);
    assert_eq!((&tail[0]["id"], &tail[0]["content"]), (&json!(id1), &json!("first edited")), "current content");
    assert_eq!((&tail[3]["id"], &tail[3]["content"]), (&json!(id2), &json!("")), "deleted: content \"\"");
    assert_eq!(tail[3]["seq"], m2["seq"], "a message keeps its own seq");
    assert_fields(&tail[5], &json!({ "type": "delete", "message_id": id2, "user_id": a }));
    assert_eq!(tail[6]["content"], json!("third"));
    let text = serde_json::to_string(&replay).unwrap();
    assert!(!text.contains("first original"), "replaced text must not be replayed: {text}");
    assert!(!text.contains("doomed"), "erased content is never sent again: {text}");

    // A partial replay (on another fresh connection: a connection is never sent an event twice).
    let mut fresh2 = s.ws(&tc).await;
    let (part, synced) = fresh2.sync_replay(json!({ (room.to_string()): base + 3 })).await;
    let part = room_events_of(part, room);
    assert_eq!(seqs(&part), ((base + 4)..=(base + 7)).collect::<Vec<_>>());
    assert_eq!(synced["rooms"][room.to_string()], json!(base + 7));

    // The events listing: the same objects, oldest first.
    let listed = events_page(&s, &tb, room, 0, 100).await;
    assert_eq!(listed, replay, "GET /v1/rooms/{room}/events lists what sync replays");
    assert!(listed.iter().all(|v| v["type"].is_string()), "each with its type");
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = events_page(&s, &tb, room, after, 3).await;
        assert!(page.len() <= 3, "limit honoured: {page:?}");
        if page.is_empty() {
            break;
        }
        assert!(page.iter().all(|v| seq_of(v) > after), "after_seq honoured: {page:?}");
        after = seq_of(page.last().unwrap());
        paged.extend(page);
    }
    assert_eq!(paged, listed, "paging by after_seq yields every event once");
    assert_eq!(events_page(&s, &tb, room, base + 5, 500).await, listed[(base + 5) as usize..].to_vec());
    assert_eq!(events_page(&s, &tb, room, base + 7, 10).await, Vec::<Value>::new(), "nothing after the last");
    for bad in ["0", "501"] {
        s.get_json(&format!("/v1/rooms/{room}/events?after_seq=0&limit={bad}"), &tb)
            .await
            .assert_error(400, "bad_request");
    }
    s.get_json(&format!("/v1/rooms/{room}/events?after_seq=0&limit=10"), &tx).await.assert_error(403, "forbidden");

    // Nothing more arrived live on the watcher.
    let extra = room_events_of(watcher.sync_barrier().await, room);
    assert!(extra.is_empty(), "{extra:?}");
}

// --- seed clients --------------------------------------------------------------------------------

/// §5: a seed client that sends only `{"type":"message","content":...}` (no `room_id`, no
/// `client_msg_id`) still posts to room 1 and gets its echo with the v1 fields (plus
/// `reply_to` null and `mentions` []); another member gets the same message.
#[tokio::test]
async fn seed_client_without_room_id_still_works() {
    let s = TestServer::start(&[]).await;
    let (a, ta) = s.create_user(&uname("seed_a")).await;
    let (_, tb) = s.create_user(&uname("seed_b")).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;

    ca.send_json(json!({ "type": "message", "content": "hello from the seed page" })).await;
    let echo = ca.recv_type("message").await;
    assert_message_event(&echo);
    assert_fields(
        &echo,
        &json!({ "room_id": 1, "sender_id": a, "content": "hello from the seed page", "client_msg_id": null,
                 "reply_to": null, "mentions": [] }),
    );
    let got = cb.recv_type("message").await;
    for k in ["id", "room_id", "seq", "sender_id", "content", "timestamp", "client_msg_id"] {
        assert_eq!(got[k], echo[k], "field {k} must match the echo");
    }
    assert_eq!(seq_of(&echo), s.last_seq(&ta, 1).await, "room 1's latest event");
    let h = history_item(&s, &ta, 1, id_of(&echo)).await;
    assert_v2_history_message(&h);
    assert_eq!(h["content"], json!("hello from the seed page"));
}
