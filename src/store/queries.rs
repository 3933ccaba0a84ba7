//! Read queries and the admin/membership writes (low rate; messages and receipts go through
//! the batcher). All SQL is parameterised.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use super::Store;
use crate::error::StoreError;
use crate::ws::protocol::{rfc3339, MessageEvent, DEFAULT_ROOM};

/// A room as the REST API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Room {
    /// Id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Creation time.
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// Highest committed seq.
    pub last_seq: i64,
}

/// A room with the caller's receipt watermarks (`GET /v1/rooms`).
#[derive(Debug, Clone, Serialize)]
pub struct MyRoom {
    /// The room.
    #[serde(flatten)]
    pub room: Room,
    /// Caller's delivered watermark.
    pub delivered_seq: i64,
    /// Caller's read watermark.
    pub read_seq: i64,
}

/// A member row (`GET /v1/rooms/{id}/members`); `online` is filled in from presence.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// User id.
    pub user_id: i64,
    /// Username.
    pub username: String,
    /// Whether the user has a live connection.
    pub online: bool,
    /// Delivered watermark.
    pub delivered_seq: i64,
    /// Read watermark ("seen by").
    pub read_seq: i64,
}

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

/// A user's membership as a connection needs it.
#[derive(Debug, Clone, Copy)]
pub struct Membership {
    /// Room.
    pub room_id: i64,
    /// Members of the room (for the presence cut-off).
    pub member_count: i64,
    /// The room's last seq at the look-up (the bus sequencer's starting point).
    pub last_seq: i64,
}

/// What a receipt needs to know about the message it names.
#[derive(Debug, Clone, Copy)]
pub struct MessageMeta {
    /// Room.
    pub room_id: i64,
    /// Seq in the room.
    pub seq: i64,
    /// Author.
    pub sender_id: i64,
}

const MESSAGE_COLUMNS: &str = "id, room_id, seq, sender_id, content, created_at, client_msg_id";

/// Decodes a row selected with [`MESSAGE_COLUMNS`].
pub fn message_from_row(r: &Row) -> MessageEvent {
    MessageEvent {
        id: r.get(0),
        room_id: r.get(1),
        seq: r.get(2),
        sender_id: r.get(3),
        content: r.get(4),
        timestamp: r.get(5),
        client_msg_id: r.get(6),
    }
}

fn room_from_row(r: &Row) -> Room {
    Room { id: r.get("id"), name: r.get("name"), created_at: r.get("created_at"), last_seq: r.get("last_seq") }
}

impl Store {
    /// A read in ONE round trip: `query_typed` sends the statement unnamed with its parameter
    /// types instead of preparing it first (every read here takes BIGINT parameters only).
    async fn read(&self, sql: &str, params: &[i64]) -> Result<Vec<Row>, StoreError> {
        let c = self.conn().await?;
        let typed: Vec<(&(dyn ToSql + Sync), Type)> =
            params.iter().map(|p| (p as &(dyn ToSql + Sync), Type::INT8)).collect();
        Ok(c.query_typed(sql, &typed).await?)
    }

