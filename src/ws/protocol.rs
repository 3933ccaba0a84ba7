//! The event format (SPEC §5): client events parsed from JSON, server events encoded once into
//! ready-to-send WebSocket frames.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ErrorCode};
use crate::ws::frame;

/// Room a client event means when it names none (the seed's single shared chat).
pub const DEFAULT_ROOM: i64 = 1;

/// A decoded, validated client event.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// Post a message.
    Message {
        /// Target room.
        room_id: i64,
        /// Text as sent.
        content: String,
        /// Idempotency key chosen by the client.
        client_msg_id: Option<String>,
    },
    /// Typing indicator.
    Typing {
        /// Target room.
        room_id: i64,
        /// `true` = start.
        start: bool,
    },
    /// Delivery / read receipt up to a message.
    StatusUpdate {
        /// The message reported.
        message_id: i64,
        /// Delivered flag reported.
        delivered: bool,
        /// Read flag reported (implies delivered).
        read: bool,
    },
    /// Replay after reconnect.
    Sync {
        /// room id → last seen seq.
        rooms: Vec<(i64, i64)>,
    },
}

/// Why a client event was refused, with the `ref` to echo back.
#[derive(Debug)]
pub struct Rejected {
    /// The error to answer.
    pub error: ApiError,
    /// The event's `client_msg_id` or `message_id`, if it had one.
    pub reference: Option<Value>,
}

/// Raw shape of every client event; unknown fields are ignored for forward compatibility.
#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "type")]
    kind: String,
    content: Option<String>,
    #[serde(default, deserialize_with = "opt_id")]
    room_id: Option<i64>,
    client_msg_id: Option<String>,
    #[serde(default, deserialize_with = "opt_id")]
    sender_id: Option<i64>,
    #[serde(default, deserialize_with = "opt_id")]
    user_id: Option<i64>,
    state: Option<String>,
    #[serde(default, deserialize_with = "opt_id")]
    message_id: Option<i64>,
    delivered: Option<bool>,
    read: Option<bool>,
    rooms: Option<BTreeMap<String, i64>>,
}

/// Limits that decoding enforces.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest content, in characters after trim.
    pub content_max_chars: usize,
}

/// Decodes one text frame from user `me`.
pub fn decode(text: &[u8], me: i64, limits: DecodeLimits) -> Result<ClientEvent, Rejected> {
    let raw: Raw = serde_json::from_slice(text).map_err(|e| Rejected {
        error: ApiError::bad_request(format!("malformed event: {e}")),
        reference: salvage_ref(text),
    })?;
    let reference = raw.client_msg_id.clone().map(Value::String).or_else(|| raw.message_id.map(Value::from));
    let reject = |error: ApiError| Rejected { error, reference: reference.clone() };

    for claimed in [raw.sender_id, raw.user_id].into_iter().flatten() {
        if claimed != me {
            return Err(reject(ApiError::forbidden("sender_id/user_id must be your own user id")));
        }
    }
    let room_id = raw.room_id.unwrap_or(DEFAULT_ROOM);
    match raw.kind.as_str() {
        "message" => {
            let content =
                raw.content.ok_or_else(|| reject(ApiError::bad_request("message needs a string `content`")))?;
            let chars = content.trim().chars().count();
            if chars == 0 {
                return Err(reject(ApiError::bad_request("content is empty")));
            }
            // PostgreSQL text cannot hold NUL: refused here, it would fail the whole group
            // commit it lands in (everyone's writes), not just this one.
            if content.contains('\0') || raw.client_msg_id.as_deref().is_some_and(|id| id.contains('\0')) {
                return Err(reject(ApiError::bad_request("content and client_msg_id cannot contain NUL (\\u0000)")));
            }
            if chars > limits.content_max_chars {
                return Err(reject(ApiError::new(
                    ErrorCode::TooLarge,
                    format!("content is longer than {} characters", limits.content_max_chars),
                )));
            }
            if let Some(id) = &raw.client_msg_id {
                if id.is_empty() || id.chars().count() > 64 {
                    return Err(reject(ApiError::bad_request("client_msg_id must be 1 to 64 characters")));
                }
            }
            Ok(ClientEvent::Message { room_id, content, client_msg_id: raw.client_msg_id })
        }
        "typing" => {
            let start = match raw.state.as_deref() {
                None | Some("start") => true,
                Some("stop") => false,
                Some(_) => return Err(reject(ApiError::bad_request("state must be \"start\" or \"stop\""))),
            };
            Ok(ClientEvent::Typing { room_id, start })
        }
        "status_update" => {
            let message_id =
                raw.message_id.ok_or_else(|| reject(ApiError::bad_request("status_update needs `message_id`")))?;
            let read = raw.read.unwrap_or(false);
            // A bare status_update reports delivery, as the seed client sends it.
            let delivered = raw.delivered.unwrap_or(!read) || read;
            if !delivered {
                return Err(reject(ApiError::bad_request("status_update reports nothing")));
            }
            Ok(ClientEvent::StatusUpdate { message_id, delivered, read })
        }
        "sync" => {
            let rooms = raw.rooms.ok_or_else(|| reject(ApiError::bad_request("sync needs `rooms`")))?;
            let mut parsed = Vec::with_capacity(rooms.len());
            for (k, v) in rooms {
                let id = k
                    .parse::<i64>()
                    .map_err(|_| reject(ApiError::bad_request(format!("room id {k:?} is not a number"))))?;
                if v < 0 {
                    return Err(reject(ApiError::bad_request("last seen seq must be >= 0")));
                }
                parsed.push((id, v));
            }
            Ok(ClientEvent::Sync { rooms: parsed })
        }
        other => Err(reject(ApiError::bad_request(format!("unknown event type {other:?}")))),
    }
}

