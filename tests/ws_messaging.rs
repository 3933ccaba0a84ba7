//! WebSocket API (docs/asyncapi.yaml): upgrade auth, messages, idempotency, errors,
//! typing, receipts, presence, membership changes, sync, ordering.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use serde_json::{json, Value};

// --- upgrade -------------------------------------------------------------------------------

#[track_caller]
fn assert_upgrade_refused(r: Result<WsClient, WsConnectError>, status: u16, what: &str) -> Value {
    match r {
        Ok(_) => panic!("{what}: the upgrade must be refused with {status}, but a socket opened"),
        Err(e) => {
            assert_eq!(e.status(), Some(status), "{what}: {e:?}");
            e.body_json()
        }
    }
}

#[tokio::test]
async fn upgrade_without_or_with_bad_token_is_401_json() {
    let s = TestServer::start(&[]).await;
    let (uid, _) = s.create_user("up").await;
    let base = format!("ws://{}/ws/chat", s.addr);
    let expired = s.mint_token(uid, -30);
    let wrong_sig = mint_token("wrong-secret", &uid.to_string(), 3600);
    let non_numeric_sub = mint_token(&s.jwt_secret, "bob", 3600);
    for (what, url) in [
        ("no token", base.clone()),
        ("garbage token", format!("{base}?token=garbage")),
        ("expired token", format!("{base}?token={expired}")),
        ("bad signature", format!("{base}?token={wrong_sig}")),
        ("non-numeric sub", format!("{base}?token={non_numeric_sub}")),
    ] {
        let body = assert_upgrade_refused(WsClient::connect(&url).await, 401, what);
        assert_eq!(body["error"]["code"], json!("unauthorized"), "{what}: JSON error body: {body}");
    }
    // Bad bearer header is refused too.
    let r = WsClient::connect_with_headers(&base, &[("authorization", "Bearer garbage")]).await;
    assert_upgrade_refused(r, 401, "bad Authorization header");
}

#[tokio::test]
async fn upgrade_with_authorization_header_works() {
    let s = TestServer::start(&[]).await;
    let (uid, token) = s.create_user("hdr").await;
    let url = format!("ws://{}/ws/chat", s.addr);
    let mut c = WsClient::connect_with_headers(&url, &[("authorization", &format!("Bearer {token}"))])
        .await
        .expect("Authorization: Bearer must authenticate the upgrade");
    let e = c.send_and_echo(1, "via header").await;
    assert_eq!(e["sender_id"], json!(uid));
}

#[tokio::test]
async fn disallowed_origin_is_403() {
    let s = TestServer::start(&[("LIVECHAT_ALLOWED_ORIGINS", "http://good.example")]).await;
    let (_, token) = s.create_user("orig").await;
    let url = s.ws_url(&token);
    assert_upgrade_refused(
        WsClient::connect_with_headers(&url, &[("origin", "http://evil.example")]).await,
        403,
        "evil origin",
    );
    let mut ok = WsClient::connect_with_headers(&url, &[("origin", "http://good.example")])
        .await
        .expect("allowed origin upgrades");
    ok.send_and_echo(1, "good origin").await;
    // No Origin header (non-browser client) is allowed.
    let mut none = WsClient::connect(&url).await.expect("no Origin header upgrades");
    none.send_and_echo(1, "no origin").await;
}

// --- messages ------------------------------------------------------------------------------

#[tokio::test]
async fn message_echo_and_delivery_with_all_fields() {
    let s = TestServer::start(&[]).await;
    let (a, ta) = s.create_user("alice").await;
    let (_b, tb) = s.create_user("bob").await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;
    // Room 1's events so far (the users' joins, §10): the message takes the next seq.
    let base = s.last_seq(&ta, 1).await;

    // room_id omitted → room 1.
    ca.send_json(json!({ "type": "message", "content": "hello", "client_msg_id": "c1" })).await;
    let echo = ca.recv_type("message").await;
    assert_message_event(&echo);
    assert_eq!(echo["room_id"], json!(1));
    assert_eq!(echo["seq"], json!(base + 1));
    assert_eq!(echo["sender_id"], json!(a));
    assert_eq!(echo["content"], json!("hello"));
    assert_eq!(echo["client_msg_id"], json!("c1"));

    let got = cb.recv_type("message").await;
    assert_message_event(&got);
    for k in ["id", "room_id", "seq", "sender_id", "content", "timestamp", "client_msg_id"] {
        assert_eq!(got[k], echo[k], "field {k} must match the echo");
    }

    // Without client_msg_id → null; sender_id equal to the token's user is accepted.
    ca.send_json(json!({ "type": "message", "room_id": 1, "content": "two", "sender_id": a })).await;
    let e2 = ca.recv_type("message").await;
    assert_eq!(e2["client_msg_id"], Value::Null);
    assert_eq!(e2["seq"], json!(base + 2));
    assert!(e2["id"].as_i64().unwrap() > echo["id"].as_i64().unwrap(), "ids increase");
    let g2 = cb.recv_type("message").await;
    assert_eq!(g2["id"], e2["id"]);

    // Durable before visible: the echoed message is in history.
    let h = s.history(&ta, 1, 10).await;
    assert_eq!(h.len(), 2);
    assert_eq!(h[1]["id"], echo["id"]);
    let ts = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("timestamp")).expect("RFC 3339").timestamp_millis()
    };
    assert!((ts(&h[1]["timestamp"]) - ts(&echo["timestamp"])).abs() <= 1, "same instant in history and echo");
}

