//! Rooms and memberships: creation, listing, members, and membership changes. All SQL is
//! parameterised.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;

use super::Store;
use crate::error::StoreError;
use crate::model::{rfc3339, MemberAction, MemberEvent};

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
    /// Messages after `read_seq` from other senders, not deleted (at most the cap).
    pub unread: i64,
    /// Those of them that mention the caller.
    pub mentions: i64,
}

/// The caller's unread totals (`GET /v1/unread`).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Unread {
    /// Unread messages over all rooms (each room's count capped).
    pub unread: i64,
    /// Unread messages that mention the caller.
    pub mentions: i64,
    /// Rooms with unread messages.
    pub rooms: i64,
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
    /// Creates a room whose members are the creator and `members` (all must exist), each
    /// joining with a `member` event, the creator first. `max_rooms`: a member already in that
    /// many rooms is refused (`StoreError::Limit`).
    pub async fn create_room(
        &self,
        name: &str,
        creator: i64,
        members: &[i64],
        max_rooms: i64,
    ) -> Result<(Room, Vec<MemberEvent>), StoreError> {
        let mut ids: Vec<i64> = vec![creator];
        for &m in members {
            if !ids.contains(&m) {
                ids.push(m);
            }
        }
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
        let row = tx.query_one("INSERT INTO rooms (name) VALUES ($1) RETURNING id", &[&name]).await?;
        let room_id: i64 = row.get(0);
        tx.execute("INSERT INTO room_members (room_id, user_id) SELECT $1, unnest($2::BIGINT[])", &[&room_id, &ids])
            .await?;
        let events = member_events(&tx, room_id, &ids, MemberAction::Join, Some(creator)).await?;
        let row = tx.query_one("SELECT id, name, created_at, last_seq FROM rooms WHERE id = $1", &[&room_id]).await?;
        tx.commit().await?;
        Ok((room_from_row(&row), events))
    }

    /// Rooms of a user with their watermarks and unread counts, in ONE query however many
    /// rooms: per room, one backward index range over its unread seqs, at most `cap` rows
    /// (rooms read up to their last seq cost one index probe). `mentions` counts among the
    /// newest `cap` unread messages, so both counts stop at the cap.
    pub async fn rooms_of(&self, user_id: i64, cap: i64) -> Result<Vec<MyRoom>, StoreError> {
        let rows = self
            .read(
                "SELECT r.id, r.name, r.created_at, r.last_seq, m.delivered_seq, m.read_seq, c.unread, c.mentions \
                 FROM room_members m JOIN rooms r ON r.id = m.room_id \
                 CROSS JOIN LATERAL ( \
                     SELECT count(*) AS unread, count(*) FILTER (WHERE x.mentions @> ARRAY[$1]) AS mentions \
                     FROM (SELECT mentions FROM messages WHERE room_id = r.id AND seq > m.read_seq \
                             AND seq <= r.last_seq AND sender_id <> $1 AND NOT deleted \
                           ORDER BY room_id DESC, seq DESC LIMIT $2) x) c \
                 WHERE m.user_id = $1 ORDER BY r.id",
                &[user_id, cap],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| MyRoom {
                room: room_from_row(r),
                delivered_seq: r.get(4),
                read_seq: r.get(5),
                unread: r.get(6),
                mentions: r.get(7),
            })
            .collect())
    }

    /// The user's unread totals over their rooms (each room's counts capped at `cap`).
    pub async fn unread(&self, user_id: i64, cap: i64) -> Result<Unread, StoreError> {
        let rooms = self.rooms_of(user_id, cap).await?;
        Ok(Unread {
            unread: rooms.iter().map(|r| r.unread).sum(),
            mentions: rooms.iter().map(|r| r.mentions).sum(),
            rooms: rooms.iter().filter(|r| r.unread > 0).count() as i64,
        })
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

    /// Adds a member with a `join` event made `by` a user (None: the admin API); `Ok(None)`
    /// if they already were one. The user must exist. A user already in `max_rooms` rooms is
    /// refused (`StoreError::Limit`).
    pub async fn add_member(
        &self,
        room_id: i64,
        user_id: i64,
        by: Option<i64>,
        max_rooms: i64,
    ) -> Result<Option<MemberEvent>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        if tx.query_opt("SELECT 1 FROM users WHERE id = $1", &[&user_id]).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        lock_room(&tx, room_id).await?;
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
        if n == 0 {
            return Ok(None);
        }
        let event = member_events(&tx, room_id, &[user_id], MemberAction::Join, by).await?.pop();
        tx.commit().await?;
        Ok(event)
    }

    /// Removes a member with a `leave` event made `by` a user (None: the admin API);
    /// `Ok(None)` if they were not one.
    pub async fn remove_member(
        &self,
        room_id: i64,
        user_id: i64,
        by: Option<i64>,
    ) -> Result<Option<MemberEvent>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        lock_room(&tx, room_id).await?;
        let n =
            tx.execute("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2", &[&room_id, &user_id]).await?;
        if n == 0 {
            return Ok(None);
        }
        let event = member_events(&tx, room_id, &[user_id], MemberAction::Leave, by).await?.pop();
        tx.commit().await?;
        Ok(event)
    }
}

/// Writes one `member` event per user (in order) at the room's next seqs and keeps the room's
/// member count. The caller holds the room's row lock or created the room in this transaction.
pub(super) async fn member_events(
    tx: &tokio_postgres::Transaction<'_>,
    room_id: i64,
    users: &[i64],
    action: MemberAction,
    by: Option<i64>,
) -> Result<Vec<MemberEvent>, StoreError> {
    let join = action == MemberAction::Join;
    let delta = if join { users.len() as i32 } else { -(users.len() as i32) };
    let rows = tx
        .query(
            "WITH s AS (UPDATE rooms SET last_seq = last_seq + cardinality($2::BIGINT[]), \
                            member_count = member_count + $5, membership_version = membership_version + 1 \
                        WHERE id = $1 \
                        RETURNING last_seq - cardinality($2::BIGINT[]) AS base) \
             INSERT INTO room_events (room_id, seq, kind, user_id, flag, by_id) \
             SELECT $1, s.base + u.i, 'member', u.uid, $3, $4 \
             FROM s, unnest($2::BIGINT[]) WITH ORDINALITY AS u(uid, i) \
             RETURNING seq, user_id",
            &[&room_id, &users, &join, &by, &delta],
        )
        .await?;
    let mut events: Vec<MemberEvent> =
        rows.iter().map(|r| MemberEvent { room_id, seq: r.get(0), user_id: r.get(1), action, by }).collect();
    events.sort_by_key(|e| e.seq);
    Ok(events)
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
/// No such room: nothing is locked and the membership insert then fails its foreign key.
pub(super) async fn lock_room(tx: &tokio_postgres::Transaction<'_>, room_id: i64) -> Result<(), StoreError> {
    tx.execute("SELECT 1 FROM rooms WHERE id = $1 FOR NO KEY UPDATE", &[&room_id]).await?;
    Ok(())
}
