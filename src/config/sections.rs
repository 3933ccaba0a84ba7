//! The configuration's sections, each with its defaults. `config/livechat.toml` documents
//! every key; secrets never appear in a debug dump.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ConfigError;

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP/WebSocket listener binds.
    pub listen: String,
    /// Allowed `Origin` values for upgrades; empty = any.
    #[serde(deserialize_with = "string_list")]
    pub allowed_origins: Vec<String>,
    /// Seconds allowed for a graceful stop.
    pub drain_secs: u64,
    /// Seconds, at the start of the drain, during which the listener keeps accepting while
    /// `/readyz` answers 503 (and upgrades are refused), so a load balancer's health check
    /// sees it and stops routing here before sockets close. Part of `drain_secs`.
    pub accept_grace_secs: u64,
    /// When set, `/metrics` is served only on this separate address.
    pub metrics_listen: Option<String>,
    /// Upper bound of open connections for the whole process.
    pub max_connections: usize,
    /// Serve `/ws/echo` (no auth), which echoes frames through the same connection layer:
    /// used only by the RFC 6455 conformance suite. Never enable in production.
    pub conformance_echo: bool,
    /// Bind the listener with `SO_REUSEPORT`, so several `livechat serve` processes on one
    /// host share the port and the kernel spreads connections over them. Off by default: a
    /// second server started by mistake on a taken port fails instead of sharing it.
    pub reuse_port: bool,
    /// Serve the web client at `GET /` (README "Web client").
    pub web_client: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
            allowed_origins: Vec::new(),
            drain_secs: 10,
            accept_grace_secs: 0,
            metrics_listen: None,
            max_connections: 100_000,
            conformance_echo: false,
            reuse_port: false,
            web_client: true,
        }
    }
}

/// `[auth]`
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for client tokens (`LIVECHAT_JWT_SECRET`).
    pub jwt_secret: Option<String>,
    /// Bearer token of the admin API (`LIVECHAT_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// Clock-skew allowance for `exp`, seconds.
    pub leeway_secs: u64,
}

// Secrets are never printed, not even in a debug dump of the config.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<redacted>"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>"))
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// `[database]`
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL URL (`DATABASE_URL`).
    pub url: Option<String>,
    /// Connections in the pool (the writer takes one, reads share the rest).
    pub pool_size: u32,
    /// How long to wait for a pooled connection, milliseconds.
    pub connect_timeout_ms: u64,
    /// PEM file of the CA(s) that sign the server certificate, for `sslmode=require|verify-ca|
    /// verify-full` (e.g. the RDS bundle); unset = the system's trust store.
    pub ca_file: Option<PathBuf>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: None, pool_size: 16, connect_timeout_ms: 2000, ca_file: None }
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("pool_size", &self.pool_size)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `[redis]`
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL (`REDIS_URL`); unset = single node. `rediss://` connects with TLS.
    pub url: Option<String>,
    /// PEM file of the CA(s) that sign a `rediss://` server's certificate; unset = the
    /// system's trust store.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `[limits]`: what happens past each one is in the README ("Limits").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted WebSocket message (all fragments together), bytes.
    pub frame_max_bytes: usize,
    /// Largest `content`, characters after trim.
    pub content_max_chars: usize,
    /// Sustained `message` events per second per connection.
    pub messages_per_sec: u32,
    /// Burst of `message` events per connection.
    pub messages_burst: u32,
    /// `typing` events per second per user and room.
    pub typing_per_sec: u32,
    /// Frames queued for one connection before it counts as a slow consumer.
    pub outbound_queue_frames: usize,
    /// Seconds between server pings.
    pub ping_secs: u64,
    /// Seconds without any client frame before the connection is closed.
    pub idle_timeout_secs: u64,
    /// Open connections per user (on this node).
    pub connections_per_user: usize,
    /// Seconds allowed for a request head (slowloris).
    pub header_timeout_secs: u64,
    /// Seconds a socket write may make no progress before the connection is dropped (a client
    /// that stopped reading).
    pub write_timeout_secs: u64,
    /// Rooms one user may be a member of (creating or joining past it: 400 `too_large`).
    pub rooms_per_user: usize,
    /// Members listed when a room is created, at most.
    pub room_create_members: usize,
    /// Rooms one user may create per minute (429 `rate_limited` past it).
    pub rooms_created_per_minute: u32,
    /// Distinct emoji on one message (`too_large` past it). Read at start-up.
    pub reactions_per_message: usize,
    /// Where the `unread` and `mentions` counts of one room stop.
    pub unread_cap: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            frame_max_bytes: 65_536,
            content_max_chars: 4096,
            messages_per_sec: 20,
            messages_burst: 40,
            typing_per_sec: 1,
            outbound_queue_frames: 1024,
            ping_secs: 30,
            idle_timeout_secs: 75,
            connections_per_user: 50,
            header_timeout_secs: 10,
            write_timeout_secs: 10,
            rooms_per_user: 1000,
            room_create_members: 1000,
            rooms_created_per_minute: 30,
            reactions_per_message: 50,
            unread_cap: 1000,
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Deadline for a write to commit before the sender gets `unavailable`, ms.
    pub write_timeout_ms: u64,
    /// Most rows in one group commit.
    pub batch_max: usize,
    /// Group-commit writer tasks, each with its own PostgreSQL connection; rooms are split
    /// between them.
    pub writers: usize,
    /// Writes waiting for the writer before new ones get `unavailable` at once.
    pub queue_max: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { write_timeout_ms: 5000, batch_max: 1000, writers: 2, queue_max: 20_000 }
    }
}

