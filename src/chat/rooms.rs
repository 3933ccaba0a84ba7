//! Membership changes, in one place: REST handlers call these, never the connection registry.
//! Each change is stored with its `member` event (taking the room's next seq), then published
//! in the room's order and on the membership channel, so every node's live connections start
//! or stop receiving the room (README "Room events").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::rate::TokenBucket;
use crate::bus::{Bus, MemberChange};
use crate::error::{ApiError, ErrorCode, StoreError};
use crate::model::{MemberAction, MemberEvent, RoomEvent};
use crate::store::users::SignedUp;
use crate::store::{Room, Store};
use crate::util::lock;
use crate::wire::server::event_frame;

/// The membership writes the service makes; each change is stored with its `member` event.
pub trait MembershipStore: Send + Sync + 'static {
    /// Creates a user, a member of room 1 (its `join` event, if room 1 exists).
    fn create_user<'a>(
        &'a self,
        username: &'a str,
        email: Option<&'a str>,
    ) -> BoxFuture<'a, Result<SignedUp, StoreError>>;
    /// Creates a room whose members are `creator` and `members` (all must exist: else
    /// `StoreError::NotFound`; none may be in `max_rooms` rooms already: else `Limit`), with
    /// their `join` events.
    fn create_room<'a>(
        &'a self,
        name: &'a str,
        creator: i64,
        members: &'a [i64],
        max_rooms: i64,
    ) -> BoxFuture<'a, Result<(Room, Vec<MemberEvent>), StoreError>>;
    /// Adds a member `by` someone: `Ok(None)` if they already were one, `NotFound` for no such
    /// user, `Limit` past `max_rooms`.
    fn add_member(
        &self,
        room_id: i64,
        user_id: i64,
        by: Option<i64>,
        max_rooms: i64,
    ) -> BoxFuture<'_, Result<Option<MemberEvent>, StoreError>>;
    /// Removes a member `by` someone: `Ok(None)` if they were not one.
    fn remove_member(
        &self,
        room_id: i64,
        user_id: i64,
        by: Option<i64>,
    ) -> BoxFuture<'_, Result<Option<MemberEvent>, StoreError>>;
}

impl MembershipStore for Store {
    fn create_user<'a>(
        &'a self,
        username: &'a str,
        email: Option<&'a str>,
    ) -> BoxFuture<'a, Result<SignedUp, StoreError>> {
        Box::pin(Store::create_user(self, username, email))
    }

    fn create_room<'a>(
        &'a self,
        name: &'a str,
        creator: i64,
        members: &'a [i64],
        max_rooms: i64,
    ) -> BoxFuture<'a, Result<(Room, Vec<MemberEvent>), StoreError>> {
        Box::pin(Store::create_room(self, name, creator, members, max_rooms))
    }

    fn add_member(
        &self,
        room_id: i64,
        user_id: i64,
        by: Option<i64>,
        max_rooms: i64,
    ) -> BoxFuture<'_, Result<Option<MemberEvent>, StoreError>> {
        Box::pin(Store::add_member(self, room_id, user_id, by, max_rooms))
    }

    fn remove_member(
        &self,
        room_id: i64,
        user_id: i64,
        by: Option<i64>,
    ) -> BoxFuture<'_, Result<Option<MemberEvent>, StoreError>> {
        Box::pin(Store::remove_member(self, room_id, user_id, by))
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
    bus: Arc<Bus>,
    limits: RoomLimits,
    /// Room creations per user: (budget, last use).
    creators: Mutex<HashMap<i64, (TokenBucket, Instant)>>,
}

