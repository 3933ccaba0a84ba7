//! Message reads: history pages and threads, receipt look-ups, and the room-event ranges that
//! `sync`, the events listing and gap fills read. Written by the group commit
//! ([`super::group_commit`]) and, for membership events, by [`super::rooms`].

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use super::Store;
use crate::error::StoreError;
use crate::model::{self, rfc3339, rfc3339_opt, MemberAction, MessageMeta, RoomEvent};

/// Author block of a history message.
#[derive(Debug, Clone, Serialize)]
pub struct Sender {
    /// User id.
    pub id: i64,
    /// Username.
    pub username: String,
}

/// One emoji's reactions on a message, as the caller sees them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReactionCount {
    /// The emoji.
    pub emoji: String,
    /// Users who reacted with it.
    pub count: i64,
    /// Whether the caller is one of them.
    pub me: bool,
}

/// A message as `GET /chat/history` returns it: as it stands now.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryMessage {
    /// Global id.
    pub id: i64,
    /// Room.
    pub room_id: i64,
    /// Per-room seq.
    pub seq: i64,
    /// Author id.
    pub sender_id: i64,
    /// Author.
    pub sender: Sender,
    /// Text ("" once deleted).
    pub content: String,
    /// Commit time.
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// Some recipient reported delivery.
    pub delivered: bool,
    /// Some recipient reported reading.
    pub read: bool,
    /// Sender's idempotency key.
    pub client_msg_id: Option<String>,
    /// The message replied to.
    pub reply_to: Option<i64>,
    /// Mentioned members.
    pub mentions: Vec<i64>,
    /// Last edit.
    #[serde(serialize_with = "rfc3339_opt")]
    pub edited_at: Option<DateTime<Utc>>,
    /// Erased (a tombstone).
    pub deleted: bool,
    /// Replies to it.
    pub reply_count: i32,
    /// Reactions, most used first.
    pub reactions: Vec<ReactionCount>,
}

/// Which messages a history page lists.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Room.
    pub room_id: i64,
    /// At most this many.
    pub limit: i64,
    /// Only seqs below this one.
    pub before_seq: Option<i64>,
    /// Only the replies to this message.
    pub thread: Option<i64>,
    /// Whose `me` the reactions show.
    pub caller: i64,
}

/// A room's log between two seqs: its messages and its other events, merged by seq. An edit
/// shows the message's current content (so erased content is never sent again).
const EVENTS_SQL: &str = "SELECT * FROM ( \
     (SELECT m.seq, 'message' AS kind, m.id, m.sender_id, m.content, m.created_at, m.client_msg_id, \
             m.reply_to, m.mentions, NULL::TEXT AS emoji, NULL::BOOL AS flag, NULL::BIGINT AS by_id \
      FROM messages m WHERE m.room_id = $1 AND m.seq > $2 AND m.seq < $3 ORDER BY m.seq LIMIT $4) \
     UNION ALL \
     (SELECT e.seq, e.kind, e.message_id, e.user_id, COALESCE(x.content, ''), e.created_at, NULL, \
             NULL, NULL, e.emoji, e.flag, e.by_id \
      FROM room_events e LEFT JOIN messages x ON e.kind = 'edit' AND x.id = e.message_id \
      WHERE e.room_id = $1 AND e.seq > $2 AND e.seq < $3 ORDER BY e.seq LIMIT $4) \
 ) ev ORDER BY seq LIMIT $4";

/// Decodes a row of [`EVENTS_SQL`].
fn event_from_row(room_id: i64, r: &Row) -> Result<RoomEvent, StoreError> {
    let seq: i64 = r.get(0);
    let kind: &str = r.get(1);
    let (id, user): (Option<i64>, Option<i64>) = (r.get(2), r.get(3));
    let missing = || StoreError::Db(format!("room {room_id} event {seq} ({kind}) is incomplete"));
    let flag = || r.get::<_, Option<bool>>(10).ok_or_else(missing);
    Ok(match kind {
        "message" => RoomEvent::Message(model::Message {
            id: id.ok_or_else(missing)?,
            room_id,
            seq,
            sender_id: user.ok_or_else(missing)?,
            content: r.get(4),
            timestamp: r.get(5),
            client_msg_id: r.get(6),
            reply_to: r.get(7),
            mentions: r.get::<_, Option<Vec<i64>>>(8).unwrap_or_default(),
        }),
        "edit" => RoomEvent::Edit(model::Edit {
            room_id,
            seq,
            message_id: id.ok_or_else(missing)?,
            user_id: user.ok_or_else(missing)?,
            content: r.get(4),
            edited_at: r.get(5),
        }),
        "delete" => {
            RoomEvent::Delete(model::Delete { room_id, seq, message_id: id.ok_or_else(missing)?, user_id: user })
        }
        "reaction" => RoomEvent::Reaction(model::Reaction {
            room_id,
            seq,
            message_id: id.ok_or_else(missing)?,
            user_id: user.ok_or_else(missing)?,
            emoji: r.get::<_, Option<String>>(9).ok_or_else(missing)?,
            on: flag()?,
        }),
        "member" => RoomEvent::Member(model::MemberEvent {
            room_id,
            seq,
            user_id: user.ok_or_else(missing)?,
            action: if flag()? { MemberAction::Join } else { MemberAction::Leave },
            by: r.get(11),
        }),
        _ => return Err(missing()),
    })
}