/// `[sync]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Most messages replayed per room per `sync`.
    pub max_replay: i64,
    /// A connection opened with `resume=1` holds live room messages this long (or until its
    /// first `sync` is answered) so its replay arrives before newer live messages; 0 = off.
    pub initial_hold_ms: u64,
    /// Most rooms one `sync` may name.
    pub max_rooms: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self { max_replay: 1000, initial_hold_ms: 1000, max_rooms: 500 }
    }
}

/// `[search]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Milliseconds the indexer waits after a commit before indexing, to gather more rooms
    /// and messages into one round (how stale search is on an idle server, at most).
    pub index_delay_ms: u64,
    /// Most events of one room indexed per round.
    pub index_batch: i64,
    /// Seconds between sweeps for rooms behind that this node did not write (other nodes'
    /// rooms if one of them died, an upgraded database's history).
    pub sweep_secs: u64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self { index_delay_ms: 100, index_batch: 2000, sweep_secs: 60 }
    }
}

/// `[presence]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Rooms with more members get no `presence` events.
    pub max_room_members: i64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { max_room_members: 200 }
    }
}

/// `[notify]`
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Run notification workers inside `serve`.
    pub in_process: bool,
    /// Deliveries tried before a job is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, ms.
    pub backoff_base_ms: u64,
    /// Webhook sink URL (`LIVECHAT_NOTIFY_WEBHOOK_URL`).
    pub webhook_url: Option<String>,
    /// Webhook HMAC key (`LIVECHAT_NOTIFY_WEBHOOK_SECRET`).
    pub webhook_secret: Option<String>,
    /// SMTP relay (`LIVECHAT_SMTP_URL`).
    pub smtp_url: Option<String>,
    /// Log jobs instead of delivering them (development); counts as a sink.
    pub log_sink: bool,
    /// Jobs waiting (queued, in flight or scheduled for retry) above which the relay stops
    /// enqueueing; the PostgreSQL outbox holds the overflow (backpressure, not loss).
    pub queue_max: usize,
    /// Deadline of one webhook call, ms; slower counts as a failed attempt.
    pub webhook_timeout_ms: u64,
    /// Deadline of one SMTP delivery (connect to final reply), ms.
    pub smtp_timeout_ms: u64,
    /// `From:` address of notification e-mails.
    pub smtp_from: String,
    /// A job handed to a worker and not acknowledged for this long is taken over by another
    /// worker (its consumer is presumed dead), ms. Must exceed both delivery timeouts.
    pub claim_idle_ms: u64,
    /// Deliveries in flight at once per process.
    pub worker_concurrency: usize,
    /// Prefix of the Redis keys (`<prefix>:jobs`, `<prefix>:retry`, `<prefix>:dead`); every
    /// node of a cluster must use the same one.
    pub key_prefix: String,
}