impl Rooms {
    /// The service over `store`, publishing membership events on `bus` (whose membership
    /// listener moves live connections in and out of rooms on every node).
    pub fn new(store: Arc<dyn MembershipStore>, bus: Arc<Bus>, limits: RoomLimits) -> Self {
        Self { store, bus, limits, creators: Mutex::new(HashMap::new()) }
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

    /// A committed `member` event reaches the room (in its order) and every node's registry.
    fn announce(&self, e: MemberEvent) {
        let change =
            MemberChange { room: e.room_id, user: e.user_id, seq: e.seq, join: e.action == MemberAction::Join };
        let event = RoomEvent::Member(e);
        self.bus.publish_ordered(change.room, change.seq, event_frame(&event), event.leaving());
        self.bus.publish_membership(change);
    }

    /// Creates a user (admin API), a member of room 1.
    pub async fn sign_up(&self, username: &str, email: Option<&str>) -> Result<(i64, String), ApiError> {
        let user = self.store.create_user(username, email).await.map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::new(ErrorCode::Conflict, "username is taken"),
            e => e.into(),
        })?;
        if let Some(e) = user.join {
            self.announce(e);
        }
        Ok((user.id, user.username))
    }

    /// Creates a room; the creator and `members` join it (and their live connections).
    pub async fn create(&self, name: &str, creator: i64, members: &[i64]) -> Result<Room, ApiError> {
        if members.len() > self.limits.create_members {
            let max = self.limits.create_members;
            return Err(ApiError::limit(format!("at most {max} members at creation (limits.room_create_members)")));
        }
        self.take_creation(creator)?;
        let (room, joins) = match self.store.create_room(name, creator, members, self.limits.rooms_per_user).await {
            Err(StoreError::NotFound) => return Err(ApiError::not_found("a listed member does not exist")),
            r => r?,
        };
        for e in joins {
            self.announce(e);
        }
        Ok(room)
    }

    /// Adds `user_id` to `room_id` `by` a member (None: the admin API): `Ok(false)` if they
    /// already were a member.
    pub async fn add_member(&self, room_id: i64, user_id: i64, by: Option<i64>) -> Result<bool, ApiError> {
        let joined = match self.store.add_member(room_id, user_id, by, self.limits.rooms_per_user).await {
            Err(StoreError::NotFound) => return Err(ApiError::not_found("no such user")),
            r => r?,
        };
        let added = joined.is_some();
        if let Some(e) = joined {
            self.announce(e);
        }
        Ok(added)
    }

    /// Removes `user_id` from `room_id` `by` themselves (None: the admin API); their live
    /// connections get the `leave` as their last event of the room.
    pub async fn remove_member(&self, room_id: i64, user_id: i64, by: Option<i64>) -> Result<(), ApiError> {
        match self.store.remove_member(room_id, user_id, by).await? {
            Some(e) => {
                self.announce(e);
                Ok(())
            }
            None => Err(ApiError::not_found("not a member of this room")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};
    use std::sync::Mutex;

    use chrono::Utc;
    use futures_util::future::BoxFuture;

    use super::*;
    use crate::conn::{ConnState, Out};
    use crate::model::Membership;
    use crate::presence::{ConnHandle, Connections, MembershipFeed};
    use crate::store::batch_loader::{BatchLoader, Lookup};
    use crate::util::lock;

    /// Rooms, their members and their last seq, and the `member` events written, in memory.
    #[derive(Default)]
    struct FakeStore {
        rooms: Mutex<HashMap<i64, (BTreeSet<i64>, i64)>>,
        log: Mutex<Vec<RoomEvent>>,
    }

    impl crate::bus::History for FakeStore {
        fn between(
            &self,
            room: i64,
            after: i64,
            before: i64,
            limit: i64,
        ) -> BoxFuture<'_, Result<Vec<RoomEvent>, StoreError>> {
            let log = lock(&self.log);
            let rows = log.iter().filter(|e| e.room_id() == room && e.seq() > after && e.seq() < before);
            let rows: Vec<RoomEvent> = rows.take(limit as usize).cloned().collect();
            Box::pin(async move { Ok(rows) })
        }
    }

    const USERS: [i64; 3] = [1, 2, 3];

    impl FakeStore {
        fn event(&self, room_id: i64, user_id: i64, action: MemberAction, by: Option<i64>) -> MemberEvent {
            let mut rooms = lock(&self.rooms);
            let (_, seq) = rooms.entry(room_id).or_insert_with(|| (BTreeSet::new(), 5));
            *seq += 1;
            let e = MemberEvent { room_id, seq: *seq, user_id, action, by };
            lock(&self.log).push(RoomEvent::Member(e.clone()));
            e
        }
    }

    impl MembershipStore for FakeStore {
        fn create_user<'a>(
            &'a self,
            username: &'a str,
            _email: Option<&'a str>,
        ) -> BoxFuture<'a, Result<SignedUp, StoreError>> {
            let join = Some(self.event(1, 9, MemberAction::Join, None));
            Box::pin(async move { Ok(SignedUp { id: 9, username: username.to_string(), join }) })
        }

        fn create_room<'a>(
            &'a self,
            name: &'a str,
            creator: i64,
            members: &'a [i64],
            _max_rooms: i64,
        ) -> BoxFuture<'a, Result<(Room, Vec<MemberEvent>), StoreError>> {
            Box::pin(async move {
                if !members.iter().all(|m| USERS.contains(m)) {
                    return Err(StoreError::NotFound);
                }
                let id = lock(&self.rooms).len() as i64 + 10;
                lock(&self.rooms).insert(id, (members.iter().copied().chain([creator]).collect(), 0));
                let joins: Vec<MemberEvent> = [creator]
                    .into_iter()
                    .chain(members.iter().copied())
                    .map(|u| self.event(id, u, MemberAction::Join, Some(creator)))
                    .collect();
                let last_seq = joins.len() as i64;
                Ok((Room { id, name: name.into(), created_at: Utc::now(), last_seq }, joins))
            })
        }

        fn add_member(
            &self,
            room_id: i64,
            user_id: i64,
            by: Option<i64>,
            _max_rooms: i64,
        ) -> BoxFuture<'_, Result<Option<MemberEvent>, StoreError>> {
            Box::pin(async move {
                if !USERS.contains(&user_id) {
                    return Err(StoreError::NotFound);
                }
                // A new room already holds events up to seq 5.
                let added = lock(&self.rooms).entry(room_id).or_insert_with(|| (BTreeSet::new(), 5)).0.insert(user_id);
                Ok(added.then(|| self.event(room_id, user_id, MemberAction::Join, by)))
            })
        }

        fn remove_member(
            &self,
            room_id: i64,
            user_id: i64,
            by: Option<i64>,
        ) -> BoxFuture<'_, Result<Option<MemberEvent>, StoreError>> {
            Box::pin(async move {
                let removed = lock(&self.rooms).get_mut(&room_id).is_some_and(|(m, _)| m.remove(&user_id));
                Ok(removed.then(|| self.event(room_id, user_id, MemberAction::Leave, by)))
            })
        }
    }

    /// Memberships are never re-read in these tests.
    struct NoMemberships;

    impl Lookup for NoMemberships {
        type Value = Vec<Membership>;
        const BATCH_METRIC: &'static str = "test_batch";
        fn fetch<'a>(&'a self, _: &'a [i64]) -> BoxFuture<'a, Result<HashMap<i64, Vec<Membership>>, StoreError>> {
            Box::pin(async { Ok(HashMap::new()) })
        }
    }

    fn service() -> (Rooms, Arc<Connections>, Arc<Bus>) {
        let connections = Arc::new(Connections::default());
        let store = Arc::new(FakeStore::default());
        let bus = Bus::new(store.clone(), None);
        MembershipFeed::install(connections.clone(), &bus, BatchLoader::spawn(NoMemberships));
        let limits = RoomLimits { rooms_per_user: 10, create_members: 2, created_per_minute: 3 };
        (Rooms::new(store, bus.clone(), limits), connections, bus)
    }

    fn online(connections: &Connections, bus: &Bus, user: i64) -> Arc<ConnHandle> {
        let general = [Membership { room_id: 1, member_count: 3, last_seq: 0 }];
        connections.register(user, &general, Arc::new(ConnState::new(16)), 5, bus).unwrap().0
    }

    /// The outbox items of a connection for room `room`, once `want` of them are queued
    /// (replays and fills run as tasks), at most 2 s.
    async fn items(c: &ConnHandle, room: i64, want: usize) -> Vec<String> {
        until(c, room, |got| got.len() >= want).await
    }

    /// The outbox items of a connection for room `room`, once `done` holds for them, at most 2 s.
    async fn until(c: &ConnHandle, room: i64, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let mut got = Vec::new();
        for _ in 0..200 {
            let mut items = Vec::new();
            c.conn.outbox.drain(&mut items, usize::MAX);
            got.extend(items.into_iter().filter_map(|o| match o {
                Out::Seq { room: r, seq, .. } if r == room => Some(format!("live {seq}")),
                Out::Replay { room: r, rows, .. } if r == room => {
                    Some(format!("replay {:?}", rows.iter().map(|(s, _)| *s).collect::<Vec<_>>()))
                }
                Out::Hold(r) if r == room => Some("hold".into()),
                _ => None,
            }));
            if done(&got) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        got
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

    /// A join holds the room's live events while the room is replayed from the `join`, so the
    /// member's stream of the room starts with it; later events flow live.
    #[tokio::test]
    async fn a_joined_room_starts_with_the_join() {
        let (rooms, connections, bus) = service();
        let carl = online(&connections, &bus, 3);
        rooms.add_member(30, 3, Some(1)).await.unwrap();
        assert!(carl.in_room(30));
        assert_eq!(items(&carl, 30, 2).await, vec!["hold", "replay [6]"]);
        bus.publish_message(30, 7, bytes::Bytes::from_static(b"7"));
        // The join reaches this node's order through a fill (the connection's stream order
        // drops the copy it has from the replay).
        assert_eq!(items(&carl, 30, 2).await, vec!["live 6", "live 7"]);
    }

    /// A `leave` is the last event of the room its member receives, on this node.
    #[tokio::test]
    async fn a_leave_is_the_last_event_the_member_gets() {
        let (rooms, connections, bus) = service();
        let ann = online(&connections, &bus, 1);
        let carl = online(&connections, &bus, 3);
        rooms.add_member(40, 1, None).await.unwrap();
        rooms.add_member(40, 3, None).await.unwrap();
        let carl_got = until(&carl, 40, |got| got.iter().any(|i| i == "replay [7]")).await;
        assert_eq!(carl_got.first().map(String::as_str), Some("hold"), "{carl_got:?}");
        let ann_got = until(&ann, 40, |got| got.iter().any(|i| i == "live 7")).await;
        assert!(ann_got.contains(&"live 7".to_string()), "{ann_got:?}");
        // Whatever else the fills and replays queued.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let _ = (items(&carl, 40, 0).await, items(&ann, 40, 0).await);
        rooms.remove_member(40, 3, Some(3)).await.unwrap();
        bus.publish_message(40, 9, bytes::Bytes::from_static(b"m"));
        assert_eq!(items(&carl, 40, 1).await, vec!["live 8"], "the leave, nothing after");
        assert_eq!(items(&ann, 40, 2).await, vec!["live 8", "live 9"]);
        assert!(!carl.in_room(40));
        assert_eq!(bus.subscriber_count(40), 1);
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
        assert!(rooms.add_member(20, 3, None).await.unwrap());
        assert!(!rooms.add_member(20, 3, None).await.unwrap(), "already a member");
        assert!(carl.in_room(20));
        rooms.remove_member(20, 3, None).await.unwrap();
        assert!(!carl.in_room(20));
        // Unsubscribed once this node delivered the leave (after filling the join before it).
        for _ in 0..200 {
            if bus.subscriber_count(20) == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(bus.subscriber_count(20), 0);
        let err = rooms.remove_member(20, 3, None).await.unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::NotFound);
        let err = rooms.add_member(20, 42, None).await.unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::NotFound);
    }
}
