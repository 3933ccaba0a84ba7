//! Users: sign-up (which joins room 1), look-ups, the memberships a connection needs, and the
//! cluster id. All SQL is parameterised.

use std::collections::HashMap;

use tokio_postgres::types::Type;

use super::rooms::{lock_room, member_events};
use super::Store;
use crate::error::StoreError;
use crate::model::{MemberAction, MemberEvent, Membership, DEFAULT_ROOM};

/// A user just created.
#[derive(Debug, Clone)]
pub struct SignedUp {
    /// Id.
    pub id: i64,
    /// Username.
    pub username: String,
    /// Their `join` of room 1 (none if room 1 was deleted).
    pub join: Option<MemberEvent>,
}

impl Store {
    /// Creates a user and makes them a member of room 1 (with a `join` event, by nobody).
    pub async fn create_user(&self, username: &str, email: Option<&str>) -> Result<SignedUp, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_one(
                "INSERT INTO users (username, email) VALUES ($1, $2) RETURNING id, username",
                &[&username, &email],
            )
            .await?;
        let id: i64 = row.get(0);
        // The room's row lock BEFORE the insert: see `lock_room`.
        lock_room(&tx, DEFAULT_ROOM).await?;
        tx.execute("INSERT INTO room_members (room_id, user_id) VALUES ($1, $2)", &[&DEFAULT_ROOM, &id]).await?;
        let join = member_events(&tx, DEFAULT_ROOM, &[id], MemberAction::Join, None).await?.pop();
        tx.commit().await?;
        Ok(SignedUp { id, username: row.get(1), join })
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

    /// The id of the user called `username`, if they exist.
    pub async fn user_id(&self, username: &str) -> Result<Option<i64>, StoreError> {
        let c = self.conn().await?;
        let row = c.query_typed("SELECT id FROM users WHERE username = $1", &[(&username, Type::TEXT)]).await?;
        Ok(row.first().map(|r| r.get(0)))
    }

    /// The rooms of each of `user_ids` that exists (users not in the map do not exist).
    /// One query for a whole batch: see [`super::batch_loader`].
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
}
