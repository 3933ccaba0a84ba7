//! Server events, each encoded once into a ready-to-send WebSocket text frame (`Bytes`) that
//! the bus hands to every subscriber: serialising per subscriber is what makes fan-out slow.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::frame;
use crate::error::ApiError;
use crate::model::{Message, RoomEvent};

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

/// Encodes `value` as JSON into a text frame. Serialising plain structs cannot fail.
fn json_frame<T: Serialize>(value: &T, size_hint: usize) -> Bytes {
    frame::text_with(size_hint, |w| serde_json::to_writer(w, value))
        .unwrap_or_else(|_| frame::encode(frame::OP_TEXT, br#"{"type":"error","code":"internal"}"#))
}

/// Encodes `{"type": kind, ...body}` into a text frame.
fn encode<T: Serialize>(kind: &str, body: &T, size_hint: usize) -> Bytes {
    json_frame(&Tagged { kind, body }, size_hint)
}

/// `message`.
pub fn message_frame(m: &Message) -> Bytes {
    /// Internally tagged like [`RoomEvent`]: the tag is written as the struct's first field,
    /// where [`Tagged`]'s `flatten` goes through serde's map adapter.
    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "lowercase")]
    enum Event<'a> {
        Message(&'a Message),
    }
    json_frame(&Event::Message(m), 160 + m.content.len())
}

/// Any room event (`message`, `edit`, `delete`, `reaction`, `member`).
pub fn event_frame(e: &RoomEvent) -> Bytes {
    match e {
        RoomEvent::Message(m) => message_frame(m),
        // Internally tagged: `type` comes from the variant.
        other => json_frame(other, 192),
    }
}

/// `typing`.
pub fn typing_frame(room_id: i64, user_id: i64, start: bool) -> Bytes {
    #[derive(Serialize)]
    struct T {
        room_id: i64,
        user_id: i64,
        state: &'static str,
    }
    encode("typing", &T { room_id, user_id, state: if start { "start" } else { "stop" } }, 64)
}

/// `status_update` relay.
pub fn status_frame(message_id: i64, room_id: i64, user_id: i64, delivered: bool, read: bool) -> Bytes {
    #[derive(Serialize)]
    struct S {
        message_id: i64,
        room_id: i64,
        user_id: i64,
        delivered: bool,
        read: bool,
    }
    encode("status_update", &S { message_id, room_id, user_id, delivered, read }, 96)
}

/// `presence`.
pub fn presence_frame(room_id: i64, user_id: i64, online: bool) -> Bytes {
    #[derive(Serialize)]
    struct P {
        room_id: i64,
        user_id: i64,
        online: bool,
    }
    encode("presence", &P { room_id, user_id, online }, 64)
}

/// `synced`: room → last seq sent.
pub fn synced_frame(rooms: &[(i64, i64)], more: bool) -> Bytes {
    #[derive(Serialize)]
    struct S {
        rooms: BTreeMap<String, i64>,
        more: bool,
    }
    let rooms = rooms.iter().map(|(r, s)| (r.to_string(), *s)).collect();
    encode("synced", &S { rooms, more }, 64)
}

/// `error`.
pub fn error_frame(err: &ApiError, reference: Option<&Value>) -> Bytes {
    #[derive(Serialize)]
    struct E<'a> {
        code: &'static str,
        message: &'a str,
        #[serde(rename = "ref")]
        reference: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    }
    encode(
        "error",
        &E { code: err.code.as_str(), message: &err.message, reference, retry_after_ms: err.retry_after_ms },
        128,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn payload(frame: &Bytes) -> Value {
        let skip = match frame[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        serde_json::from_slice(&frame[skip..]).unwrap()
    }

    #[test]
    fn encodes_events() {
        let m = Message {
            id: 5,
            room_id: 1,
            seq: 2,
            sender_id: 3,
            content: "hé".into(),
            timestamp: DateTime::from_timestamp(0, 0).unwrap(),
            client_msg_id: None,
            reply_to: None,
            mentions: vec![],
        };
        let v = payload(&message_frame(&m));
        assert_eq!(v["reply_to"], Value::Null);
        assert_eq!(v["mentions"], serde_json::json!([]));
        assert_eq!(payload(&event_frame(&RoomEvent::Message(m.clone()))), v, "one encoding of a message");
        let del = RoomEvent::Delete(crate::model::Delete { room_id: 1, seq: 3, message_id: 5, user_id: None });
        let d = payload(&event_frame(&del));
        assert_eq!(d, serde_json::json!({"type": "delete", "room_id": 1, "seq": 3, "message_id": 5, "user_id": null}));
        let join = RoomEvent::Member(crate::model::MemberEvent {
            room_id: 1,
            seq: 4,
            user_id: 7,
            action: crate::model::MemberAction::Join,
            by: Some(2),
        });
        let j = payload(&event_frame(&join));
        assert_eq!(
            (&j["type"], &j["action"], &j["by"]),
            (&Value::from("member"), &Value::from("join"), &Value::from(2))
        );
        assert_eq!(v["type"], "message");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(v["client_msg_id"], Value::Null);
        let v = payload(&error_frame(&ApiError::unavailable("x", 100), None));
        assert_eq!(v["code"], "unavailable");
        assert_eq!(v["retry_after_ms"], 100);
        assert!(v.as_object().unwrap().contains_key("ref"));
        let v = payload(&synced_frame(&[(1, 9)], true));
        assert_eq!(v["rooms"]["1"], 9);
        assert_eq!(v["more"], true);
    }
}