    /// Creates a user and makes them a member of room 1.
    pub async fn create_user(&self, username: &str, email: Option<&str>) -> Result<(i64, String), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_one(
                "INSERT INTO users (username, email) VALUES ($1, $2) RETURNING id, username",
                &[&username, &email],
            )
            .await?;
        let id: i64 = row.get(0);
        // The count update takes the room's row lock BEFORE the insert: see `lock_room`.
        tx.execute("UPDATE rooms SET member_count = member_count + 1 WHERE id = $1", &[&DEFAULT_ROOM]).await?;
        tx.execute("INSERT INTO room_members (room_id, user_id) VALUES ($1, $2)", &[&DEFAULT_ROOM, &id]).await?;
        tx.commit().await?;
        Ok((id, row.get(1)))
    }

    /// The database's cluster id (migration V4): the default namespace of the cluster's keys
    /// and channels in Redis.
    pub async fn cluster_id(&self) -> Result<String, StoreError> {
        let rows = self.read("SELECT cluster_id FROM cluster", &[]).await?;
        rows.first().map(|r| r.get(0)).ok_or_else(|| StoreError::Db("the cluster table is empty".into()))
    }

    /// The username of a user, if they exist.
    pub async fn username(&self, user_id: i64) -> Result<Option<String>, StoreError> {
        let row = self.read("SELECT username FROM users WHERE id = $1", &[user_id]).await?.into_iter().next();
        Ok(row.map(|r| r.get(0)))
    }

    /// The rooms of each of `user_ids` that exists (users not in the map do not exist).
    /// One query for a whole batch: see [`super::membership_loader`].
    pub async fn memberships(&self, user_ids: &[i64]) -> Result<HashMap<i64, Vec<Membership>>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .query_typed(
                "SELECT u.id, r.id, r.member_count::BIGINT, r.last_seq FROM users u \
                 LEFT JOIN room_members m ON m.user_id = u.id \
                 LEFT JOIN rooms r ON r.id = m.room_id WHERE u.id = ANY($1)",
                &[(&user_ids, Type::INT8_ARRAY)],
            )
            .await?;
        let mut out: HashMap<i64, Vec<Membership>> = HashMap::with_capacity(user_ids.len());
        for r in &rows {
            let rooms = out.entry(r.get(0)).or_default();
            if let Some(room_id) = r.get::<_, Option<i64>>(1) {
                rooms.push(Membership {
                    room_id,
                    member_count: r.get::<_, Option<i64>>(2).unwrap_or(0),
                    last_seq: r.get::<_, Option<i64>>(3).unwrap_or(0),
                });
            }
        }
        Ok(out)
    }

    /// Creates a room whose members are the creator and `members` (all must exist).
    pub async fn create_room(&self, name: &str, creator: i64, members: &[i64]) -> Result<Room, StoreError> {
        let mut ids: Vec<i64> = members.iter().copied().chain([creator]).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let found: i64 = tx.query_one("SELECT count(*) FROM users WHERE id = ANY($1)", &[&ids]).await?.get(0);
        if found != ids.len() as i64 {
            return Err(StoreError::NotFound);
        }
        let row = tx
            .query_one(
                "INSERT INTO rooms (name, member_count) VALUES ($1, $2) \
                 RETURNING id, name, created_at, last_seq",
                &[&name, &(ids.len() as i32)],
            )
            .await?;
        let room = room_from_row(&row);
        tx.execute("INSERT INTO room_members (room_id, user_id) SELECT $1, unnest($2::BIGINT[])", &[&room.id, &ids])
            .await?;
        tx.commit().await?;
        Ok(room)
    }

    /// Rooms of a user with their watermarks.
    pub async fn rooms_of(&self, user_id: i64) -> Result<Vec<MyRoom>, StoreError> {
        let rows = self
            .read(
                "SELECT r.id, r.name, r.created_at, r.last_seq, m.delivered_seq, m.read_seq \
                 FROM room_members m JOIN rooms r ON r.id = m.room_id \
                 WHERE m.user_id = $1 ORDER BY r.id",
                &[user_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| MyRoom { room: room_from_row(r), delivered_seq: r.get(4), read_seq: r.get(5) })
            .collect())
    }

    /// Whether a room exists and whether `user_id` is a member: `None` = no such room.
    pub async fn membership(&self, room_id: i64, user_id: i64) -> Result<Option<bool>, StoreError> {
        let row = self
            .read(
                "SELECT EXISTS (SELECT 1 FROM room_members WHERE room_id = $1 AND user_id = $2) \
                 FROM rooms WHERE id = $1",
                &[room_id, user_id],
            )
            .await?
            .into_iter()
            .next();
        Ok(row.map(|r| r.get(0)))
    }

    /// Members of a room, ordered by user id (`online` false; the caller fills it in).
    pub async fn members(&self, room_id: i64) -> Result<Vec<Member>, StoreError> {
        let rows = self
            .read(
                "SELECT m.user_id, u.username, m.delivered_seq, m.read_seq \
                 FROM room_members m JOIN users u ON u.id = m.user_id \
                 WHERE m.room_id = $1 ORDER BY m.user_id",
                &[room_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Member {
                user_id: r.get(0),
                username: r.get(1),
                online: false,
                delivered_seq: r.get(2),
                read_seq: r.get(3),
            })
            .collect())
    }

    /// Adds a member; `Ok(false)` if they already were one. The user must exist.
    pub async fn add_member(&self, room_id: i64, user_id: i64) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        if tx.query_opt("SELECT 1 FROM users WHERE id = $1", &[&user_id]).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        lock_room(&tx, room_id).await?;
        let n = tx
            .execute(
                "INSERT INTO room_members (room_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&room_id, &user_id],
            )
            .await?;
        if n == 1 {
            tx.execute("UPDATE rooms SET member_count = member_count + 1 WHERE id = $1", &[&room_id]).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Removes a member; `Ok(false)` if they were not one.
    pub async fn remove_member(&self, room_id: i64, user_id: i64) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        lock_room(&tx, room_id).await?;
        let n =
            tx.execute("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2", &[&room_id, &user_id]).await?;
        if n == 1 {
            tx.execute("UPDATE rooms SET member_count = member_count - 1 WHERE id = $1", &[&room_id]).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
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

    /// Room, seq and author of a message.
    pub async fn message_meta(&self, message_id: i64) -> Result<Option<MessageMeta>, StoreError> {
        let row = self
            .read("SELECT room_id, seq, sender_id FROM messages WHERE id = $1", &[message_id])
            .await?
            .into_iter()
            .next();
        Ok(row.map(|r| MessageMeta { room_id: r.get(0), seq: r.get(1), sender_id: r.get(2) }))
    }

    /// Messages of a room with `after < seq < before`, ascending, at most `limit`.
    pub async fn messages_between(
        &self,
        room_id: i64,
        after: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<MessageEvent>, StoreError> {
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

/// Takes the room's row lock before a membership change.
///
/// The `room_members` insert's foreign-key check takes a KEY SHARE lock on the room row and
/// the `member_count` update a NO KEY UPDATE lock. Taken in that order by concurrent
/// transactions they pile up as a MultiXact on the row, and every later read of the row (each
/// WebSocket upgrade's membership look-up joins `rooms`) pays a MultiXact member lookup per
/// dead row version: after 18,000 sign-ups into room 1, upgrades fell from ~22 k/s to ~3 k/s
/// until autovacuum ran. Locking first serialises a room's membership changes (a low-rate
/// admin path) and the FK check then finds the lock already held.
async fn lock_room(tx: &tokio_postgres::Transaction<'_>, room_id: i64) -> Result<(), StoreError> {
    tx.execute("SELECT 1 FROM rooms WHERE id = $1 FOR NO KEY UPDATE", &[&room_id]).await?;
    Ok(())
}
