//! The HTTP edge's state, handed to every request as `Arc<App>`: the chat service, the reads
//! REST makes, authentication, and the edge's own settings and operations handles. Lower layers
//! never see it; they get their narrow handles from the composition root (`cmd::serve`).

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::chat::Chat;
use crate::notify::Queue;
use crate::redis_link::RedisLink;
use crate::store::Store;

/// Everything a request or connection needs.
pub struct App {
    /// Client events, connections and membership changes.
    pub chat: Arc<Chat>,
    /// PostgreSQL reads and admin writes.
    pub store: Store,
    /// Token checks.
    pub auth: Auth,
    /// The edge's settings and lifecycle.
    pub edge: Edge,
    /// Readiness and metrics.
    pub ops: Ops,
    /// The notification job queue (for the admin dead-letter endpoints), when notifications
    /// are enabled or Redis is configured.
    pub notify: Option<Arc<Queue>>,
}

/// The HTTP edge's settings and lifecycle.
pub struct Edge {
    /// `server.allowed_origins` (empty = any).
    pub allowed_origins: Vec<String>,
    /// `serve --dev`: `POST /dev/session` exists and the page offers "sign in as".
    pub dev: bool,
    /// `server.web_client`: serve the page at `GET /`.
    pub web_client: bool,
    /// `server.conformance_echo`: serve `/ws/echo`.
    pub conformance_echo: bool,
    /// `/metrics` is served on the main listener (no `server.metrics_listen`).
    pub metrics_on_main: bool,
    /// `server.max_connections`.
    pub max_connections: usize,
    /// `limits.header_timeout_secs` (fixed at start-up).
    pub header_timeout: Duration,
    /// Cancelled when the server starts draining: connections close with 1001.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks so the drain can wait for them.
    pub tasks: TaskTracker,
}

/// Readiness probes and the metrics exposition.
pub struct Ops {
    /// Prometheus exposition, when a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Redis, when `REDIS_URL` is set.
    pub redis: Option<Arc<RedisLink>>,
}

/// What the readiness probe found.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    /// PostgreSQL answered.
    pub postgres: bool,
    /// Redis answered (`None`: not configured).
    pub redis: Option<bool>,
}

impl App {
    /// Probes PostgreSQL and (if configured) Redis at once, each within its own bound, and
    /// sets the `livechat_postgres_up` / `livechat_redis_up` gauges.
    pub async fn probe(&self) -> Health {
        let redis = async {
            match &self.ops.redis {
                Some(r) => Some(r.ping().await),
                None => None,
            }
        };
        let (postgres, redis) = tokio::join!(self.store.ping(), redis);
        metrics::gauge!(crate::telemetry::names::POSTGRES_UP).set(if postgres { 1.0 } else { 0.0 });
        Health { postgres, redis }
    }
}