#[tokio::test]
async fn seq_follows_send_order_on_one_connection() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (_, ta) = s.create_user("order").await;
    let mut c = s.ws(&ta).await;
    let base = s.last_seq(&ta, 1).await;
    for i in 0..20 {
        c.send_msg(1, &format!("n{i}"), Some(&format!("o{i}"))).await;
    }
    for i in 0..20 {
        let e = c.recv_type("message").await;
        assert_eq!(e["client_msg_id"], json!(format!("o{i}")), "echoes arrive in send order");
        assert_eq!(e["seq"], json!(base + i + 1), "seq {} for the {}th message: {e}", base + i + 1, i);
    }
}

/// With `storage.batch_max` at 4 a burst fills batch after batch, so each batch is reported
/// while the next one commits (the writer's overlap): echoes, deliveries and a repeat of a
/// stored key still come in commit order, each seq once.
#[tokio::test]
async fn backlogged_batches_are_reported_in_commit_order() {
    let small_batches = [("LIVECHAT_STORAGE__BATCH_MAX", "4")];
    let s = TestServer::start(&[FAST_LIMITS, &small_batches[..]].concat()).await;
    let (_, ta) = s.create_user("burst_a").await;
    let (_, tb) = s.create_user("burst_b").await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;
    let base = s.last_seq(&ta, 1).await;
    const N: i64 = 200;
    for i in 0..N {
        ca.send_msg(1, &format!("b{i}"), Some(&format!("k{i}"))).await;
    }
    ca.send_msg(1, "resent", Some("k3")).await;
    for i in 0..N {
        let e = ca.recv_type("message").await;
        assert_eq!((&e["client_msg_id"], &e["seq"]), (&json!(format!("k{i}")), &json!(base + i + 1)), "echo {i}");
        let g = cb.recv_type("message").await;
        assert_eq!(g["seq"], json!(base + i + 1), "delivery {i}: {g}");
    }
    let again = ca.recv_type("message").await;
    assert_eq!((&again["seq"], &again["content"]), (&json!(base + 4), &json!("b3")), "the stored message answers");
    assert_eq!(s.last_seq(&ta, 1).await, base + N, "the repeat took no seq");
}

#[tokio::test]
async fn idempotent_client_msg_id() {
    let s = TestServer::start(&[]).await;
    let (_, ta) = s.create_user("idem_a").await;
    let (_, tb) = s.create_user("idem_b").await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;

    ca.send_msg(1, "once", Some("same-id")).await;
    let first = ca.recv_type("message").await;
    let got = cb.recv_type("message").await;
    assert_eq!(got["id"], first["id"]);

    ca.send_msg(1, "once", Some("same-id")).await;
    let again = ca.recv_type("message").await;
    assert_eq!(again["id"], first["id"], "retry gets the original id");
    assert_eq!(again["seq"], first["seq"], "retry gets the original seq");
    assert_eq!(again["client_msg_id"], json!("same-id"));
    // A resend that carries something else is still answered with the stored message.
    ca.send_msg(1, "other text", Some("same-id")).await;
    let changed = ca.recv_type("message").await;
    assert_eq!((&changed["id"], &changed["seq"]), (&first["id"], &first["seq"]));
    assert_eq!(changed["content"], json!("once"), "the stored content answers: {changed}");

    // Other members do not get it twice: bob's next message is the next real one.
    let next = ca.send_and_echo(1, "next").await;
    assert_eq!(next["seq"], json!(first["seq"].as_i64().unwrap() + 1), "no seq consumed by the retry");
    let got = cb.recv_type("message").await;
    assert_eq!(got["id"], next["id"], "bob must not receive the duplicate");

    let h = s.history(&ta, 1, 100).await;
    let n = h.iter().filter(|m| m["client_msg_id"] == json!("same-id")).count();
    assert_eq!(n, 1, "stored once: {h:?}");
    assert_eq!(h.len(), 2);

    // Another user may use the same client_msg_id: it is per sender.
    cb.send_msg(1, "bob's", Some("same-id")).await;
    let eb = cb.recv_type("message").await;
    assert_ne!(eb["id"], first["id"], "(sender, client_msg_id) is the key");
}

