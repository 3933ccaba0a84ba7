//! Notifications (SPEC §6.6, §8): one job per offline room member per sink, delivered at least
//! once (normally exactly once) to a webhook, over SMTP, or to the log.
//!
//! ```text
//! store::batcher ── notify_outbox row IN the message's transaction ──► PostgreSQL
//!        │ app.committed (wake-up)                                        │
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

pub mod queue;
pub mod relay;
pub mod sinks;
pub mod worker;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::redis_link::RedisLink;
use crate::store::Store;

pub use queue::Queue;

/// Where a job is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// HTTP POST to `notify.webhook_url`.
    Webhook,
    /// Mail to the user's address over `notify.smtp_url`.
    Email,
    /// An info line (development).
    Log,
}

impl SinkKind {
    /// The name used in job ids and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Email => "email",
            SinkKind::Log => "log",
        }
    }
}

/// One notification: a message for one user through one sink. Stored as JSON in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Stable across retries, re-queues and relay repeats: `<message_id>-<user_id>-<sink>`,
    /// so a receiver can drop duplicates of at-least-once delivery.
    pub job_id: String,
    /// Sink.
    pub sink: SinkKind,
    /// Recipient.
    pub user_id: i64,
    /// Room of the message.
    pub room_id: i64,
    /// The message.
    pub message_id: i64,
    /// Its author.
    pub sender_id: i64,
    /// The start of the content ([`relay::PREVIEW_CHARS`] characters at most).
    pub preview: String,
    /// The message's commit time, RFC 3339 UTC.
    pub created_at: String,
    /// Failed deliveries so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the job was first enqueued (ms since the epoch), for the latency histogram.
    #[serde(default)]
    pub enqueued_at_ms: u64,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Job {
    /// The stable id of the job for `user_id` about `message_id` through `sink`.
    pub fn id_for(message_id: i64, user_id: i64, sink: SinkKind) -> String {
        format!("{message_id}-{user_id}-{}", sink.as_str())
    }
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

/// Milliseconds since the Unix epoch (wall clock: compared across processes).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
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

/// Starts the relay and, with `notify.in_process`, the workers of `serve`.
pub fn start(app: &Arc<crate::app::App>, queue: Arc<Queue>) -> Result<Running, NotifyError> {
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    let n = &app.config.notify;
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
    init_metrics();
    if n.in_process {
        let sinks = Arc::new(sinks::Sinks::new(n, Some(app.store.clone()))?);
        let consumer = consumer_name(&app.config);
        let w = worker::Worker::new(queue.clone(), sinks, consumer, n.worker_concurrency, claim_idle(n));
        tasks.push(tokio::spawn(w.run(cancel.clone())));
    }
    let relay = relay::Relay::new(app.clone(), queue);
    tasks.push(tokio::spawn(relay.run(cancel.clone())));
    Ok(Running { cancel, tasks })
}

/// Why `livechat worker` cannot start.
#[derive(Debug, Error)]
pub enum WorkerStartError {
    /// A required setting is missing or a sink cannot be set up.
    #[error("{0}")]
    Config(String),
}

/// `livechat worker`: workers only, until SIGTERM/SIGINT.
pub async fn run_worker(config: Config) -> Result<(), WorkerStartError> {
    let Some(redis_url) = config.redis.url.as_deref() else {
        return Err(WorkerStartError::Config(
            "livechat worker needs REDIS_URL (the shared job queue); without Redis, jobs live in the \
             serve process's memory and its in-process workers deliver them"
                .into(),
        ));
    };
    let db_url = config.database.url.as_deref().ok_or_else(|| {
        WorkerStartError::Config("DATABASE_URL is not set (needed for users' e-mail addresses)".into())
    })?;
    let link = Arc::new(
        RedisLink::with_ca_file(redis_url, config.redis.ca_file.as_deref())
            .map_err(|e| WorkerStartError::Config(e.to_string()))?,
    );
    let timeout = Duration::from_millis(config.database.connect_timeout_ms);
    let store = Store::with_ca_file(db_url, 4, timeout, config.database.ca_file.as_deref())
        .map_err(|e| WorkerStartError::Config(e.to_string()))?;
    let n = &config.notify;
    if !n.enabled() {
        tracing::warn!(
            "No sink is configured (notify.webhook_url, notify.smtp_url, notify.log_sink): every job will fail."
        );
    }
    let sinks = Arc::new(sinks::Sinks::new(n, Some(store)).map_err(|e| WorkerStartError::Config(e.to_string()))?);
    let metrics_listener = match config.metrics_addr().map_err(|e| WorkerStartError::Config(e.to_string()))? {
        Some(addr) => Some((
            addr,
            tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                WorkerStartError::Config(format!("cannot listen on {addr} (server.metrics_listen): {e}"))
            })?,
        )),
        None => None,
    };
    let queue = queue(&config, Some(link));
    let consumer = consumer_name(&config);
    if let Some((addr, listener)) = metrics_listener {
        match crate::telemetry::install_metrics() {
            Some(handle) => {
                init_metrics();
                tracing::info!(%addr, "Serving /metrics.");
                tokio::spawn(serve_metrics(listener, handle));
            }
            None => tracing::warn!("A metrics recorder is already installed; /metrics not served."),
        }
    }
    let w = worker::Worker::new(queue, sinks, consumer.clone(), n.worker_concurrency, claim_idle(n));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(w.run(cancel.clone()));
    // The one stdout line tests and scripts wait for.
    println!("worker {consumer} running");
    tracing::info!(%consumer, "Notification worker running.");
    // systemd (livechat-worker.service, Type=notify): up, then watchdog pings until exit.
    crate::systemd::ready();
    crate::systemd::spawn_watchdog(CancellationToken::new());
    crate::server::wait_for_signal().await;
    crate::systemd::stopping();
    tracing::info!("Stopping the worker; unfinished jobs stay in Redis.");
    cancel.cancel();
    let _ = task.await;
    Ok(())
}