/// The columns of a history message (`m` messages, `u` its sender; `$4` is the caller, whose
/// reactions are looked up only for messages that have any), decoded by [`history_from_row`].
pub(super) const HISTORY_COLUMNS: &str = "m.id, m.room_id, m.seq, m.sender_id, u.username, m.content, \
     m.created_at, m.delivered, m.read, m.client_msg_id, m.reply_to, m.mentions, m.edited_at, m.deleted, \
     m.reply_count, m.reactions::TEXT, \
     CASE WHEN m.reactions IS NOT NULL THEN \
         ARRAY(SELECT r.emoji FROM reactions r WHERE r.message_id = m.id AND r.user_id = $4) END";

/// Decodes a row of [`HISTORY_COLUMNS`].
pub(super) fn history_from_row(r: &Row) -> HistoryMessage {
    let counts: BTreeMap<String, i64> =
        r.get::<_, Option<String>>(15).and_then(|j| serde_json::from_str(&j).ok()).unwrap_or_default();
    let mine: Vec<String> = r.get::<_, Option<Vec<String>>>(16).unwrap_or_default();
    let mut reactions: Vec<ReactionCount> =
        counts.into_iter().map(|(emoji, count)| ReactionCount { me: mine.contains(&emoji), emoji, count }).collect();
    reactions.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.emoji.cmp(&b.emoji)));
    HistoryMessage {
        id: r.get(0),
        room_id: r.get(1),
        seq: r.get(2),
        sender_id: r.get(3),
        sender: Sender { id: r.get(3), username: r.get(4) },
        content: r.get(5),
        timestamp: r.get(6),
        delivered: r.get(7),
        read: r.get(8),
        client_msg_id: r.get(9),
        reply_to: r.get(10),
        mentions: r.get::<_, Option<Vec<i64>>>(11).unwrap_or_default(),
        edited_at: r.get(12),
        deleted: r.get(13),
        reply_count: r.get(14),
        reactions,
    }
}

impl Store {
    /// A read in ONE round trip: `query_typed` sends the statement unnamed with its parameter
    /// types instead of preparing it first (every read here takes BIGINT parameters only).
    pub(super) async fn read(&self, sql: &str, params: &[i64]) -> Result<Vec<Row>, StoreError> {
        let c = self.conn().await?;
        let typed: Vec<(&(dyn ToSql + Sync), Type)> =
            params.iter().map(|p| (p as &(dyn ToSql + Sync), Type::INT8)).collect();
        Ok(c.query_typed(sql, &typed).await?)
    }

    /// A page of history (or of one thread's replies), newest first.
    pub async fn history(&self, page: Page) -> Result<Vec<HistoryMessage>, StoreError> {
        let before = page.before_seq.unwrap_or(i64::MAX);
        // Ordered like the index it must walk backwards ((room_id, seq), or the thread index
        // (reply_to, seq)), so even a young table without statistics gets the bounded index
        // scan and not a sort of every older row.
        let (filter, order) = match page.thread {
            Some(_) => ("m.room_id = $1 AND m.reply_to = $5", "m.reply_to DESC, m.seq DESC"),
            None => ("m.room_id = $1 AND $5 = 0", "m.room_id DESC, m.seq DESC"),
        };
        let sql = format!(
            "SELECT {HISTORY_COLUMNS} FROM messages m JOIN users u ON u.id = m.sender_id \
             WHERE {filter} AND m.seq < $2 ORDER BY {order} LIMIT $3"
        );
        let params = [page.room_id, before, page.limit, page.caller, page.thread.unwrap_or(0)];
        let rows = self.read(&sql, &params).await?;
        Ok(rows.iter().map(history_from_row).collect())
    }

    /// Room, seq and author of each of `ids` that exists (one query for a batch of look-ups).
    pub async fn message_metas(&self, ids: &[i64]) -> Result<HashMap<i64, MessageMeta>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .query_typed(
                "SELECT id, room_id, seq, sender_id FROM messages WHERE id = ANY($1)",
                &[(&ids, Type::INT8_ARRAY)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), MessageMeta { room_id: r.get(1), seq: r.get(2), sender_id: r.get(3) }))
            .collect())
    }

    /// Room events with `after < seq < before`, ascending, at most `limit`, each as it stands
    /// now.
    pub async fn events_between(
        &self,
        room_id: i64,
        after: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<RoomEvent>, StoreError> {
        // A room's seqs are gapless over its two tables, so at most `limit` events lie in
        // (after, after + limit]: a bounded index range in each table whatever plan PostgreSQL
        // picks (computed here so a huge `after` cannot overflow).
        let before = before.min(after.saturating_add(limit).saturating_add(1));
        let rows = self.read(EVENTS_SQL, &[room_id, after, before, limit]).await?;
        rows.iter().map(|r| event_from_row(room_id, r)).collect()
    }
}