impl NotifyConfig {
    /// Whether any sink is configured: only then are notification jobs created.
    pub fn enabled(&self) -> bool {
        self.webhook_url.is_some() || self.smtp_url.is_some() || self.log_sink
    }

    /// Rejects notification settings that would lose or duplicate jobs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self;
        // Only the sinks in use bound how long a live delivery can take.
        let webhook = if n.webhook_url.is_some() { n.webhook_timeout_ms } else { 0 };
        let smtp = if n.smtp_url.is_some() { n.smtp_timeout_ms } else { 0 };
        let slowest = webhook.max(smtp);
        let checks: [(bool, &str); 7] = [
            (n.max_attempts >= 1, "notify.max_attempts must be at least 1"),
            (n.backoff_base_ms >= 1, "notify.backoff_base_ms must be at least 1"),
            (n.queue_max >= 1, "notify.queue_max must be at least 1"),
            (n.worker_concurrency >= 1, "notify.worker_concurrency must be at least 1"),
            (n.webhook_timeout_ms >= 1 && n.smtp_timeout_ms >= 1, "notify.*_timeout_ms must be at least 1"),
            (!n.key_prefix.is_empty(), "notify.key_prefix must not be empty"),
            // A live but slow delivery must never look abandoned, or it would be delivered twice.
            (n.claim_idle_ms > slowest, "notify.claim_idle_ms must exceed the timeout of every configured sink (notify.webhook_timeout_ms, notify.smtp_timeout_ms)"),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err(ConfigError::Invalid((*msg).to_string())),
            None => Ok(()),
        }
    }
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            in_process: true,
            max_attempts: 8,
            backoff_base_ms: 500,
            webhook_url: None,
            webhook_secret: None,
            smtp_url: None,
            log_sink: false,
            queue_max: 100_000,
            webhook_timeout_ms: 5000,
            smtp_timeout_ms: 10_000,
            smtp_from: "livechat@localhost".into(),
            claim_idle_ms: 60_000,
            worker_concurrency: 16,
            key_prefix: "livechat:notify".into(),
        }
    }
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("in_process", &self.in_process)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base_ms", &self.backoff_base_ms)
            .field("webhook_url", &self.webhook_url)
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| "<redacted>"))
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .field("log_sink", &self.log_sink)
            .field("queue_max", &self.queue_max)
            .field("webhook_timeout_ms", &self.webhook_timeout_ms)
            .field("smtp_timeout_ms", &self.smtp_timeout_ms)
            .field("smtp_from", &self.smtp_from)
            .field("claim_idle_ms", &self.claim_idle_ms)
            .field("worker_concurrency", &self.worker_concurrency)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// `[node]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Node name (`LIVECHAT_NODE_ID`); default hostname + pid.
    pub id: Option<String>,
}

/// `[cluster]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Prefix of the bus channels (`<prefix>:room:<id>`) and presence keys
    /// (`<prefix>:presence:…`) in Redis; every node of a cluster must use the same one. Empty =
    /// `livechat:<cluster id>`, the random id stored in the database, so clusters on different
    /// databases that share a Redis never see each other's rooms.
    pub key_prefix: String,
    /// How often a node renews its entry in the cluster's node list, ms.
    pub heartbeat_ms: u64,
    /// A node whose entry has not been renewed for this long counts as dead: its users are
    /// offline unless connected elsewhere, ms.
    pub node_ttl_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { key_prefix: String::new(), heartbeat_ms: 2000, node_ttl_ms: 10_000 }
    }
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter (`LIVECHAT_LOG`).
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: "text".into() }
    }
}

/// Hides the password of a URL for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Accepts a TOML list or a comma-separated string (how lists arrive from the environment).
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        Str(String),
    }
    Ok(match ListOrString::deserialize(d)? {
        ListOrString::List(v) => v,
        ListOrString::Str(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
    })
}
