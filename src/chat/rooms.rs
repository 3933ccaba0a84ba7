//! Membership changes, in one place: REST handlers call these, never the connection registry,
//! so a change made here is reflected in this node's live connections (they start or stop
//! receiving the room) in the same step as it is stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::rate::TokenBucket;
use crate::bus::Bus;
use crate::error::{ApiError, ErrorCode, StoreError};
use crate::presence::Connections;
use crate::store::{Room, Store};
use crate::util::lock;

/// The membership writes the service makes.
pub trait MembershipStore: Send + Sync + 'static {
    /// Creates a room whose members are `creator` and `members` (all must exist: else
    /// `StoreError::NotFound`; none may be in `max_rooms` rooms already: else `Limit`).
    fn create_room<'a>(
        &'a self,
        name: &'a str,
        creator: i64,
        members: &'a [i64],
        max_rooms: i64,
    ) -> BoxFuture<'a, Result<Room, StoreError>>;
    /// Adds a member: `Ok(false)` if they already were one, `NotFound` for no such user,
    /// `Limit` past `max_rooms`.
    /// Also the room's last seq as of the change (where the user's live connections start).
    fn add_member(&self, room_id: i64, user_id: i64, max_rooms: i64) -> BoxFuture<'_, Result<(bool, i64), StoreError>>;
    /// Removes a member: `Ok(false)` if they were not one.
    fn remove_member(&self, room_id: i64, user_id: i64) -> BoxFuture<'_, Result<bool, StoreError>>;
}

impl MembershipStore for Store {
    fn create_room<'a>(
        &'a self,
        name: &'a str,
        creator: i64,
        members: &'a [i64],
        max_rooms: i64,
    ) -> BoxFuture<'a, Result<Room, StoreError>> {
        Box::pin(Store::create_room(self, name, creator, members, max_rooms))
    }

    fn add_member(&self, room_id: i64, user_id: i64, max_rooms: i64) -> BoxFuture<'_, Result<(bool, i64), StoreError>> {
        Box::pin(Store::add_member(self, room_id, user_id, max_rooms))
    }

    fn remove_member(&self, room_id: i64, user_id: i64) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(Store::remove_member(self, room_id, user_id))
    }
}

/// The membership limits (`[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    /// `limits.rooms_per_user`: rooms one user may be a member of.
    pub rooms_per_user: i64,
    /// `limits.room_create_members`: members listed when a room is created.
    pub create_members: usize,
    /// `limits.rooms_created_per_minute`: rooms one user may create per minute (burst: as many).
    pub created_per_minute: u32,
}

/// Users whose room-creation budget is remembered at most; past it, budgets idle for a
/// minute (full again anyway) are forgotten.
const CREATORS_MAX: usize = 10_000;

/// The rooms service.
pub struct Rooms {
    store: Arc<dyn MembershipStore>,
    connections: Arc<Connections>,
    bus: Arc<Bus>,
    limits: RoomLimits,
    /// Room creations per user: (budget, last use).
    creators: Mutex<HashMap<i64, (TokenBucket, Instant)>>,
}

impl Rooms {
    /// The service over `store`, moving `connections` in and out of rooms on `bus`.
    pub fn new(
        store: Arc<dyn MembershipStore>,
        connections: Arc<Connections>,
        bus: Arc<Bus>,
        limits: RoomLimits,
    ) -> Self {
        Self { store, connections, bus, limits, creators: Mutex::new(HashMap::new()) }
    }

