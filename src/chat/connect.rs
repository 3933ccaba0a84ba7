//! A connection's life in the chat service: on an authenticated upgrade, its rooms are looked
//! up, it is registered (subscribed to its rooms on the bus) and the user goes online; when
//! its task ends, however it ends (a panic included), [`Connected`] undoes all of it.

use std::sync::Arc;

use super::{Chat, Session};
use crate::conn::ConnState;
use crate::error::{ApiError, ErrorCode};
use crate::presence::ConnHandle;

/// A registered connection. Dropping it unregisters the connection and, for the user's last
/// one, announces them offline.
pub struct Connected {
    chat: Arc<Chat>,
    handle: Arc<ConnHandle>,
    /// Rooms small enough for `presence` events, as of the connect.
    presence_rooms: Vec<i64>,
}

impl Chat {
    /// Registers a new connection of `user_id` with an outbox of `limits.outbound_queue_frames`.
    /// Refused while draining, for an unknown user, and past `limits.connections_per_user`.
    pub async fn connect(self: &Arc<Self>, user_id: i64) -> Result<Connected, ApiError> {
        if self.is_draining() {
            return Err(ApiError::unavailable("server is shutting down", 1000));
        }
        let connections = self.presence.connections();
        let epoch = connections.membership_epoch();
        let rooms = self.memberships.load(user_id).await?.ok_or_else(|| ApiError::unauthorized("unknown user"))?;
        let limits = self.limits();
        let conn = Arc::new(ConnState::new(limits.outbound_queue_frames));
        let (handle, first) = connections
            .register(user_id, &rooms, conn, limits.connections_per_user, &self.bus)
            .map_err(|_| ApiError::new(ErrorCode::RateLimited, "too many connections for this user"))?;
        if connections.membership_epoch() != epoch {
            // A join or leave was applied between the look-up and the registration, when this
            // connection could not see it: look again (rare: memberships change over REST).
            if let Ok(Some(fresh)) = self.memberships.load(user_id).await {
                connections.reconcile(&handle, &fresh, &self.bus);
            }
        }
        let max = self.settings.presence_max_room_members;
        let presence_rooms: Vec<i64> = rooms.iter().filter(|m| m.member_count <= max).map(|m| m.room_id).collect();
        if first {
            self.presence.went_online(user_id, presence_rooms.clone());
        }
        Ok(Connected { chat: self.clone(), handle, presence_rooms })
    }

    /// `sync.initial_hold_ms`.
    pub fn initial_hold_ms(&self) -> u64 {
        self.settings.initial_hold_ms
    }
}

impl Connected {
    /// The connection's shared state (its outbox).
    pub fn conn(&self) -> &Arc<ConnState> {
        &self.handle.conn
    }

    /// The chat session that handles this connection's client events.
    pub fn session(&self) -> Session {
        Session::new(self.chat.clone(), self.handle.clone())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        if self.chat.presence.connections().unregister(&self.handle, &self.chat.bus) {
            let rooms = std::mem::take(&mut self.presence_rooms);
            self.chat.presence.went_offline(self.handle.user_id, rooms);
        }
    }
}
