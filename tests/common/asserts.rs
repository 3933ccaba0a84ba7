//! Assertions on the shapes of events and objects the server sends.

use serde_json::{json, Value};

/// Asserts a server `message` event carries every field docs/asyncapi.yaml lists for it, with
/// the right types: integer ids and seq, string content, `client_msg_id` a string or null, an
/// RFC 3339 UTC timestamp.
#[track_caller]
pub fn assert_message_event(v: &Value) {
    assert_eq!(v["type"], "message", "{v}");
    for k in ["id", "room_id", "seq", "sender_id"] {
        assert!(v[k].is_i64(), "message.{k} must be an integer: {v}");
    }
    assert!(v["content"].is_string(), "message.content: {v}");
    assert!(v.get("client_msg_id").is_some(), "message.client_msg_id must be present (or null): {v}");
    assert!(v["client_msg_id"].is_string() || v["client_msg_id"].is_null(), "message.client_msg_id: {v}");
    assert_rfc3339_utc(&v["timestamp"]);
}

/// Asserts an item of `GET /chat/history` carries every field of a stored message
/// (docs/openapi.json): ids, seq, `sender` matching `sender_id`, content, the delivered/read
/// flags, `client_msg_id` and an RFC 3339 UTC timestamp.
#[track_caller]
pub fn assert_history_message(v: &Value) {
    for k in ["id", "room_id", "seq", "sender_id"] {
        assert!(v[k].is_i64(), "history.{k} must be an integer: {v}");
    }
    assert!(v["sender"]["id"].is_i64(), "history.sender.id: {v}");
    assert_eq!(v["sender"]["id"], v["sender_id"], "sender.id == sender_id: {v}");
    assert!(v["sender"]["username"].is_string(), "history.sender.username: {v}");
    assert!(v["content"].is_string(), "history.content: {v}");
    assert!(v["delivered"].is_boolean(), "history.delivered: {v}");
    assert!(v["read"].is_boolean(), "history.read: {v}");
    assert!(v.get("client_msg_id").is_some(), "history.client_msg_id present (or null): {v}");
    assert_rfc3339_utc(&v["timestamp"]);
}

#[track_caller]
pub fn assert_rfc3339_utc(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("timestamp must be a string: {v}"));
    let dt = chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("timestamp {s:?} is not RFC 3339: {e}"));
    assert_eq!(dt.offset().local_minus_utc(), 0, "timestamp {s:?} must be UTC");
}

/// Asserts a WS `error` event with `code`.
#[track_caller]
pub fn assert_ws_error(v: &Value, code: &str) {
    assert_eq!(v["type"], "error", "expected an error event: {v}");
    assert_eq!(v["code"], json!(code), "error code: {v}");
    assert!(v["message"].is_string(), "error.message: {v}");
}

/// Every field of `expected` is present in `v` with that value (other fields are not checked).
#[track_caller]
pub fn assert_fields(v: &Value, expected: &Value) {
    for (k, want) in expected.as_object().unwrap() {
        assert_eq!(&v[k], want, "field {k} of {v}");
    }
}