#[tokio::test]
async fn sender_id_mismatch_is_forbidden_with_ref() {
    let s = TestServer::start(&[]).await;
    let (a, ta) = s.create_user("spoof_a").await;
    let (b, _) = s.create_user("spoof_b").await;
    let mut c = s.ws(&ta).await;
    let base = s.last_seq(&ta, 1).await;
    c.send_json(json!({ "type": "message", "room_id": 1, "content": "x", "sender_id": b, "client_msg_id": "sp1" }))
        .await;
    let e = c.recv_type("error").await;
    assert_ws_error(&e, "forbidden");
    assert_eq!(e["ref"], json!("sp1"));
    c.send_json(json!({ "type": "typing", "room_id": 1, "user_id": b })).await;
    let e = c.recv_type("error").await;
    assert_ws_error(&e, "forbidden");
    // Nothing stored; the connection still works.
    let ok = c.send_and_echo(1, "real").await;
    assert_eq!(ok["sender_id"], json!(a));
    assert_eq!(ok["seq"], json!(base + 1), "the spoofed message took no seq");
    assert_eq!(s.history(&ta, 1, 10).await.len(), 1);
}

#[tokio::test]
async fn non_member_room_is_forbidden() {
    let s = TestServer::start(&[]).await;
    let (_, ta) = s.create_user("nm_a").await;
    let (_, tx) = s.create_user("nm_x").await;
    let room = s.create_room(&ta, "secret", &[]).await;
    let mut cx = s.ws(&tx).await;
    cx.send_msg(room, "let me in", Some("nm1")).await;
    let e = cx.recv_type("error").await;
    assert_ws_error(&e, "forbidden");
    assert_eq!(e["ref"], json!("nm1"));
    assert_eq!(s.history(&ta, room, 10).await.len(), 0);
    cx.send_and_echo(1, "still here").await;
}

#[tokio::test]
async fn bad_requests_keep_the_connection_usable() {
    let s = TestServer::start(&[]).await;
    let (_, ta) = s.create_user("bad").await;
    let mut c = s.ws(&ta).await;
    let cases: Vec<(&str, String)> = vec![
        ("malformed JSON", "{not json".to_string()),
        ("not an object", "[1,2,3]".to_string()),
        ("missing type", json!({ "content": "x" }).to_string()),
        ("unknown type", json!({ "type": "dance" }).to_string()),
        ("content wrong type", json!({ "type": "message", "content": 5 }).to_string()),
        ("content missing", json!({ "type": "message", "room_id": 1 }).to_string()),
        ("room_id wrong type", json!({ "type": "message", "room_id": "one", "content": "x" }).to_string()),
        ("status_update without message_id", json!({ "type": "status_update", "read": true }).to_string()),
        ("sync rooms wrong type", json!({ "type": "sync", "rooms": 5 }).to_string()),
    ];
    for (what, text) in cases {
        c.send_text(text).await;
        let e = c.recv_type("error").await;
        assert_eq!(e["code"], json!("bad_request"), "{what}: {e}");
        assert!(e["message"].is_string(), "{what}: {e}");
        let ok = c.send_and_echo(1, &format!("after {what}")).await;
        assert_eq!(ok["type"], "message");
    }
    assert_eq!(s.history(&ta, 1, 100).await.len(), 9, "only the valid messages were stored");
}

#[tokio::test]
async fn content_bounds() {
    let s = TestServer::start(&[]).await;
    let (_, ta) = s.create_user("len").await;
    let mut c = s.ws(&ta).await;
    for (cid, content) in [("e1", ""), ("e2", "   \n\t ")] {
        c.send_msg(1, content, Some(cid)).await;
        let e = c.recv_type("error").await;
        assert_ws_error(&e, "bad_request");
        assert_eq!(e["ref"], json!(cid));
    }
    c.send_msg(1, &"a".repeat(4097), Some("big")).await;
    let e = c.recv_type("error").await;
    assert_ws_error(&e, "too_large");
    assert_eq!(e["ref"], json!("big"));
    // The connection stays open; 4096 chars (multi-byte: counted in chars, not bytes) is ok.
    let max = "é".repeat(4096);
    let ok = c.send_and_echo(1, &max).await;
    assert_eq!(ok["content"].as_str().map(|s| s.chars().count()), Some(4096));
    // client_msg_id over 64 chars is refused.
    c.send_msg(1, "x", Some(&"k".repeat(65))).await;
    let e = c.recv_type("error").await;
    assert!(e["code"] == json!("bad_request") || e["code"] == json!("too_large"), "{e}");
    let h = s.history(&ta, 1, 10).await;
    assert_eq!(h.len(), 1, "only the 4096-char message stored");
}

// --- typing --------------------------------------------------------------------------------

