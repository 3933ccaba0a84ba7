//! Who is online: this node's live connections ([`connections`]) and, with Redis, the whole
//! cluster's ([`cluster`]). `presence` events mean "first connection anywhere opened / last one
//! closed"; the members endpoint and the notification relay ask [`Presence::online_among`].

pub mod cluster;
pub mod connections;
pub mod membership;

use std::collections::HashSet;
use std::sync::Arc;

use crate::bus::Bus;
use crate::store::Store;
use crate::wire::server::presence_frame;
pub use connections::{ConnHandle, Connections};
pub use membership::MembershipFeed;

/// What presence needs from the rest of this node.
pub struct Local {
    /// This node's live connections.
    pub connections: Arc<Connections>,
    /// Where `presence` events go.
    pub bus: Arc<Bus>,
    /// Memberships of a dead node's users (their rooms get `presence` offline).
    pub store: Store,
    /// Rooms above this many members get no `presence` events (`presence.max_room_members`).
    pub max_room_members: i64,
}

impl Local {
    /// Sends `presence` for `user` to the other members of `rooms`, on every node.
    pub fn announce(&self, user: i64, rooms: &[i64], online: bool) {
        for &room in rooms {
            self.bus.publish(room, presence_frame(room, user, online), Some(user));
        }
    }
}

/// Online state across the cluster (node-local without Redis).
pub struct Presence {
    local: Arc<Local>,
    cluster: Option<Arc<cluster::ClusterPresence>>,
}

impl Presence {
    /// Node-local presence (no Redis).
    pub fn local(local: Arc<Local>) -> Self {
        Self { local, cluster: None }
    }

    /// Cluster-wide presence through `cluster` (whose task [`cluster::run`] must be started).
    pub fn clustered(local: Arc<Local>, cluster: Arc<cluster::ClusterPresence>) -> Self {
        Self { local, cluster: Some(cluster) }
    }

    /// This node's live connections.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.local.connections
    }

    /// The user's first connection on this node opened: `presence` online goes to `rooms`
    /// (those small enough for presence events) unless the user is connected elsewhere.
    pub fn went_online(&self, user: i64, rooms: Vec<i64>) {
        match &self.cluster {
            Some(c) => c.change(cluster::Change::Online { user, rooms }),
            None => self.local.announce(user, &rooms, true),
        }
    }

    /// The user's last connection on this node closed: `presence` offline goes to `rooms`
    /// unless the user is still connected elsewhere.
    pub fn went_offline(&self, user: i64, rooms: Vec<i64>) {
        match &self.cluster {
            Some(c) => c.change(cluster::Change::Offline { user, rooms }),
            None => self.local.announce(user, &rooms, false),
        }
    }

    /// Which of `users` have a live connection anywhere (here, or on a live node of the
    /// cluster; this node's view alone while Redis cannot answer).
    pub async fn online_among(&self, users: impl IntoIterator<Item = i64>) -> HashSet<i64> {
        let connections = &self.local.connections;
        let (here, elsewhere): (Vec<i64>, Vec<i64>) = users.into_iter().partition(|u| connections.is_online(*u));
        let mut online: HashSet<i64> = here.into_iter().collect();
        if let (Some(c), false) = (&self.cluster, elsewhere.is_empty()) {
            if let Some(found) = c.online_elsewhere(&elsewhere).await {
                online.extend(found);
            }
        }
        online
    }

    /// Graceful stop: this node stops counting in the cluster's online state.
    pub async fn leave(&self) {
        if let Some(c) = &self.cluster {
            c.leave().await;
        }
    }
}

#[cfg(test)]
mod tests;
