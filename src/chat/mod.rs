//! The chat service: what client events do ([`session`]), a connection's life from
//! authenticated upgrade to close ([`connect`]), membership changes ([`rooms`]), and the
//! [`CommitSink`](crate::store::group_commit::CommitSink) that publishes committed rows
//! ([`publisher`]). Everything a connection or a REST handler changes goes through here, so
//! the transport (`ws`) and the HTTP edge (`http`) hold no chat logic.

pub mod connect;
pub mod publisher;
pub mod rate;
pub mod rooms;
pub mod session;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;

use crate::bus::{Bus, History};
use crate::config::LimitsConfig;
use crate::error::{ApiError, StoreError};
use crate::model::{Membership, MessageMeta, RoomEvent};
use crate::presence::Presence;
use crate::store::batch_loader::BatchLoader;
use crate::store::group_commit::{Write, Writer};
use crate::store::Store;
pub use connect::Connected;
pub use publisher::{Ack, Publisher};
pub use rooms::Rooms;
pub use session::Session;

/// The reads a session makes: receipts, edits, deletes and reactions look up their message,
/// `sync` replays a seq range ([`History::between`]).
pub trait Reads: History {
    /// Room, seq and author of a message, if it exists.
    fn message_meta(&self, message_id: i64) -> BoxFuture<'_, Result<Option<MessageMeta>, StoreError>>;
}

/// The server's reads: replays straight from PostgreSQL, receipt look-ups batched (one query
/// for all the receipts in flight, however many a connection sends).
pub struct StoreReads {
    /// Replays.
    pub store: Store,
    /// Receipt look-ups.
    pub metas: BatchLoader<MessageMeta>,
}

impl History for StoreReads {
    fn between(
        &self,
        room: i64,
        after: i64,
        before: i64,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<RoomEvent>, StoreError>> {
        self.store.between(room, after, before, limit)
    }
}

impl Reads for StoreReads {
    fn message_meta(&self, message_id: i64) -> BoxFuture<'_, Result<Option<MessageMeta>, StoreError>> {
        Box::pin(self.metas.load(message_id))
    }
}

/// Fixed settings of the chat service (from `[sync]` and `[presence]`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `sync.max_replay`: events replayed per room and `sync` at most.
    pub max_replay: i64,
    /// `sync.initial_hold_ms`: how long a `resume=1` connection holds live events for its `sync`.
    pub initial_hold_ms: u64,
    /// `sync.max_rooms`: rooms one `sync` may name.
    pub sync_max_rooms: usize,
    /// `presence.max_room_members`: larger rooms get no `presence` events.
    pub presence_max_room_members: i64,
}

/// The chat service of this node. Shared as `Arc<Chat>`.
pub struct Chat {
    /// Receipt look-ups and `sync` replays.
    reads: Arc<dyn Reads>,
    /// The group commit.
    writer: Writer<Ack>,
    /// Room fan-out.
    bus: Arc<Bus>,
    /// Online state and this node's connections.
    presence: Arc<Presence>,
    /// Batched membership look-ups for new connections.
    memberships: BatchLoader<Vec<Membership>>,
    /// Membership changes.
    rooms: Rooms,
    settings: Settings,
    /// `[limits]` in force: replaced by a SIGHUP reload. Read once per new connection (a
    /// lock-free load), so open connections keep the limits they got.
    limits: ArcSwap<LimitsConfig>,
    /// Set when the server starts draining: new writes and connections are refused.
    draining: AtomicBool,
}

/// The parts [`Chat::new`] is assembled from.
pub struct Parts {
    /// Receipt look-ups and `sync` replays.
    pub reads: Arc<dyn Reads>,
    /// The group commit.
    pub writer: Writer<Ack>,
    /// Room fan-out.
    pub bus: Arc<Bus>,
    /// Online state and this node's connections.
    pub presence: Arc<Presence>,
    /// Batched membership look-ups.
    pub memberships: BatchLoader<Vec<Membership>>,
    /// Membership changes.
    pub rooms: Rooms,
}

impl Chat {
    /// The service over its parts.
    pub fn new(parts: Parts, settings: Settings, limits: LimitsConfig) -> Arc<Self> {
        let Parts { reads, writer, bus, presence, memberships, rooms } = parts;
        Arc::new(Self {
            reads,
            writer,
            bus,
            presence,
            memberships,
            rooms,
            settings,
            limits: ArcSwap::from_pointee(limits),
            draining: AtomicBool::new(false),
        })
    }

    /// The `[limits]` in force.
    pub fn limits(&self) -> Arc<LimitsConfig> {
        self.limits.load_full()
    }

    /// Replaces the limits that new connections get (SIGHUP reload).
    pub fn set_limits(&self, limits: LimitsConfig) {
        self.limits.store(Arc::new(limits));
    }

    /// Marks the node as draining: new writes and connections are refused.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the node is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Membership changes (REST).
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// Online state (the members endpoint, the notification relay).
    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    /// Deletes a message over REST: by its sender (`Some`, a member of its room) or by a
    /// moderator (`None`, the admin token). Waits for the commit; the `delete` event reaches
    /// the room like any other and is returned.
    pub async fn delete_message(&self, message_id: i64, user: Option<i64>) -> Result<RoomEvent, ApiError> {
        let meta = self.reads.message_meta(message_id).await?.ok_or_else(|| ApiError::not_found("no such message"))?;
        if user.is_some_and(|u| u != meta.sender_id) {
            return Err(ApiError::forbidden("only the sender or an admin deletes a message"));
        }
        if self.is_draining() {
            return Err(ApiError::unavailable("server is restarting, retry later", 1000));
        }
        let (reply, outcome) = Ack::rest();
        self.writer.submit(Write::Delete { room_id: meta.room_id, user_id: user, message_id }, reply)?;
        outcome.await.unwrap_or_else(|_| Err(ApiError::unavailable("the write was not confirmed; retry", 1000)))
    }

    /// Writes queued and not yet committed (a gauge).
    pub fn write_queue_depth(&self) -> u64 {
        self.writer.depth()
    }
}
