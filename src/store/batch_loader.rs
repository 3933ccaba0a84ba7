//! Coalesces concurrent look-ups by id into one query per batch: the membership look-ups of
//! WebSocket upgrades and the message look-ups of receipts.
//!
//! Every upgrade needs the user's rooms before the 101, every receipt its message's room and
//! seq. One query each made PostgreSQL the bottleneck of a reconnect wave (5.7 k upgrades/s)
//! and let one connection hold the pool with a stream of receipts. Callers instead queue here;
//! one task drains whatever is queued into a single `WHERE id = ANY($1)` query, so the batch
//! grows by itself with the load (the group-commit idea on the read side) while a lone look-up
//! still costs one round trip. Nothing is cached, so a change is visible to the very next
//! look-up on every node.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::Store;
use crate::error::StoreError;
use crate::model::{Membership, MessageMeta};
use crate::telemetry::names;

/// Largest batch: bounds one query's array parameter and result.
const BATCH_MAX: usize = 512;
/// Look-ups waiting for a batch before `load` applies backpressure.
const QUEUE_MAX: usize = 8192;

/// One kind of batched look-up.
pub trait Lookup: Send + Sync + 'static {
    /// What one id maps to.
    type Value: Clone + Send + 'static;
    /// The histogram of ids per query.
    const BATCH_METRIC: &'static str;
    /// The values of those `ids` that exist.
    fn fetch<'a>(&'a self, ids: &'a [i64]) -> BoxFuture<'a, Result<HashMap<i64, Self::Value>, StoreError>>;
}

/// A user's rooms (an unknown user has no entry; a user in no room an empty list).
pub struct Memberships(pub Store);

impl Lookup for Memberships {
    type Value = Vec<Membership>;
    const BATCH_METRIC: &'static str = names::WS_MEMBERSHIP_BATCH_ROWS;
    fn fetch<'a>(&'a self, ids: &'a [i64]) -> BoxFuture<'a, Result<HashMap<i64, Vec<Membership>>, StoreError>> {
        Box::pin(self.0.memberships(ids))
    }
}

/// A message's room, seq and author.
pub struct MessageMetas(pub Store);

impl Lookup for MessageMetas {
    type Value = MessageMeta;
    const BATCH_METRIC: &'static str = names::STORAGE_MESSAGE_LOOKUP_BATCH_ROWS;
    fn fetch<'a>(&'a self, ids: &'a [i64]) -> BoxFuture<'a, Result<HashMap<i64, MessageMeta>, StoreError>> {
        Box::pin(self.0.message_metas(ids))
    }
}

struct Ask<V> {
    id: i64,
    reply: oneshot::Sender<Result<Option<V>, StoreError>>,
}

/// Handle to a look-up task. Cheap to clone.
pub struct BatchLoader<V> {
    tx: mpsc::Sender<Ask<V>>,
}

impl<V> Clone for BatchLoader<V> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

impl<V: Clone + Send + 'static> BatchLoader<V> {
    /// Starts the look-up task on the current runtime; it ends when every handle is dropped.
    pub fn spawn<L: Lookup<Value = V>>(lookup: L) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        tokio::spawn(run(Arc::new(lookup), rx));
        Self { tx }
    }

    /// The value of `id`, or `None` when it does not exist.
    pub async fn load(&self, id: i64) -> Result<Option<V>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Unavailable("look-up task stopped".into());
        self.tx.send(Ask { id, reply }).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run<L: Lookup>(lookup: Arc<L>, mut rx: mpsc::Receiver<Ask<L::Value>>) {
    let mut batch: Vec<Ask<L::Value>> = Vec::with_capacity(BATCH_MAX);
    let mut ids: Vec<i64> = Vec::with_capacity(BATCH_MAX);
    while rx.recv_many(&mut batch, BATCH_MAX).await > 0 {
        ids.clear();
        ids.extend(batch.iter().map(|a| a.id));
        ids.sort_unstable();
        ids.dedup();
        metrics::histogram!(L::BATCH_METRIC).record(ids.len() as f64);
        match lookup.fetch(&ids).await {
            Ok(found) => {
                for ask in batch.drain(..) {
                    let _ = ask.reply.send(Ok(found.get(&ask.id).cloned()));
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Squares, counting the queries.
    struct Squares(Arc<AtomicUsize>);

    impl Lookup for Squares {
        type Value = i64;
        const BATCH_METRIC: &'static str = names::STORAGE_MESSAGE_LOOKUP_BATCH_ROWS;
        fn fetch<'a>(&'a self, ids: &'a [i64]) -> BoxFuture<'a, Result<HashMap<i64, i64>, StoreError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok(ids.iter().filter(|i| **i > 0).map(|i| (*i, i * i)).collect()) })
        }
    }

    #[tokio::test]
    async fn concurrent_look_ups_share_queries() {
        let queries = Arc::new(AtomicUsize::new(0));
        let loader = BatchLoader::spawn(Squares(queries.clone()));
        let asks = (-5..100).map(|i| {
            let l = loader.clone();
            async move { (i, l.load(i).await) }
        });
        for (i, got) in futures_util::future::join_all(asks).await {
            assert_eq!(got.unwrap(), (i > 0).then_some(i * i));
        }
        assert!(queries.load(Ordering::SeqCst) < 105, "batched: {} queries", queries.load(Ordering::SeqCst));
    }
}