#[tokio::test]
async fn typing_relayed_to_others_not_sender_and_throttled() {
    let s = TestServer::start(&[]).await;
    let (a, ta) = s.create_user("ty_a").await;
    let (b, tb) = s.create_user("ty_b").await;
    let room = s.create_room(&ta, "typing-room", &[b]).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;

    // Default state is "start"; room_id omitted → room 1.
    ca.send_json(json!({ "type": "typing" })).await;
    // Throttle: a second typing within 1 s in the same room is dropped.
    ca.send_json(json!({ "type": "typing", "room_id": 1 })).await;
    let t = cb.recv_type("typing").await;
    assert_fields(&t, &json!({ "type": "typing", "room_id": 1, "user_id": a, "state": "start" }));

    // Sentinel: a message after the typing events. Bob must see it before any second typing,
    // and Alice must see her echo without ever seeing her own typing.
    ca.send_msg(1, "sentinel", Some("ty-sentinel")).await;
    let mut seen = Vec::new();
    let echo = loop {
        let v = ca.recv_json().await;
        if v["type"] == "message" && v["client_msg_id"] == json!("ty-sentinel") {
            break v;
        }
        seen.push(v);
    };
    assert!(seen.iter().all(|v| v["type"] != "typing"), "sender must not get its own typing: {seen:?}");
    let next = cb.recv_types(&["typing", "message"]).await;
    assert_eq!(next["type"], "message", "the 2nd typing within 1 s must be dropped: {next}");
    assert_eq!(next["id"], echo["id"]);

    // state "stop" in another room (its own throttle bucket).
    ca.send_json(json!({ "type": "typing", "room_id": room, "state": "stop" })).await;
    let t = cb.recv_type("typing").await;
    assert_eq!(t["room_id"], json!(room));
    assert_eq!(t["user_id"], json!(a));
    assert_eq!(t["state"], json!("stop"));

    // Never stored.
    assert_eq!(s.history(&ta, room, 10).await.len(), 0);
}

/// A `stop` right after a `start` (as a client sends when its user sends the message) is
/// relayed at once: the throttle never leaves the others' indicator on.
#[tokio::test]
async fn typing_stop_after_start_is_never_throttled() {
    let s = TestServer::start(&[]).await;
    let (a, ta) = s.create_user("tys_a").await;
    let (_, tb) = s.create_user("tys_b").await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;
    ca.send_json(json!({ "type": "typing", "room_id": 1, "state": "start" })).await;
    ca.send_json(json!({ "type": "typing", "room_id": 1, "state": "stop" })).await;
    // a second stop and a new start within the second are throttled: the sentinel comes next
    ca.send_json(json!({ "type": "typing", "room_id": 1, "state": "stop" })).await;
    ca.send_json(json!({ "type": "typing", "room_id": 1, "state": "start" })).await;
    ca.send_and_echo(1, "sentinel").await;
    for state in ["start", "stop"] {
        let t = cb.recv_type("typing").await;
        assert_fields(&t, &json!({ "type": "typing", "room_id": 1, "user_id": a, "state": state }));
    }
    let next = cb.recv_types(&["typing", "message"]).await;
    assert_eq!(next["content"], json!("sentinel"), "nothing else relayed before it: {next}");
}

// --- receipts ------------------------------------------------------------------------------

#[tokio::test]
async fn status_update_advances_watermarks_and_relays() {
    let s = TestServer::start(&[]).await;
    let (a, ta) = s.create_user("rc_a").await;
    let (b, tb) = s.create_user("rc_b").await;
    let room = s.create_room(&ta, "receipts", &[b]).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;
    // The members' joins (§10) took the room's first seqs.
    let base = s.last_seq(&ta, room).await;

    let m1 = ca.send_and_echo(room, "first").await;
    let m2 = ca.send_and_echo(room, "second").await;
    cb.recv_type("message").await;
    cb.recv_type("message").await;
    let m1_id = m1["id"].as_i64().unwrap();
    let m2_id = m2["id"].as_i64().unwrap();
    let (m1_seq, m2_seq) = (base + 1, base + 2);
    assert_eq!((m1["seq"].clone(), m2["seq"].clone()), (json!(m1_seq), json!(m2_seq)), "{m1} {m2}");

    // Delivered on m1.
    cb.send_json(json!({ "type": "status_update", "message_id": m1_id, "delivered": true })).await;
    let su = ca.recv_type("status_update").await;
    assert_fields(
        &su,
        &json!({ "type": "status_update", "message_id": m1_id, "room_id": room, "user_id": b,
                 "delivered": true, "read": false }),
    );
    let members = s.get_json(&format!("/v1/rooms/{room}/members"), &ta).await;
    let mb = members.body.as_array().unwrap().iter().find(|m| m["user_id"] == json!(b)).unwrap().clone();
    assert_eq!((mb["delivered_seq"].clone(), mb["read_seq"].clone()), (json!(m1_seq), json!(0)), "{members:?}");

    // Read on m2 implies delivered.
    cb.send_json(json!({ "type": "status_update", "message_id": m2_id, "read": true })).await;
    let su = ca.recv_type("status_update").await;
    assert_eq!(su["message_id"], json!(m2_id));
    assert_eq!(su["user_id"], json!(b));
    assert_eq!(su["read"], json!(true));
    assert_eq!(su["delivered"], json!(true), "read implies delivered: {su}");

    // Watermarks never go backwards.
    cb.send_json(json!({ "type": "status_update", "message_id": m1_id, "delivered": true })).await;
    ca.recv_until("relay of the late m1 receipt", |v| v["type"] == "status_update" && v["message_id"] == json!(m1_id))
        .await;
    let members = s.get_json(&format!("/v1/rooms/{room}/members"), &ta).await;
    let mb = members.body.as_array().unwrap().iter().find(|m| m["user_id"] == json!(b)).unwrap().clone();
    assert_eq!(mb["delivered_seq"], json!(m2_seq), "{mb}");
    assert_eq!(mb["read_seq"], json!(m2_seq), "{mb}");
    let ma = members.body.as_array().unwrap().iter().find(|m| m["user_id"] == json!(a)).unwrap().clone();
    assert_eq!(ma["read_seq"], json!(0), "alice reported nothing: {ma}");

    let rooms_b = s.get_json("/v1/rooms", &tb).await;
    let rb = rooms_b.body.as_array().unwrap().iter().find(|r| r["id"] == json!(room)).unwrap().clone();
    assert_eq!(
        (rb["delivered_seq"].clone(), rb["read_seq"].clone(), rb["last_seq"].clone()),
        (json!(m2_seq), json!(m2_seq), json!(m2_seq))
    );

    // Booleans in history.
    let h = s.history(&ta, room, 10).await;
    let h1 = h.iter().find(|m| m["id"] == json!(m1_id)).unwrap();
    let h2 = h.iter().find(|m| m["id"] == json!(m2_id)).unwrap();
    assert_eq!((h1["delivered"].clone(), h1["read"].clone()), (json!(true), json!(false)), "{h1}");
    assert_eq!((h2["delivered"].clone(), h2["read"].clone()), (json!(true), json!(true)), "{h2}");
}

