//! Room events (SPEC §10): sending edits, deletes and reactions, waiting for and checking room events.

use serde_json::{json, Value};

use super::{
    assert_history_message, assert_rfc3339_utc, assert_ws_error, random_hex, TestServer, WsClient, ROOM_EVENT_TYPES,
};

/// A unique username built on `base`.
pub fn uname(base: &str) -> String {
    format!("{base}_{}", random_hex(3))
}

/// Whether `v` is a room event ([`ROOM_EVENT_TYPES`]) of `room`.
pub fn is_room_event_of(v: &Value, room: i64) -> bool {
    v["room_id"] == json!(room) && ROOM_EVENT_TYPES.contains(&v["type"].as_str().unwrap_or_default())
}

/// The room events of `room` among `events`, in their order (e.g. what a
/// [`WsClient::sync_barrier`] or [`WsClient::sync_replay`] returned).
pub fn room_events_of(events: Vec<Value>, room: i64) -> Vec<Value> {
    events.into_iter().filter(|v| is_room_event_of(v, room)).collect()
}

/// The next room event of `room` on `ws`; events of other rooms, presence, typing and receipts
/// are skipped, an `error` panics.
pub async fn next_room_event(ws: &mut WsClient, room: i64) -> Value {
    ws.recv_until(&format!("a room event of room {room}"), move |v| {
        assert_ne!(v["type"], "error", "error event while waiting for a room event of room {room}: {v}");
        is_room_event_of(v, room)
    })
    .await
}

/// The next `n` room events of `room` on `ws` (see [`next_room_event`]).
pub async fn next_room_events(ws: &mut WsClient, room: i64, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(next_room_event(ws, room).await);
    }
    out
}

/// The actor's own acknowledgement: the next event of type `ty` about message `mid` in `room`
/// (other events skipped, an `error` panics).
pub async fn ack(ws: &mut WsClient, room: i64, ty: &str, mid: i64) -> Value {
    let ty2 = ty.to_string();
    ws.recv_until(&format!("{ty} of message {mid}"), move |v| {
        assert_ne!(v["type"], "error", "error event while waiting for the {ty2} of message {mid}: {v}");
        v["type"] == json!(ty2) && v["room_id"] == json!(room) && v["message_id"] == json!(mid)
    })
    .await
}

/// The next event on `ws` that is an `error` or a room event of `room`: it must be an `error`
/// with `code` and `ref` (a refused event changes nothing, so no room event may come first).
pub async fn expect_error(ws: &mut WsClient, room: i64, code: &str, reference: Value) -> Value {
    let e = ws.recv_until(&format!("error {code}"), move |v| v["type"] == "error" || is_room_event_of(v, room)).await;
    assert_ws_error(&e, code);
    assert_eq!(e["ref"], reference, "error.ref: {e}");
    e
}

/// Sends the `message` event `body` with a fresh `client_msg_id`; returns the sender's echo.
pub async fn send_with(ws: &mut WsClient, mut body: Value) -> Value {
    let cid = format!("c-{}", random_hex(8));
    body["type"] = json!("message");
    body["client_msg_id"] = json!(cid);
    ws.send_json(body).await;
    let cid2 = cid.clone();
    ws.recv_until(&format!("echo of {cid}"), move |v| {
        assert_ne!(v["type"], "error", "error instead of the echo of {cid2}: {v}");
        v["type"] == "message" && v["client_msg_id"] == json!(cid2)
    })
    .await
}

/// Sends the `message` event `body` with a fresh `client_msg_id` and expects an `error` with
/// `code` whose `ref` is that id (see [`expect_error`]); returns the error.
pub async fn send_expecting_error(ws: &mut WsClient, mut body: Value, room: i64, code: &str) -> Value {
    let cid = format!("c-{}", random_hex(8));
    body["type"] = json!("message");
    body["client_msg_id"] = json!(cid);
    ws.send_json(body).await;
    expect_error(ws, room, code, json!(cid)).await
}

/// Sends `edit` of message `mid` to `content`.
pub async fn send_edit(ws: &mut WsClient, mid: i64, content: &str) {
    ws.send_json(json!({ "type": "edit", "message_id": mid, "content": content })).await;
}

