//! The domain values every layer passes around: committed messages, memberships, and the
//! default room. Plain data with no behaviour beyond serialisation; imports nothing of the
//! crate.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// Room 1, `general`: every user is a member; client events without `room_id` mean it (the
/// original app's clients know no other room).
pub const DEFAULT_ROOM: i64 = 1;

/// A committed message as the bus, `sync` and gap fills carry it (the `message` event's body).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Message {
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

/// A user's membership as a connection needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// Room.
    pub room_id: i64,
    /// Members of the room (for the presence cut-off).
    pub member_count: i64,
    /// The room's last seq at the look-up (where the bus starts the room's order on this node).
    pub last_seq: i64,
}

/// What a receipt needs to know about the message it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageMeta {
    /// Room.
    pub room_id: i64,
    /// Seq in the room.
    pub seq: i64,
    /// Author.
    pub sender_id: i64,
}

/// A committed receipt as the room sees it: the message's booleans after the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptState {
    /// Room of the message.
    pub room_id: i64,
    /// Who reported.
    pub user_id: i64,
    /// The message.
    pub message_id: i64,
    /// The message's `delivered` after the update.
    pub delivered: bool,
    /// The message's `read` after the update.
    pub read: bool,
}

/// Serialises a time as RFC 3339 UTC with microseconds and a `Z`.
pub fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
}