#[tokio::test]
async fn status_update_errors() {
    let s = TestServer::start(&[]).await;
    let (_, ta) = s.create_user("se_a").await;
    let (_, tx) = s.create_user("se_x").await;
    let room = s.create_room(&ta, "private", &[]).await;
    let mut ca = s.ws(&ta).await;
    let m = ca.send_and_echo(room, "secret").await;
    let mid = m["id"].as_i64().unwrap();

    let mut cx = s.ws(&tx).await;
    cx.send_json(json!({ "type": "status_update", "message_id": mid, "read": true })).await;
    let e = cx.recv_type("error").await;
    assert_ws_error(&e, "forbidden");
    assert_eq!(e["ref"], json!(mid));

    cx.send_json(json!({ "type": "status_update", "message_id": 999_999_999, "read": true })).await;
    let e = cx.recv_type("error").await;
    assert!(e["code"] == json!("not_found") || e["code"] == json!("forbidden"), "{e}");
    assert_eq!(e["ref"], json!(999_999_999));

    let h = s.history(&ta, room, 10).await;
    assert_eq!(h[0]["read"], json!(false), "refused receipt changed nothing");
}

// --- presence ------------------------------------------------------------------------------

#[tokio::test]
async fn presence_online_and_offline() {
    let s = TestServer::start(&[]).await;
    let (a, ta) = s.create_user("pr_a").await;
    let (_b, tb) = s.create_user("pr_b").await;
    let mut cb = s.ws_ready(&tb).await;

    let ca = s.ws_ready(&ta).await;
    let p = cb.recv_until("alice online", |v| v["type"] == "presence" && v["user_id"] == json!(a)).await;
    assert_fields(&p, &json!({ "type": "presence", "room_id": 1, "user_id": a, "online": true }));

    // A second connection of alice is not "first anywhere": no new online event. Sentinel:
    // a message from alice after it must reach bob before any presence for alice.
    let mut ca2 = s.ws_ready(&ta).await;
    let echo = ca2.send_and_echo(1, "sentinel").await;
    let next = cb
        .recv_until("sentinel or alice presence", |v| {
            v["type"] == "message" || (v["type"] == "presence" && v["user_id"] == json!(a))
        })
        .await;
    assert_eq!(next["id"], echo["id"], "no presence for a second connection: {next}");

    // Closing one of two connections: still online. Closing the last: offline.
    ca.close().await;
    ca2.close().await;
    let p = cb.recv_until("alice offline", |v| v["type"] == "presence" && v["user_id"] == json!(a)).await;
    assert_eq!(p["online"], json!(false), "after the last connection closed: {p}");
    assert_eq!(p["room_id"], json!(1));
}

// --- membership changes --------------------------------------------------------------------

