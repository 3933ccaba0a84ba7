//! Client events: the JSON a client sends, parsed and validated into [`ClientEvent`] (README,
//! "WebSocket events"). Identity fields are checked against the connection's user here, so no
//! layer above ever sees a client-chosen `sender_id`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::{ApiError, ErrorCode};
use crate::model::DEFAULT_ROOM;

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
        /// The message replied to.
        reply_to: Option<i64>,
        /// Mentioned user ids (deduplicated, at most [`MAX_MENTIONS`]).
        mentions: Vec<i64>,
    },
    /// Replace a message's content (its sender only).
    Edit {
        /// The message.
        message_id: i64,
        /// New text.
        content: String,
    },
    /// Erase a message (its sender only).
    Delete {
        /// The message.
        message_id: i64,
    },
    /// Add or remove a reaction.
    React {
        /// The message.
        message_id: i64,
        /// 1..=32 bytes of UTF-8, no whitespace.
        emoji: String,
        /// Add (true) or remove.
        on: bool,
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
    #[serde(default, deserialize_with = "opt_id")]
    reply_to: Option<i64>,
    mentions: Option<Vec<i64>>,
    emoji: Option<String>,
    on: Option<bool>,
}

/// Most users one message may mention.
pub const MAX_MENTIONS: usize = 50;
/// Longest emoji, in bytes of UTF-8.
pub const MAX_EMOJI_BYTES: usize = 32;

/// Limits that decoding enforces.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest content, in characters after trim.
    pub content_max_chars: usize,
    /// Most rooms in one `sync` (`sync.max_rooms`).
    pub sync_max_rooms: usize,
}

/// Highest `last_seen_seq` a `sync` may name: 2^53, the largest integer every JSON client can
/// hold exactly. Keeps every seq computation far from overflow.
pub const MAX_SEEN_SEQ: i64 = 1 << 53;

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
            check_content(&content, limits).map_err(reject)?;
            if let Some(id) = &raw.client_msg_id {
                if id.is_empty() || id.chars().count() > 64 || id.contains('\0') {
                    return Err(reject(ApiError::bad_request("client_msg_id must be 1 to 64 characters, no NUL")));
                }
            }
            let mut mentions = raw.mentions.unwrap_or_default();
            mentions.sort_unstable();
            mentions.dedup();
            if mentions.len() > MAX_MENTIONS {
                return Err(reject(ApiError::limit(format!("at most {MAX_MENTIONS} mentions"))));
            }
            let (client_msg_id, reply_to) = (raw.client_msg_id, raw.reply_to);
            Ok(ClientEvent::Message { room_id, content, client_msg_id, reply_to, mentions })
        }
        "edit" => {
            let message_id = need_message_id(raw.message_id, "edit").map_err(reject)?;
            let content = raw.content.ok_or_else(|| reject(ApiError::bad_request("edit needs a string `content`")))?;
            check_content(&content, limits).map_err(reject)?;
            Ok(ClientEvent::Edit { message_id, content })
        }
        "delete" => Ok(ClientEvent::Delete { message_id: need_message_id(raw.message_id, "delete").map_err(reject)? }),
        "react" => {
            let message_id = need_message_id(raw.message_id, "react").map_err(reject)?;
            let emoji = raw.emoji.ok_or_else(|| reject(ApiError::bad_request("react needs a string `emoji`")))?;
            if emoji.is_empty()
                || emoji.len() > MAX_EMOJI_BYTES
                || emoji.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                let why = format!("emoji must be 1 to {MAX_EMOJI_BYTES} bytes without whitespace");
                return Err(reject(ApiError::bad_request(why)));
            }
            let on = raw.on.ok_or_else(|| reject(ApiError::bad_request("react needs a boolean `on`")))?;
            Ok(ClientEvent::React { message_id, emoji, on })
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
            parse_sync_rooms(rooms, limits.sync_max_rooms).map_err(reject)
        }
        other => Err(reject(ApiError::bad_request(format!("unknown event type {other:?}")))),
    }
}

/// The content rules of `message` and `edit`.
fn check_content(content: &str, limits: DecodeLimits) -> Result<(), ApiError> {
    let chars = content.trim().chars().count();
    if chars == 0 {
        return Err(ApiError::bad_request("content is empty"));
    }
    // PostgreSQL text cannot hold NUL: refused here, it would fail the whole group commit it
    // lands in (everyone's writes), not just this one.
    if content.contains('\0') {
        return Err(ApiError::bad_request("content cannot contain NUL (\\u0000)"));
    }
    if chars > limits.content_max_chars {
        let max = limits.content_max_chars;
        return Err(ApiError::new(ErrorCode::TooLarge, format!("content is longer than {max} characters")));
    }
    Ok(())
}

fn need_message_id(id: Option<i64>, kind: &str) -> Result<i64, ApiError> {
    id.ok_or_else(|| ApiError::bad_request(format!("{kind} needs `message_id`")))
}

