//! Property tests of the client-event decoder: any bytes decode to an event or a typed refusal,
//! never a panic, and what it accepts respects the limits. Failing inputs proptest finds are
//! kept in `proptest-regressions/` (the corpus, committed) and replayed on every run.

use proptest::prelude::*;

use super::client::{decode, ClientEvent, DecodeLimits, MAX_SEEN_SEQ};

const L: DecodeLimits = DecodeLimits { content_max_chars: 64, sync_max_rooms: 8 };

/// JSON-ish text: events with random types, fields and values, plus raw noise.
fn event_text() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        Just("type"),
        Just("content"),
        Just("room_id"),
        Just("client_msg_id"),
        Just("sender_id"),
        Just("user_id"),
        Just("state"),
        Just("message_id"),
        Just("delivered"),
        Just("read"),
        Just("rooms"),
        Just("reply_to"),
        Just("mentions"),
        Just("emoji"),
        Just("on"),
    ];
    let value = prop_oneof![
        Just("\"message\"".to_string()),
        Just("\"typing\"".to_string()),
        Just("\"sync\"".to_string()),
        Just("\"status_update\"".to_string()),
        Just("\"edit\"".to_string()),
        Just("\"delete\"".to_string()),
        Just("\"react\"".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "\\PC{0,80}".prop_map(|s| serde_json::Value::String(s).to_string()),
        Just("true".to_string()),
        Just("null".to_string()),
        prop::collection::btree_map("[ +0-9a-z]{0,4}", any::<i64>(), 0..12)
            .prop_map(|m| serde_json::to_string(&m).unwrap_or_default()),
    ];
    let object = prop::collection::vec((key, value), 0..8).prop_map(|fields| {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(",")).into_bytes()
    });
    prop_oneof![object, prop::collection::vec(any::<u8>(), 0..256)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decode_never_panics_and_accepted_events_respect_the_limits(text in event_text(), me in 1i64..5) {
        match decode(&text, me, L) {
            Ok(ClientEvent::Message { content, client_msg_id, mentions, .. }) => {
                let n = content.trim().chars().count();
                prop_assert!((1..=L.content_max_chars).contains(&n));
                prop_assert!(!content.contains('\0'));
                prop_assert!(client_msg_id.is_none_or(|id| (1..=64).contains(&id.chars().count())));
                prop_assert!(mentions.len() <= super::client::MAX_MENTIONS);
            }
            Ok(ClientEvent::Edit { content, .. }) => {
                prop_assert!((1..=L.content_max_chars).contains(&content.trim().chars().count()));
            }
            Ok(ClientEvent::React { emoji, .. }) => {
                prop_assert!((1..=super::client::MAX_EMOJI_BYTES).contains(&emoji.len()));
                prop_assert!(!emoji.chars().any(char::is_whitespace));
            }
            Ok(ClientEvent::Delete { .. }) => {}
            Ok(ClientEvent::Sync { rooms }) => {
                prop_assert!(rooms.len() <= L.sync_max_rooms);
                prop_assert!(rooms.iter().all(|(id, seen)| *id >= 0 && (0..=MAX_SEEN_SEQ).contains(seen)));
            }
            Ok(ClientEvent::StatusUpdate { delivered, read, .. }) => prop_assert!(delivered || !read),
            Ok(ClientEvent::Typing { .. }) => {}
            Err(r) => prop_assert!(!r.error.message.is_empty()),
        }
    }
}