/// Finds `client_msg_id`/`message_id` in an event that failed typed decoding.
fn salvage_ref(text: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(text).ok()?;
    let obj = v.as_object()?;
    obj.get("client_msg_id")
        .filter(|v| v.is_string())
        .or_else(|| obj.get("message_id").filter(|v| v.is_number()))
        .cloned()
}

/// Ids arrive as JSON integers or, from some clients, as decimal strings.
fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Num(i64),
        Str(String),
    }
    match Option::<Id>::deserialize(d)? {
        None => Ok(None),
        Some(Id::Num(n)) => Ok(Some(n)),
        Some(Id::Str(s)) => {
            s.parse().map(Some).map_err(|_| serde::de::Error::custom(format!("id {s:?} is not an integer")))
        }
    }
}

// === Server events ===

/// A committed message as the bus and history carry it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MessageEvent {
    /// Global id.
    pub id: i64,
    /// Room.
    pub room_id: i64,
    /// Per-room sequence number.
    pub seq: i64,
    /// Author.
    pub sender_id: i64,
    /// Text.
    pub content: String,
    /// Commit time.
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// The sender's idempotency key.
    pub client_msg_id: Option<String>,
}

/// Serialises a time as RFC 3339 UTC with microseconds and a `Z`.
pub fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

/// Encodes `{"type": kind, ...body}` into a text frame. Serialising plain structs cannot fail.
fn encode<T: Serialize>(kind: &str, body: &T, size_hint: usize) -> Bytes {
    frame::text_with(size_hint, |w| serde_json::to_writer(w, &Tagged { kind, body }))
        .unwrap_or_else(|_| frame::encode(frame::OP_TEXT, br#"{"type":"error","code":"internal"}"#))
}

/// `message`.
pub fn message_frame(m: &MessageEvent) -> Bytes {
    encode("message", m, 160 + m.content.len())
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

    const L: DecodeLimits = DecodeLimits { content_max_chars: 10 };

    fn payload(frame: &Bytes) -> Value {
        let skip = match frame[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        serde_json::from_slice(&frame[skip..]).unwrap()
    }

    #[test]
    fn message_defaults_to_room_one() {
        let e = decode(br#"{"type":"message","content":"hi"}"#, 7, L).unwrap();
        assert_eq!(e, ClientEvent::Message { room_id: 1, content: "hi".into(), client_msg_id: None });
    }

    #[test]
    fn identity_must_match() {
        let r = decode(br#"{"type":"message","content":"hi","sender_id":8,"client_msg_id":"a"}"#, 7, L).unwrap_err();
        assert_eq!(r.error.code, ErrorCode::Forbidden);
        assert_eq!(r.reference, Some(Value::String("a".into())));
        assert!(decode(br#"{"type":"message","content":"hi","sender_id":"7"}"#, 7, L).is_ok());
    }

    #[test]
    fn content_limits() {
        let r = decode(br#"{"type":"message","content":"   "}"#, 1, L).unwrap_err();
        assert_eq!(r.error.code, ErrorCode::BadRequest);
        let r = decode(br#"{"type":"message","content":"aaaaaaaaaaa"}"#, 1, L).unwrap_err();
        assert_eq!(r.error.code, ErrorCode::TooLarge);
        // characters, not bytes
        assert!(decode("{\"type\":\"message\",\"content\":\"éééééééééé\"}".as_bytes(), 1, L).is_ok());
        let r = decode(br#"{"type":"message","content":"a\u0000b"}"#, 1, L).unwrap_err();
        assert_eq!(r.error.code, ErrorCode::BadRequest);
        let r = decode(br#"{"type":"message","content":"ab","client_msg_id":"\u0000"}"#, 1, L).unwrap_err();
        assert_eq!(r.error.code, ErrorCode::BadRequest);
    }

    #[test]
    fn malformed_and_wrong_types() {
        for bad in [
            &b"not json"[..],
            br#"{"content":"x"}"#,
            br#"{"type":"nope"}"#,
            br#"{"type":"message","content":5}"#,
            br#"{"type":"message","content":"x","room_id":"abc"}"#,
            br#"{"type":"status_update"}"#,
            br#"{"type":"sync","rooms":{"x":1}}"#,
        ] {
            let r = decode(bad, 1, L).unwrap_err();
            assert_eq!(r.error.code, ErrorCode::BadRequest, "{}", String::from_utf8_lossy(bad));
        }
        let r = decode(br#"{"type":"message","content":5,"client_msg_id":"c1"}"#, 1, L).unwrap_err();
        assert_eq!(r.reference, Some(Value::String("c1".into())));
    }

    #[test]
    fn status_read_implies_delivered() {
        let e = decode(br#"{"type":"status_update","message_id":3,"read":true}"#, 1, L).unwrap();
        assert_eq!(e, ClientEvent::StatusUpdate { message_id: 3, delivered: true, read: true });
    }

    #[test]
    fn sync_rooms() {
        let e = decode(br#"{"type":"sync","rooms":{"1":4,"9":0}}"#, 1, L).unwrap();
        assert_eq!(e, ClientEvent::Sync { rooms: vec![(1, 4), (9, 0)] });
    }

    #[test]
    fn encodes_events() {
        let m = MessageEvent {
            id: 5,
            room_id: 1,
            seq: 2,
            sender_id: 3,
            content: "hé".into(),
            timestamp: DateTime::from_timestamp(0, 0).unwrap(),
            client_msg_id: None,
        };
        let v = payload(&message_frame(&m));
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