    /// Takes one room creation from `user`'s budget, or says when the next one is allowed.
    fn take_creation(&self, user: i64) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut creators = lock(&self.creators);
        if creators.len() >= CREATORS_MAX {
            creators.retain(|_, (_, used)| now.duration_since(*used) < Duration::from_secs(60));
        }
        let per_min = self.limits.created_per_minute.max(1);
        let (bucket, used) = creators.entry(user).or_insert_with(|| (TokenBucket::per_minute(per_min), now));
        *used = now;
        bucket.take(now).map_err(|wait_ms| ApiError {
            retry_after_ms: Some(wait_ms),
            ..ApiError::new(ErrorCode::RateLimited, "too many rooms created; retry later")
        })
    }

    /// Creates a room; the creator and `members` join it (and their live connections).
    pub async fn create(&self, name: &str, creator: i64, members: &[i64]) -> Result<Room, ApiError> {
        if members.len() > self.limits.create_members {
            let max = self.limits.create_members;
            return Err(ApiError::limit(format!("at most {max} members at creation (limits.room_create_members)")));
        }
        self.take_creation(creator)?;
        let room = match self.store.create_room(name, creator, members, self.limits.rooms_per_user).await {
            Err(StoreError::NotFound) => return Err(ApiError::not_found("a listed member does not exist")),
            r => r?,
        };
        for uid in members.iter().copied().chain([creator]) {
            self.connections.joined(uid, room.id, Some(room.last_seq), &self.bus);
        }
        Ok(room)
    }

    /// Adds `user_id` to `room_id`: `Ok(false)` if they already were a member.
    pub async fn add_member(&self, room_id: i64, user_id: i64) -> Result<bool, ApiError> {
        let (added, last_seq) = match self.store.add_member(room_id, user_id, self.limits.rooms_per_user).await {
            Err(StoreError::NotFound) => return Err(ApiError::not_found("no such user")),
            r => r?,
        };
        // The room's order on this node starts where the membership committed, so an event
        // that overtakes another on its way here is a gap to fill, not a new start.
        self.connections.joined(user_id, room_id, Some(last_seq), &self.bus);
        Ok(added)
    }

    /// Removes `user_id` from `room_id`; their live connections stop receiving it.
    pub async fn remove_member(&self, room_id: i64, user_id: i64) -> Result<(), ApiError> {
        if !self.store.remove_member(room_id, user_id).await? {
            return Err(ApiError::not_found("not a member of this room"));
        }
        self.connections.left(user_id, room_id, &self.bus);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};
    use std::sync::Mutex;

    use chrono::Utc;

    use super::*;
    use crate::bus::NoHistory;
    use crate::conn::ConnState;
    use crate::model::Membership;
    use crate::util::lock;

    /// Rooms and their members in memory.
    #[derive(Default)]
    struct FakeStore {
        rooms: Mutex<HashMap<i64, BTreeSet<i64>>>,
    }

    const USERS: [i64; 3] = [1, 2, 3];

    impl MembershipStore for FakeStore {
        fn create_room<'a>(
            &'a self,
            name: &'a str,
            creator: i64,
            members: &'a [i64],
            _max_rooms: i64,
        ) -> BoxFuture<'a, Result<Room, StoreError>> {
            Box::pin(async move {
                if !members.iter().all(|m| USERS.contains(m)) {
                    return Err(StoreError::NotFound);
                }
                let mut rooms = lock(&self.rooms);
                let id = rooms.len() as i64 + 10;
                rooms.insert(id, members.iter().copied().chain([creator]).collect());
                Ok(Room { id, name: name.into(), created_at: Utc::now(), last_seq: 0 })
            })
        }

        fn add_member(
            &self,
            room_id: i64,
            user_id: i64,
            _max_rooms: i64,
        ) -> BoxFuture<'_, Result<(bool, i64), StoreError>> {
            Box::pin(async move {
                if !USERS.contains(&user_id) {
                    return Err(StoreError::NotFound);
                }
                // The room already holds events up to seq 5.
                Ok((lock(&self.rooms).entry(room_id).or_default().insert(user_id), 5))
            })
        }

        fn remove_member(&self, room_id: i64, user_id: i64) -> BoxFuture<'_, Result<bool, StoreError>> {
            Box::pin(async move { Ok(lock(&self.rooms).get_mut(&room_id).is_some_and(|m| m.remove(&user_id))) })
        }
    }

    fn service() -> (Rooms, Arc<Connections>, Arc<Bus>) {
        let connections = Arc::new(Connections::default());
        let bus = Bus::new(Arc::new(NoHistory), None);
        let limits = RoomLimits { rooms_per_user: 10, create_members: 2, created_per_minute: 3 };
        (Rooms::new(Arc::new(FakeStore::default()), connections.clone(), bus.clone(), limits), connections, bus)
    }

    fn online(connections: &Connections, bus: &Bus, user: i64) -> Arc<crate::presence::ConnHandle> {
        let general = [Membership { room_id: 1, member_count: 3, last_seq: 0 }];
        connections.register(user, &general, Arc::new(ConnState::new(16)), 5, bus).unwrap().0
    }

    #[tokio::test]
    async fn a_new_room_reaches_its_members_live_connections() {
        let (rooms, connections, bus) = service();
        let ann = online(&connections, &bus, 1);
        let bob = online(&connections, &bus, 2);
        let room = rooms.create("ops", 1, &[2]).await.unwrap();
        assert!(ann.in_room(room.id) && bob.in_room(room.id));
        assert_eq!(bus.subscriber_count(room.id), 2);
        let err = rooms.create("x", 1, &[99]).await.unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::NotFound);
        let err = rooms.create("big", 1, &[2, 3, 3]).await.unwrap_err();
        assert_eq!((err.code, err.http_status()), (crate::error::ErrorCode::TooLarge, 400));
    }

    #[tokio::test]
    async fn a_joined_room_starts_where_the_membership_committed() {
        let (rooms, connections, bus) = service();
        let carl = online(&connections, &bus, 3);
        rooms.add_member(30, 3).await.unwrap();
        // Seq 7 overtakes seq 6 on its way here: a gap to fill, not the room's first event.
        bus.publish_message(30, 7, bytes::Bytes::from_static(b"7"));
        let seqs = |c: &crate::presence::ConnHandle| {
            let mut items = Vec::new();
            c.conn.outbox.drain(&mut items, usize::MAX);
            items
                .into_iter()
                .filter_map(|o| match o {
                    crate::conn::Out::Seq { seq, .. } => Some(seq),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert!(seqs(&carl).is_empty(), "7 waits for 6");
        bus.publish_message(30, 6, bytes::Bytes::from_static(b"6"));
        assert_eq!(seqs(&carl), vec![6, 7]);
    }

    #[tokio::test]
    async fn room_creation_is_rate_limited_per_user() {
        let (rooms, _, _) = service();
        for i in 0..3 {
            rooms.create(&format!("r{i}"), 1, &[]).await.unwrap();
        }
        let err = rooms.create("r3", 1, &[]).await.unwrap_err();
        assert_eq!((err.code, err.http_status()), (ErrorCode::RateLimited, 429));
        assert!(err.retry_after_ms.unwrap_or(0) > 0);
        rooms.create("theirs", 2, &[]).await.expect("another user has their own budget");
    }

    #[tokio::test]
    async fn adding_and_removing_moves_live_connections() {
        let (rooms, connections, bus) = service();
        let carl = online(&connections, &bus, 3);
        assert!(rooms.add_member(20, 3).await.unwrap());
        assert!(!rooms.add_member(20, 3).await.unwrap(), "already a member");
        assert!(carl.in_room(20));
        rooms.remove_member(20, 3).await.unwrap();
        assert!(!carl.in_room(20));
        assert_eq!(bus.subscriber_count(20), 0);
        let err = rooms.remove_member(20, 3).await.unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::NotFound);
        let err = rooms.add_member(20, 42).await.unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::NotFound);
    }
}
