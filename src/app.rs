//! Shared server state, built once at start-up and handed to every task as `Arc<App>`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::bus::Bus;
use crate::config::{Config, LimitsConfig};
use crate::presence::{Presence, Registry};
use crate::redis_link::RedisLink;
use crate::store::batcher::Writer;
use crate::store::membership_loader::MembershipLoader;
use crate::store::Store;

/// Everything a request or connection needs.
pub struct App {
    /// Validated configuration.
    pub config: Config,
    /// PostgreSQL reads and admin writes.
    pub store: Store,
    /// Group-commit writer for messages and receipts.
    pub writer: Writer,
    /// Batched membership look-ups for WebSocket upgrades.
    pub memberships: MembershipLoader,
    /// Room fan-out.
    pub bus: Arc<Bus>,
    /// Live connections.
    pub registry: Registry,
    /// Online state across the cluster.
    pub presence: Presence,
    /// Token checks.
    pub auth: Auth,
    /// Prometheus exposition, when a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Cancelled when the server starts draining: connections close with 1001.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks so the drain can wait for them.
    pub tasks: TaskTracker,
    /// Redis, when `REDIS_URL` is set.
    pub redis: Option<Arc<RedisLink>>,
    /// Notified after a commit that wrote notification outbox rows.
    pub committed: Arc<tokio::sync::Notify>,
    /// The notification job queue (for the admin dead-letter endpoints), when notifications
    /// are enabled or Redis is configured.
    pub notify: Option<Arc<crate::notify::Queue>>,
    /// `[limits]` in force: starts as `config.limits`, replaced by a SIGHUP reload. Read once
    /// per new connection (a lock-free load), so open connections keep the limits they got.
    limits: ArcSwap<LimitsConfig>,
    draining: AtomicBool,
}

impl App {
    /// Assembles the state (and starts the membership look-up task: call inside the runtime).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        store: Store,
        writer: Writer,
        bus: Arc<Bus>,
        auth: Auth,
        metrics: Option<PrometheusHandle>,
        redis: Option<Arc<RedisLink>>,
        committed: Arc<tokio::sync::Notify>,
        notify: Option<Arc<crate::notify::Queue>>,
        presence: Presence,
    ) -> Arc<Self> {
        Arc::new(Self {
            limits: ArcSwap::from_pointee(config.limits.clone()),
            config,
            memberships: MembershipLoader::spawn(store.clone()),
            store,
            writer,
            bus,
            registry: Registry::default(),
            presence,
            auth,
            metrics,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            redis,
            committed,
            notify,
            draining: AtomicBool::new(false),
        })
    }

    /// The `[limits]` in force (`config.limits` until a SIGHUP reload changes them).
    pub fn limits(&self) -> Arc<LimitsConfig> {
        self.limits.load_full()
    }

    /// Replaces the limits that new connections get (SIGHUP reload).
    pub fn set_limits(&self, limits: LimitsConfig) {
        self.limits.store(Arc::new(limits));
    }

    /// Marks the server as draining: `/readyz` turns 503 and new writes are refused.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the server is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
