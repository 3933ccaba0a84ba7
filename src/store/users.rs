//! Users: sign-up (which joins room 1), look-ups, the memberships a connection needs, and the
//! cluster id. All SQL is parameterised.

use std::collections::HashMap;

use tokio_postgres::types::Type;

use super::Store;
use crate::error::StoreError;
use crate::model::{Membership, DEFAULT_ROOM};

impl Store {
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
