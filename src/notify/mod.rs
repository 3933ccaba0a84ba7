//! Notifications: one job per offline room member per sink, delivered at least
//! once (normally exactly once) to a webhook, over SMTP, or to the log.
//!
//! ```text
//! store::group_commit ─ notify_outbox row IN the message's transaction ──► PostgreSQL
//!        │ `committed` (wake-up)                                          │
//!        ▼                                                                ▼
//!  relay (serve only): SELECT … FOR UPDATE SKIP LOCKED → members − sender − online
//!        │ jobs (refused above notify.queue_max: rows stay in the outbox)
//!        ▼
//!  queue: Redis Stream `<prefix>:jobs` + group `livechat-workers`   (or bounded memory)
//!        │ XREADGROUP / XAUTOCLAIM                   ▲ due retries (sorted set, Lua move)
//!        ▼                                           │
//!  worker (serve, or `livechat worker`) ── sink ── ok: XACK │ fail: retry │ max: `<prefix>:dead`
//! ```
//!
//! A job is never lost between commit and enqueue (the outbox row is deleted in the same
//! transaction that enqueued its jobs, after the enqueue), nor between enqueue and delivery
//! (a stream entry leaves the pending list only by `XACK`, in the same `MULTI` that moves a
//! failed job to the retry set or the dead letters). The stream is never trimmed by length;
//! see [`queue`].

pub mod job;
pub mod queue;
pub mod relay;
pub mod sinks;
pub mod worker;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, NotifyConfig};
use crate::redis_link::RedisLink;
use crate::store::Store;

pub use job::{Job, SinkKind};
pub use queue::Queue;

/// Asks whether users are online anywhere (no job for a user with a live connection).
pub trait Online: Send + Sync + 'static {
    /// Which of `users` have a live connection on any node.
    fn online_among(&self, users: Vec<i64>) -> BoxFuture<'_, HashSet<i64>>;
}

/// Notification failures outside a single delivery.
#[derive(Debug, Error)]
pub enum NotifyError {
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(String),
    /// The queue holds `notify.queue_max` jobs: try again after workers catch up.
    #[error("notification queue is full")]
    Full,
    /// PostgreSQL failed during a relay pass.
    #[error(transparent)]
    Store(#[from] crate::error::StoreError),
    /// A sink could not be set up (bad URL, TLS initialisation).
    #[error("{0}")]
    Setup(String),
    /// A job could not be encoded for the queue.
    #[error("cannot encode a notification job: {0}")]
    Encode(String),
}

impl From<redis::RedisError> for NotifyError {
    fn from(e: redis::RedisError) -> Self {
        NotifyError::Redis(e.to_string())
    }
}

impl From<crate::redis_link::RedisDown> for NotifyError {
    fn from(e: crate::redis_link::RedisDown) -> Self {
        NotifyError::Redis(e.0)
    }
}

/// The queue for this process: durable in Redis when it is configured, else bounded memory.
pub fn queue(config: &Config, redis: Option<Arc<RedisLink>>) -> Arc<Queue> {
    let n = &config.notify;
    Arc::new(match redis {
        Some(link) => Queue::redis(link, &n.key_prefix, n.queue_max, n.max_attempts, n.backoff_base_ms),
        None => Queue::memory(n.queue_max, n.max_attempts, n.backoff_base_ms),
    })
}

/// Running notification tasks of `serve`: stopped by [`Running::stop`] during the drain.
pub struct Running {
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops the relay and the workers. Jobs in flight that do not finish within a short grace
    /// stay unacknowledged in Redis and are taken over later (in memory they are lost, as the
    /// start-up warning says).
    pub async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// What the notification tasks of `serve` need from the node.
pub struct Context {
    /// `[notify]`.
    pub config: NotifyConfig,
    /// The worker's consumer name ([`consumer_name`]).
    pub consumer: String,
    /// The outbox, members and users' e-mail addresses.
    pub store: Store,
    /// Who is online anywhere.
    pub online: Arc<dyn Online>,
    /// Notified after a commit that wrote outbox rows.
    pub committed: Arc<tokio::sync::Notify>,
}

/// Starts the relay and, with `notify.in_process`, the workers of `serve`.
pub fn start(ctx: Context, queue: Arc<Queue>) -> Result<Running, NotifyError> {
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    let n = &ctx.config;
    if !n.enabled() {
        return Ok(Running { cancel, tasks });
    }
    if queue.is_memory() {
        tracing::warn!(
            queue_max = n.queue_max,
            "REDIS_URL is not set: notification jobs are kept in memory only and are NOT durable \
             (lost on restart or crash)."
        );
        if !n.in_process {
            // Nobody else can see an in-memory queue: keep the jobs in PostgreSQL's outbox.
            tracing::warn!(
                "notify.in_process = false without REDIS_URL: no worker can reach this process's \
                 queue, so notifications stay in the outbox until a serve with workers runs."
            );
            return Ok(Running { cancel, tasks });
        }
    }
    if n.in_process {
        let sinks = Arc::new(sinks::Sinks::new(n, Some(ctx.store.clone()))?);
        let w = worker::Worker::new(queue.clone(), sinks, ctx.consumer.clone(), n.worker_concurrency, claim_idle(n));
        tasks.push(tokio::spawn(w.run(cancel.clone())));
    }
    let relay = relay::Relay::new(ctx, queue);
    tasks.push(tokio::spawn(relay.run(cancel.clone())));
    Ok(Running { cancel, tasks })
}

/// The consumer name: unique per process (node id + pid), so two processes never share a
/// pending list. With a fixed node id and pid 1 (containers) a restarted process gets its
/// predecessor's name back and re-reads that pending list at once.
pub fn consumer_name(config: &Config) -> String {
    let node = config.node_id();
    let pid = std::process::id();
    if node.ends_with(&format!("-{pid}")) {
        node
    } else {
        format!("{node}-{pid}")
    }
}

/// `notify.claim_idle_ms`: how long a delivered job may stay unacknowledged before another
/// worker takes it over.
pub fn claim_idle(n: &NotifyConfig) -> Duration {
    Duration::from_millis(n.claim_idle_ms)
}