#[tokio::test]
async fn removed_member_stops_getting_room_events() {
    let s = TestServer::start(&[]).await;
    let (_, ta) = s.create_user("rm_a").await;
    let (b, tb) = s.create_user("rm_b").await;
    let room = s.create_room(&ta, "kick", &[b]).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cb = s.ws_ready(&tb).await;

    let before = ca.send_and_echo(room, "before").await;
    assert_eq!(cb.recv_type("message").await["id"], before["id"], "bob gets room events while a member");

    let admin = s.admin_token.clone();
    let r = s.delete(&format!("/v1/rooms/{room}/members/{b}"), &admin).await;
    assert!(matches!(r.status, 200 | 204), "{r:?}");

    // After removal: a message in the room, then a sentinel in room 1.
    ca.send_and_echo(room, "after removal").await;
    let sentinel = ca.send_and_echo(1, "sentinel").await;
    let next = cb.recv_type("message").await;
    assert_eq!(next["id"], sentinel["id"], "bob must not get the removed room's message: {next}");

    // And bob can no longer write there.
    cb.send_msg(room, "still here?", Some("rm1")).await;
    let e = cb.recv_type("error").await;
    assert_ws_error(&e, "forbidden");
}

#[tokio::test]
async fn added_member_gets_live_events_on_open_connection() {
    let s = TestServer::start(&[]).await;
    let (_, ta) = s.create_user("ad_a").await;
    let (c, tc) = s.create_user("ad_c").await;
    let room = s.create_room(&ta, "joinable", &[]).await;
    let mut ca = s.ws_ready(&ta).await;
    let mut cc = s.ws_ready(&tc).await;
    let r = s.post_json(&format!("/v1/rooms/{room}/members"), &ta, json!({ "user_id": c })).await;
    assert!(matches!(r.status, 200 | 201 | 204), "{r:?}");
    let m = ca.send_and_echo(room, "welcome").await;
    let got = cc.recv_type("message").await;
    assert_eq!(got["id"], m["id"], "a member added while connected gets the room's events");
}

// --- sync ----------------------------------------------------------------------------------

#[tokio::test]
async fn sync_replays_missed_messages_then_synced() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (_, ta) = s.create_user("sy_a").await;
    let (b, tb) = s.create_user("sy_b").await;
    let room = s.create_room(&ta, "sync-room", &[b]).await;
    let mut ca = s.ws(&ta).await;
    // Seqs count every room event (§10): the members' joins came first, so the messages take
    // the seqs after each room's `last_seq`, and positions are seqs, not message counts.
    let (base_1, base_room) = (s.last_seq(&ta, 1).await, s.last_seq(&ta, room).await);
    let mut sent: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for i in 0..6 {
        sent.entry(1).or_default().push(ca.send_and_echo(1, &format!("g{i}")).await);
        sent.entry(room).or_default().push(ca.send_and_echo(room, &format!("r{i}")).await);
    }
    let seq_of = |m: &Value| m["seq"].as_i64().unwrap();
    for (r, base) in [(1, base_1), (room, base_room)] {
        let got: Vec<i64> = sent[&r].iter().map(seq_of).collect();
        assert_eq!(got, (base + 1..=base + 6).collect::<Vec<_>>(), "room {r}: the messages' seqs");
    }
    let (last_1, last_room) = (base_1 + 6, base_room + 6);
    // Bob "last saw" the 2nd message in room 1 and the 4th in room.
    let mut cb = s.ws(&tb).await;
    let (events, synced) =
        cb.sync_replay(json!({ "1": seq_of(&sent[&1][1]), (room.to_string()): seq_of(&sent[&room][3]) })).await;
    // Every room event past those positions, and only those: here, messages only.
    let mut replay: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for v in events {
        assert_message_event(&v);
        replay.entry(v["room_id"].as_i64().unwrap()).or_default().push(v);
    }
    let ids = |v: &[Value]| v.iter().map(|m| m["id"].clone()).collect::<Vec<_>>();
    let seqs = |v: &[Value]| v.iter().map(seq_of).collect::<Vec<_>>();
    assert_eq!(ids(&replay[&1]), ids(&sent[&1][2..]), "room 1 replay = messages 3..6 in order");
    assert_eq!(seqs(&replay[&1]), seqs(&sent[&1][2..]), "room 1 replay keeps the seqs");
    assert_eq!(ids(&replay[&room]), ids(&sent[&room][4..]), "room replay = messages 5..6 in order");
    assert_eq!(seqs(&replay[&room]), seqs(&sent[&room][4..]), "room replay keeps the seqs");
    assert_eq!(replay.len(), 2, "only the listed rooms: {replay:?}");
    assert_eq!(synced["rooms"], json!({ "1": last_1, (room.to_string()): last_room }), "{synced}");
    assert_eq!(synced["more"], json!(false), "{synced}");

    // Already up to date: nothing replayed.
    let (events, synced) = cb.sync_replay(json!({ "1": last_1 })).await;
    assert!(events.is_empty(), "nothing to replay: {events:?}");
    assert_eq!(synced["more"], json!(false), "{synced}");
}

