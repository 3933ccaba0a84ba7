//! Coalesces the membership look-ups of concurrent WebSocket upgrades into one query.
//!
//! Every upgrade needs the user's rooms before the 101. One query per upgrade made PostgreSQL
//! the bottleneck of a reconnect wave (its backends competed with the server for the same
//! cores: 5.7 k upgrades/s). Upgrades instead queue here; one task drains whatever is queued
//! into a single `WHERE u.id = ANY($1)` query, so the batch grows by itself with the load
//! (the same group-commit idea as the writer) while a lone upgrade still costs one round
//! trip. Nothing is cached, so a membership change is visible to the very next upgrade on
//! every node.

use tokio::sync::{mpsc, oneshot};

use super::Store;
use crate::error::StoreError;
use crate::model::Membership;
use crate::telemetry::names;

/// Largest batch: bounds one query's array parameter and result.
const BATCH_MAX: usize = 512;
/// Upgrades waiting for a batch before `load` applies backpressure.
const QUEUE_MAX: usize = 8192;

/// One upgrade's answer: its rooms, or `None` when the user does not exist.
pub type Answer = Result<Option<Vec<Membership>>, StoreError>;

struct Ask {
    user_id: i64,
    reply: oneshot::Sender<Answer>,
}

/// Handle to the look-up task. Cheap to clone.
#[derive(Clone)]
pub struct MembershipLoader {
    tx: mpsc::Sender<Ask>,
}

impl MembershipLoader {
    /// Starts the look-up task on the current runtime; it ends when every handle is dropped.
    pub fn spawn(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        tokio::spawn(run(store, rx));
        Self { tx }
    }

    /// The rooms of `user_id`, or `None` when the user does not exist.
    pub async fn load(&self, user_id: i64) -> Answer {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Unavailable("membership look-up task stopped".into());
        self.tx.send(Ask { user_id, reply }).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Ask>) {
    let mut batch: Vec<Ask> = Vec::with_capacity(BATCH_MAX);
    let mut ids: Vec<i64> = Vec::with_capacity(BATCH_MAX);
    while rx.recv_many(&mut batch, BATCH_MAX).await > 0 {
        ids.clear();
        ids.extend(batch.iter().map(|a| a.user_id));
        ids.sort_unstable();
        ids.dedup();
        metrics::histogram!(names::WS_MEMBERSHIP_BATCH_ROWS).record(ids.len() as f64);
        match store.memberships(&ids).await {
            Ok(found) => {
                for ask in batch.drain(..) {
                    let _ = ask.reply.send(Ok(found.get(&ask.user_id).cloned()));
                }
            }
            Err(e) => {
                for ask in batch.drain(..) {
                    let _ = ask.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