/// Counters exist from the first scrape (at 0), so `rate()` sees their first increment.
fn init_metrics() {
    for name in [
        "livechat_notify_jobs_enqueued_total",
        "livechat_notify_jobs_retried_total",
        "livechat_notify_jobs_dead_lettered_total",
        "livechat_notify_jobs_reclaimed_total",
        "livechat_notify_enqueue_refused_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// `GET /metrics` for `livechat worker` (which has no HTTP API) on `server.metrics_listen`.
async fn serve_metrics(listener: tokio::net::TcpListener, handle: metrics_exporter_prometheus::PrometheusHandle) {
    use http_body_util::Full;
    use hyper::{Response, StatusCode};
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and friends: the scrape retries; do not spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let handle = handle.clone();
                async move {
                    let mut resp = if req.uri().path() == "/metrics" {
                        Response::new(Full::new(bytes::Bytes::from(handle.render())))
                    } else {
                        let mut r =
                            Response::new(Full::new(bytes::Bytes::from_static(b"only /metrics is served here\n")));
                        *r.status_mut() = StatusCode::NOT_FOUND;
                        r
                    };
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let mut http = hyper::server::conn::http1::Builder::new();
            // A request head must arrive promptly (slowloris), as on the main listener.
            http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
            let _ = http.serve_connection(io, svc).await;
        });
    }
}

/// The consumer name: unique per process (node id + pid), so two processes never share a
/// pending list. With a fixed node id and pid 1 (containers) a restarted process gets its
/// predecessor's name back and re-reads that pending list at once.
fn consumer_name(config: &Config) -> String {
    let node = config.node_id();
    let pid = std::process::id();
    if node.ends_with(&format!("-{pid}")) {
        node
    } else {
        format!("{node}-{pid}")
    }
}

fn claim_idle(n: &crate::config::NotifyConfig) -> Duration {
    Duration::from_millis(n.claim_idle_ms)
}