#[tokio::test]
async fn sync_respects_max_replay_and_sets_more() {
    let s = TestServer::start(&[
        ("LIVECHAT_SYNC__MAX_REPLAY", "5"),
        ("LIVECHAT_LIMITS__MESSAGES_PER_SEC", "10000"),
        ("LIVECHAT_LIMITS__MESSAGES_BURST", "10000"),
    ])
    .await;
    let (a, ta) = s.create_user("mr_a").await;
    let (b, tb) = s.create_user("mr_b").await;
    let mut ca = s.ws(&ta).await;
    // Room 1's log so far: the two users' joins (§10). The messages follow them.
    let base = s.last_seq(&ta, 1).await;
    let mut sent = Vec::new();
    for i in 0..12 {
        sent.push(ca.send_and_echo(1, &format!("x{i}")).await["id"].clone());
    }
    let total = base + 12;
    let mut cb = s.ws(&tb).await;
    let mut last = 0i64;
    let mut all = Vec::new();
    // Pages of at most 5 events (the joins included), `more` while events are left past one.
    while last < total {
        let expect_n = (total - last).min(5);
        let (got, synced) = cb.sync_replay(json!({ "1": last })).await;
        let seqs: Vec<i64> = got.iter().map(|v| v["seq"].as_i64().unwrap()).collect();
        assert_eq!(seqs, ((last + 1)..=(last + expect_n)).collect::<Vec<_>>(), "replayed seqs: {got:?}");
        assert_eq!(synced["more"], json!(last + expect_n < total), "{synced}");
        last += expect_n;
        assert_eq!(synced["rooms"]["1"], json!(last), "{synced}");
        all.extend(got);
    }
    assert_eq!(all.len() as i64, total, "{all:?}");
    // What the client saw: the joins, then the messages as sent.
    let (joins, messages) = all.split_at(base as usize);
    let joined: Vec<(Value, Value)> = joins.iter().map(|v| (v["type"].clone(), v["user_id"].clone())).collect();
    assert_eq!(joined, vec![(json!("member"), json!(a)), (json!("member"), json!(b))], "the joins: {joins:?}");
    assert!(joins.iter().all(|v| v["action"] == "join" && v["room_id"] == json!(1)), "{joins:?}");
    let ids: Vec<Value> = messages.iter().map(|v| v["id"].clone()).collect();
    assert_eq!(ids, sent, "the messages, in order: {messages:?}");
    messages.iter().for_each(assert_message_event);
}

// --- ordering under concurrency ------------------------------------------------------------

#[tokio::test]
async fn live_delivery_is_gapless_ordered_and_unique_across_two_rooms() {
    let s = TestServer::start(FAST_LIMITS).await;
    let (_, ta) = s.create_user("cc_a").await;
    let (b, tb) = s.create_user("cc_b").await;
    let (c, tc) = s.create_user("cc_c").await;
    let room = s.create_room(&ta, "concurrent", &[b, c]).await;
    let mut watcher = s.ws_ready(&tc).await;
    const N: usize = 40;
    // Each room's log so far (the members' joins, §10): the messages take the seqs after it.
    let mut base: HashMap<i64, i64> = HashMap::new();
    for r in [1, room] {
        base.insert(r, s.last_seq(&tc, r).await);
    }

    let mut senders = Vec::new();
    for (name, token) in [("a", ta.clone()), ("b", tb.clone())] {
        let mut cl = s.ws_ready(&token).await;
        senders.push(tokio::spawn(async move {
            for i in 0..N {
                let r = if i % 2 == 0 { 1 } else { room };
                cl.send_msg(r, &format!("{name}{i}"), Some(&format!("{name}-{i}"))).await;
            }
            // Own echoes: per room, in send order with increasing seqs. (Across rooms no
            // order is promised; the other sender's messages are skipped.)
            let mut per_room: HashMap<i64, Vec<(String, i64)>> = HashMap::new();
            let mut got = 0;
            while got < N {
                let e = cl.recv_type("message").await;
                let cid = e["client_msg_id"].as_str().unwrap_or_default().to_string();
                if !cid.starts_with(&format!("{name}-")) {
                    continue;
                }
                got += 1;
                per_room.entry(e["room_id"].as_i64().unwrap()).or_default().push((cid, e["seq"].as_i64().unwrap()));
            }
            for (r, list) in &per_room {
                let want: Vec<String> = (0..N)
                    .filter(|i| (if i % 2 == 0 { 1 } else { room }) == *r)
                    .map(|i| format!("{name}-{i}"))
                    .collect();
                let cids: Vec<String> = list.iter().map(|(c, _)| c.clone()).collect();
                assert_eq!(cids, want, "{name}: echo order in room {r}");
                assert!(list.windows(2).all(|w| w[0].1 < w[1].1), "{name}: seqs increase in room {r}: {list:?}");
            }
            cl
        }));
    }
    let mut per_room: HashMap<i64, Vec<i64>> = HashMap::new();
    for _ in 0..(2 * N) {
        let m = watcher.recv_type("message").await;
        per_room.entry(m["room_id"].as_i64().unwrap()).or_default().push(m["seq"].as_i64().unwrap());
    }
    for h in senders {
        h.await.expect("sender task");
    }
    for r in [1, room] {
        let b = base[&r];
        assert_eq!(per_room[&r], (b + 1..=b + N as i64).collect::<Vec<_>>(), "room {r}: gapless, ordered, unique");
    }
    // Nothing extra arrives afterwards (no duplicates).
    let extra = watcher.sync_barrier().await;
    assert!(extra.iter().all(|v| v["type"] != "message"), "duplicates: {extra:?}");
}