/// Sends `delete` of message `mid`.
pub async fn send_delete(ws: &mut WsClient, mid: i64) {
    ws.send_json(json!({ "type": "delete", "message_id": mid })).await;
}

/// Sends `react` with `emoji` on message `mid` (`on`: add, else remove).
pub async fn send_react(ws: &mut WsClient, mid: i64, emoji: &str, on: bool) {
    ws.send_json(json!({ "type": "react", "message_id": mid, "emoji": emoji, "on": on })).await;
}

/// The integer `id` of `v` (panics without one).
pub fn id_of(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("integer id in {v}"))
}

/// The integer `seq` of `v` (panics without one).
pub fn seq_of(v: &Value) -> i64 {
    v["seq"].as_i64().unwrap_or_else(|| panic!("integer seq in {v}"))
}

/// The `seq` of each event in `list`.
pub fn seqs(list: &[Value]) -> Vec<i64> {
    list.iter().map(seq_of).collect()
}

/// The `type` of each event in `list`.
pub fn types(list: &[Value]) -> Vec<String> {
    list.iter().map(|v| v["type"].as_str().unwrap_or_default().to_string()).collect()
}

/// `GET /v1/rooms/{room}/events?after_seq=..&limit=..` → the array (asserts 200).
pub async fn events_page(s: &TestServer, token: &str, room: i64, after_seq: i64, limit: u32) -> Vec<Value> {
    let r = s.get_json(&format!("/v1/rooms/{room}/events?after_seq={after_seq}&limit={limit}"), token).await;
    assert_eq!(r.status, 200, "events of room {room} after {after_seq}: {r:?}");
    r.body.as_array().unwrap_or_else(|| panic!("events listing is not an array: {r:?}")).clone()
}

/// The history object of message `id` (from the newest 500 of `room`).
pub async fn history_item(s: &TestServer, token: &str, room: i64, id: i64) -> Value {
    let h = s.history(token, room, 500).await;
    h.into_iter().find(|m| m["id"] == json!(id)).unwrap_or_else(|| panic!("message {id} not in history of {room}"))
}

/// A `member` event with every §10 field.
#[track_caller]
pub fn assert_member_event(v: &Value, room: i64, user: i64, action: &str, by: Value) {
    assert_eq!(v["type"], "member", "{v}");
    assert_eq!(v["room_id"], json!(room), "member.room_id: {v}");
    assert!(v["seq"].is_i64(), "member.seq: {v}");
    assert_eq!(v["user_id"], json!(user), "member.user_id: {v}");
    assert_eq!(v["action"], json!(action), "member.action: {v}");
    assert_eq!(v.get("by"), Some(&by), "member.by must be present (null for the admin API): {v}");
}

/// A history message object (§4) with every v2 field, each of the right type.
#[track_caller]
pub fn assert_v2_history_message(v: &Value) {
    assert_history_message(v);
    for k in ["reply_to", "mentions", "edited_at", "deleted", "reply_count", "reactions"] {
        assert!(v.get(k).is_some(), "history.{k} must be present: {v}");
    }
    assert!(v["reply_to"].is_null() || v["reply_to"].is_i64(), "history.reply_to: {v}");
    let mentions = v["mentions"].as_array().unwrap_or_else(|| panic!("history.mentions must be an array: {v}"));
    assert!(mentions.iter().all(Value::is_i64), "history.mentions are user ids: {v}");
    if !v["edited_at"].is_null() {
        assert_rfc3339_utc(&v["edited_at"]);
    }
    assert!(v["deleted"].is_boolean(), "history.deleted: {v}");
    assert!(v["reply_count"].as_i64().is_some_and(|n| n >= 0), "history.reply_count: {v}");
    let reactions = v["reactions"].as_array().unwrap_or_else(|| panic!("history.reactions must be an array: {v}"));
    for r in reactions {
        assert!(r["emoji"].is_string(), "reaction.emoji: {v}");
        assert!(r["count"].as_i64().is_some_and(|n| n >= 1), "reaction.count: {v}");
        assert!(r["me"].is_boolean(), "reaction.me: {v}");
    }
}
