//! Message reads: history pages, receipt look-ups, and the seq ranges that `sync` replays and
//! gap fills read. Messages are written by the group commit ([`super::group_commit`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use super::Store;
use crate::error::StoreError;
use crate::model::{self, rfc3339, MessageMeta};

/// Author block of a history message.
#[derive(Debug, Clone, Serialize)]
pub struct Sender {
    /// User id.
    pub id: i64,
    /// Username.
    pub username: String,
}

/// A message as `GET /chat/history` returns it.
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
    /// Text.
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
}

const MESSAGE_COLUMNS: &str = "id, room_id, seq, sender_id, content, created_at, client_msg_id";

/// Decodes a row selected with [`MESSAGE_COLUMNS`].
pub(crate) fn message_from_row(r: &Row) -> model::Message {
    model::Message {
        id: r.get(0),
        room_id: r.get(1),
        seq: r.get(2),
        sender_id: r.get(3),
        content: r.get(4),
        timestamp: r.get(5),
        client_msg_id: r.get(6),
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

    /// A page of history, newest first.
    pub async fn history(
        &self,
        room_id: i64,
        limit: i64,
        before_seq: Option<i64>,
    ) -> Result<Vec<HistoryMessage>, StoreError> {
        let before = before_seq.unwrap_or(i64::MAX);
        let rows = self
            .read(
                // Seqs are gapless, so the page is exactly the seq range [before - limit,
                // before): a bounded index range whatever plan PostgreSQL picks. (With
                // `seq < before … LIMIT` alone, a young table without statistics got a plan
                // that read and sorted every older row: 6 ms a page at 10 k messages.)
                "WITH b AS (SELECT LEAST($2, r.last_seq + 1) AS before FROM rooms r WHERE r.id = $1) \
                 SELECT m.id, m.room_id, m.seq, m.sender_id, u.username, m.content, m.created_at, \
                        m.delivered, m.read, m.client_msg_id \
                 FROM b, messages m JOIN users u ON u.id = m.sender_id \
                 WHERE m.room_id = $1 AND m.seq < b.before AND m.seq >= b.before - $3 \
                 ORDER BY m.seq DESC LIMIT $3",
                &[room_id, before, limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| HistoryMessage {
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
            })
            .collect())
    }

    /// Room, seq and author of each of `ids` that exists (one query for a batch of receipts).
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

    /// Messages of a room with `after < seq < before`, ascending, at most `limit`.
    pub async fn messages_between(
        &self,
        room_id: i64,
        after: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<model::Message>, StoreError> {
        // Seqs are gapless, so at most `limit` rows lie in (after, after + limit]: the same
        // plan-proof bounded range as `history` (computed here so a huge `after` cannot overflow).
        let before = before.min(after.saturating_add(limit).saturating_add(1));
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 AND seq > $2 AND seq < $3 \
             ORDER BY seq LIMIT $4"
        );
        let rows = self.read(&sql, &[room_id, after, before, limit]).await?;
        Ok(rows.iter().map(message_from_row).collect())
    }
}
