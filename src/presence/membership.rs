//! Membership changes reach this node's live connections: the bus tells [`MembershipFeed`]
//! about every `join`/`leave` committed anywhere in the cluster (README "Room events"), and it
//! moves the member's connections here in or out of the room.

use std::sync::{Arc, Weak};

use futures_util::StreamExt;

use super::Connections;
use crate::bus::{Bus, MemberChange, MembershipListener};
use crate::model::Membership;
use crate::store::batch_loader::BatchLoader;

/// Look-ups in flight while re-reading memberships.
const RESYNC_CONCURRENCY: usize = 256;

/// The bus's [`MembershipListener`] on this node.
pub struct MembershipFeed {
    connections: Arc<Connections>,
    /// Weak: the bus holds this listener.
    bus: Weak<Bus>,
    /// Memberships re-read after changes may have been missed.
    memberships: BatchLoader<Vec<Membership>>,
}

impl MembershipFeed {
    /// The feed of `connections` on `bus`; registers itself with the bus.
    pub fn install(connections: Arc<Connections>, bus: &Arc<Bus>, memberships: BatchLoader<Vec<Membership>>) {
        let feed = Arc::new(Self { connections, bus: Arc::downgrade(bus), memberships });
        bus.set_membership_listener(feed);
    }
}

impl MembershipListener for MembershipFeed {
    fn changed(&self, c: MemberChange) {
        let Some(bus) = self.bus.upgrade() else { return };
        if c.join {
            self.connections.joined(c.user, c.room, c.seq, &bus);
        } else {
            self.connections.left(c.user, c.room, c.seq, &bus);
        }
    }

    fn resync(&self) {
        let (connections, bus, memberships) = (self.connections.clone(), self.bus.clone(), self.memberships.clone());
        tokio::spawn(async move {
            let users = connections.online_users();
            tracing::info!(users = users.len(), "Re-reading the memberships of connected users.");
            // Concurrent look-ups, so the batch loader merges them into few queries.
            let mut loads = futures_util::stream::iter(users)
                .map(|user| {
                    let memberships = memberships.clone();
                    async move { (user, memberships.load(user).await) }
                })
                .buffer_unordered(RESYNC_CONCURRENCY);
            while let Some((user, fresh)) = loads.next().await {
                let (Ok(Some(fresh)), Some(bus)) = (fresh, bus.upgrade()) else { continue };
                connections.reconcile_user(user, &fresh, &bus);
            }
        });
    }
}