/// A `sync`'s rooms: canonical decimal ids (no sign, no leading zero, no blanks; the map's keys
/// are unique strings, so the ids are unique too), at most `max_rooms`, each seen seq in
/// `0..=MAX_SEEN_SEQ`.
fn parse_sync_rooms(rooms: BTreeMap<String, i64>, max_rooms: usize) -> Result<ClientEvent, ApiError> {
    if rooms.len() > max_rooms {
        return Err(ApiError::bad_request(format!("sync names {} rooms; at most {max_rooms}", rooms.len())));
    }
    let mut parsed = Vec::with_capacity(rooms.len());
    for (k, v) in rooms {
        let canonical = !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) && (k == "0" || !k.starts_with('0'));
        let id = k
            .parse::<i64>()
            .ok()
            .filter(|_| canonical)
            .ok_or_else(|| ApiError::bad_request(format!("room id {k:?} is not a decimal integer")))?;
        if !(0..=MAX_SEEN_SEQ).contains(&v) {
            return Err(ApiError::bad_request(format!("last seen seq must be from 0 to {MAX_SEEN_SEQ}")));
        }
        parsed.push((id, v));
    }
    Ok(ClientEvent::Sync { rooms: parsed })
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

#[cfg(test)]
mod tests {
    use super::*;

    const L: DecodeLimits = DecodeLimits { content_max_chars: 10, sync_max_rooms: 3 };

    #[test]
    fn message_defaults_to_room_one() {
        let e = decode(br#"{"type":"message","content":"hi"}"#, 7, L).unwrap();
        let want = ClientEvent::Message {
            room_id: 1,
            content: "hi".into(),
            client_msg_id: None,
            reply_to: None,
            mentions: vec![],
        };
        assert_eq!(e, want);
    }

    #[test]
    fn room_events() {
        let e = decode(br#"{"type":"message","content":"hi","reply_to":"4","mentions":[3,2,3]}"#, 7, L).unwrap();
        assert!(matches!(e, ClientEvent::Message { reply_to: Some(4), ref mentions, .. } if mentions == &[2, 3]));
        let many = format!(r#"{{"type":"message","content":"x","mentions":{:?}}}"#, (0..51).collect::<Vec<_>>());
        assert_eq!(decode(many.as_bytes(), 7, L).unwrap_err().error.code, ErrorCode::TooLarge);
        let e = decode(br#"{"type":"edit","message_id":5,"content":"new"}"#, 7, L).unwrap();
        assert_eq!(e, ClientEvent::Edit { message_id: 5, content: "new".into() });
        let r = decode(br#"{"type":"edit","message_id":5,"content":"aaaaaaaaaaa"}"#, 7, L).unwrap_err();
        assert_eq!((r.error.code, r.reference), (ErrorCode::TooLarge, Some(Value::from(5))));
        assert_eq!(
            decode(br#"{"type":"delete","message_id":5}"#, 7, L).unwrap(),
            ClientEvent::Delete { message_id: 5 }
        );
        let e = decode(r#"{"type":"react","message_id":5,"emoji":"👍","on":true}"#.as_bytes(), 7, L).unwrap();
        assert_eq!(e, ClientEvent::React { message_id: 5, emoji: "👍".into(), on: true });
        for bad in [
            r#"{"type":"react","message_id":5,"emoji":"a b","on":true}"#,
            r#"{"type":"react","message_id":5,"emoji":"","on":true}"#,
            r#"{"type":"react","message_id":5,"emoji":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","on":true}"#,
            r#"{"type":"react","message_id":5,"emoji":"x"}"#,
            r#"{"type":"delete"}"#,
            r#"{"type":"edit","message_id":5}"#,
        ] {
            let r = decode(bad.as_bytes(), 7, L).unwrap_err();
            assert_eq!(r.error.code, ErrorCode::BadRequest, "{bad}");
        }
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
    fn sync_room_keys_are_canonical_and_bounded() {
        for bad in [
            r#"{"type":"sync","rooms":{"01":1}}"#,
            r#"{"type":"sync","rooms":{"+1":1}}"#,
            r#"{"type":"sync","rooms":{" 1":1}}"#,
            r#"{"type":"sync","rooms":{"1 ":1}}"#,
            r#"{"type":"sync","rooms":{"":1}}"#,
            r#"{"type":"sync","rooms":{"-1":1}}"#,
            r#"{"type":"sync","rooms":{"99999999999999999999":1}}"#,
            r#"{"type":"sync","rooms":{"1":-1}}"#,
            r#"{"type":"sync","rooms":{"1":9007199254740993}}"#,
            r#"{"type":"sync","rooms":{"1":0,"2":0,"3":0,"4":0}}"#,
        ] {
            let r = decode(bad.as_bytes(), 1, L).unwrap_err();
            assert_eq!(r.error.code, ErrorCode::BadRequest, "{bad}");
        }
        let e = decode(br#"{"type":"sync","rooms":{"1":9007199254740992,"1":3}}"#, 1, L).unwrap();
        assert_eq!(e, ClientEvent::Sync { rooms: vec![(1, 3)] }, "a repeated key counts once");
    }

    #[test]
    fn sync_rooms() {
        let e = decode(br#"{"type":"sync","rooms":{"1":4,"9":0}}"#, 1, L).unwrap();
        assert_eq!(e, ClientEvent::Sync { rooms: vec![(1, 4), (9, 0)] });
    }
}
