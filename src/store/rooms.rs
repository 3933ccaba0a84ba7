//! Rooms and memberships: creation, listing, members, and membership changes. All SQL is
//! parameterised.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;

use super::Store;
use crate::error::StoreError;
use crate::model::rfc3339;

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

fn room_from_row(r: &Row) -> Room {
    Room { id: r.get("id"), name: r.get("name"), created_at: r.get("created_at"), last_seq: r.get("last_seq") }
}

impl Store {
    /// Creates a room whose members are the creator and `members` (all must exist).
    /// `max_rooms`: a member already in that many rooms is refused (`StoreError::Limit`).
    pub async fn create_room(
        &self,
        name: &str,
        creator: i64,
        members: &[i64],
        max_rooms: i64,
    ) -> Result<Room, StoreError> {
        let mut ids: Vec<i64> = members.iter().copied().chain([creator]).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let found: i64 = tx.query_one("SELECT count(*) FROM users WHERE id = ANY($1)", &[&ids]).await?.get(0);
        if found != ids.len() as i64 {
            return Err(StoreError::NotFound);
        }
        let full = tx
            .query_opt(
                "SELECT user_id FROM room_members WHERE user_id = ANY($1) \
                 GROUP BY user_id HAVING count(*) >= $2 LIMIT 1",
                &[&ids, &max_rooms],
            )
            .await?;
        if let Some(r) = full {
            return Err(rooms_limit(r.get(0), max_rooms));
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
    /// A page: the members after `after_user_id`, at most `limit`.
    pub async fn members(&self, room_id: i64, after_user_id: i64, limit: i64) -> Result<Vec<Member>, StoreError> {
        let rows = self
            .read(
                "SELECT m.user_id, u.username, m.delivered_seq, m.read_seq \
                 FROM room_members m JOIN users u ON u.id = m.user_id \
                 WHERE m.room_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3",
                &[room_id, after_user_id, limit],
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
    /// A user already in `max_rooms` rooms is refused (`StoreError::Limit`). Returns whether
    /// the user was added and the room's last seq read under the room's lock in the same
    /// transaction: every later event has a higher seq, every earlier one at most this.
    pub async fn add_member(&self, room_id: i64, user_id: i64, max_rooms: i64) -> Result<(bool, i64), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        if tx.query_opt("SELECT 1 FROM users WHERE id = $1", &[&user_id]).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        let last_seq = lock_room(&tx, room_id).await?;
        let rooms: i64 = tx
            .query_one("SELECT count(*) FROM room_members WHERE user_id = $1 AND room_id <> $2", &[&user_id, &room_id])
            .await?
            .get(0);
        if rooms >= max_rooms {
            return Err(rooms_limit(user_id, max_rooms));
        }
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
        Ok((n == 1, last_seq))
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
}

fn rooms_limit(user_id: i64, max_rooms: i64) -> StoreError {
    StoreError::Limit(format!("user {user_id} is a member of {max_rooms} rooms already (limits.rooms_per_user)"))
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
///
/// Returns the room's last seq (0 for no such room: the membership insert then fails its
/// foreign key).
async fn lock_room(tx: &tokio_postgres::Transaction<'_>, room_id: i64) -> Result<i64, StoreError> {
    let row = tx.query_opt("SELECT last_seq FROM rooms WHERE id = $1 FOR NO KEY UPDATE", &[&room_id]).await?;
    Ok(row.map_or(0, |r| r.get(0)))
}
