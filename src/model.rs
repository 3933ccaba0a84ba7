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
    /// The message this one replies to (same room).
    pub reply_to: Option<i64>,
    /// Mentioned members.
    pub mentions: Vec<i64>,
}

/// A room event (README "Room events"): everything that takes a room's next seq. Serialises
/// as the WebSocket event, `type` included.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RoomEvent {
    /// A new message.
    Message(Message),
    /// A message's content replaced by its sender.
    Edit(Edit),
    /// A message erased (a tombstone stays).
    Delete(Delete),
    /// A reaction added or removed.
    Reaction(Reaction),
    /// A member joined or left.
    Member(MemberEvent),
}

impl RoomEvent {
    /// The room.
    pub fn room_id(&self) -> i64 {
        match self {
            RoomEvent::Message(m) => m.room_id,
            RoomEvent::Edit(e) => e.room_id,
            RoomEvent::Delete(e) => e.room_id,
            RoomEvent::Reaction(e) => e.room_id,
            RoomEvent::Member(e) => e.room_id,
        }
    }

    /// The event's seq in its room.
    pub fn seq(&self) -> i64 {
        match self {
            RoomEvent::Message(m) => m.seq,
            RoomEvent::Edit(e) => e.seq,
            RoomEvent::Delete(e) => e.seq,
            RoomEvent::Reaction(e) => e.seq,
            RoomEvent::Member(e) => e.seq,
        }
    }

    /// The member whose delivery of the room ends with this event (a `leave`).
    pub fn leaving(&self) -> Option<i64> {
        match self {
            RoomEvent::Member(e) if e.action == MemberAction::Leave => Some(e.user_id),
            _ => None,
        }
    }
}

/// `edit`: the message's new content.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Edit {
    /// Room.
    pub room_id: i64,
    /// The event's seq.
    pub seq: i64,
    /// The edited message.
    pub message_id: i64,
    /// Who edited (the sender).
    pub user_id: i64,
    /// The content (in a replay: the message's current content, "" once deleted).
    pub content: String,
    /// When.
    #[serde(serialize_with = "rfc3339")]
    pub edited_at: DateTime<Utc>,
}

/// `delete`: the message's content is erased.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Delete {
    /// Room.
    pub room_id: i64,
    /// The event's seq.
    pub seq: i64,
    /// The deleted message.
    pub message_id: i64,
    /// Who deleted it (null: the admin API).
    pub user_id: Option<i64>,
}

/// `reaction`: a user's emoji on a message, added or removed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reaction {
    /// Room.
    pub room_id: i64,
    /// The event's seq.
    pub seq: i64,
    /// The message.
    pub message_id: i64,
    /// Who reacted.
    pub user_id: i64,
    /// The emoji.
    pub emoji: String,
    /// Added (true) or removed.
    pub on: bool,
}

/// `join` or `leave`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MemberAction {
    /// Became a member.
    Join,
    /// Stopped being one.
    Leave,
}

/// `member`: a membership change.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemberEvent {
    /// Room.
    pub room_id: i64,
    /// The event's seq.
    pub seq: i64,
    /// The member.
    pub user_id: i64,
    /// Joined or left.
    pub action: MemberAction,
    /// Who made the change (null: the admin API or sign-up).
    pub by: Option<i64>,
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

/// [`rfc3339`] for an optional time (`null` when absent).
pub fn rfc3339_opt<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}