#[tokio::test]
async fn presence_only_in_rooms_up_to_max_room_members() {
    let s = TestServer::start(&[("LIVECHAT_PRESENCE__MAX_ROOM_MEMBERS", "2")]).await;
    let (a, ta) = s.create_user("pc_a").await;
    let (b, tb) = s.create_user("pc_b").await;
    let (_c, _tc) = s.create_user("pc_c").await;
    // Room 1 has 3 members (> 2): no presence there. The pair room has 2: presence.
    let pair = s.create_room(&ta, "pair", &[b]).await;
    let mut cb = s.ws_ready(&tb).await;
    let mut ca = s.ws_ready(&ta).await;
    let p = cb.recv_until("alice presence", |v| v["type"] == "presence" && v["user_id"] == json!(a)).await;
    assert_eq!(p["room_id"], json!(pair), "presence only in the small room: {p}");
    assert_eq!(p["online"], json!(true));
    // Sentinel: no presence for room 1 before alice's next message.
    let echo = ca.send_and_echo(1, "sentinel").await;
    let next = cb.recv_until("sentinel", |v| v["type"] == "message" || v["type"] == "presence").await;
    assert_eq!(next["id"], echo["id"], "no presence in a room above max_room_members: {next}");
    // The members endpoint still shows online state in the big room.
    let m = s.get_json("/v1/rooms/1/members", &tb).await;
    let ma = m.body.as_array().unwrap().iter().find(|x| x["user_id"] == json!(a)).unwrap().clone();
    assert_eq!(ma["online"], json!(true), "{m:?}");
}

// --- resume under live traffic ------------------------------------------------------------

/// A reconnecting client (`resume=1`: replay-then-live order) syncs while another member keeps
/// sending, and the replay is capped: following `synced` (re-syncing while `more`) it ends with
/// every seq exactly once, in order.
#[tokio::test]
async fn resume_with_capped_replay_under_live_traffic_is_gapless_and_ordered() {
    let s = TestServer::start(&[
        ("LIVECHAT_SYNC__MAX_REPLAY", "7"),
        ("LIVECHAT_LIMITS__MESSAGES_PER_SEC", "10000"),
        ("LIVECHAT_LIMITS__MESSAGES_BURST", "10000"),
    ])
    .await;
    let (a, ta) = s.create_user("rs_a").await;
    let (b_id, tb) = s.create_user("rs_b").await;
    let mut sender = s.ws_ready(&ta).await;
    // Room 1's log starts with the two joins (§10); the 70 messages follow them.
    let base = s.last_seq(&ta, 1).await;
    let total = base + 70;
    for i in 0..30 {
        sender.send_and_echo(1, &format!("before {i}")).await;
    }
    // Live traffic keeps flowing while B reconnects and catches up.
    let live = tokio::spawn(async move {
        for i in 0..40 {
            sender.send_and_echo(1, &format!("during {i}")).await;
        }
        sender
    });
    let mut b = WsClient::connect(&format!("{}&resume=1", s.ws_url(&tb))).await.expect("connect");
    let mut last = 0i64;
    // Every room event B sees (replayed or live), in arrival order.
    let mut got: Vec<Value> = Vec::new();
    loop {
        let (events, synced) = b.sync_replay(json!({ "1": last })).await;
        got.extend(events);
        last = synced["rooms"]["1"].as_i64().unwrap();
        if synced["more"] == json!(false) {
            break;
        }
    }
    let _sender = bounded("live sender", live).await.unwrap();
    // After the last synced, live delivery continues from `last`.
    let seq_of = |v: &Value| v["seq"].as_i64().unwrap();
    while got.last().map(seq_of).unwrap_or(0) < total {
        got.push(b.recv_types(&ROOM_EVENT_TYPES).await);
    }
    assert!(got.iter().all(|v| v["room_id"] == json!(1)), "room 1 only: {got:?}");
    assert_eq!(got.iter().map(seq_of).collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>(), "every seq once, in order");
    // The joins, then only messages: the 30 before and the 40 during, in send order.
    let joins: Vec<(Value, Value)> =
        got[..base as usize].iter().map(|v| (v["type"].clone(), v["user_id"].clone())).collect();
    assert_eq!(joins, vec![(json!("member"), json!(a)), (json!("member"), json!(b_id))], "{got:?}");
    let contents: Vec<Value> = got[base as usize..].iter().map(|v| v["content"].clone()).collect();
    let want: Vec<Value> =
        (0..30).map(|i| json!(format!("before {i}"))).chain((0..40).map(|i| json!(format!("during {i}")))).collect();
    assert_eq!(contents, want, "the messages, each once, in order");
}
