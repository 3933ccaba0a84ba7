//! Configuration: `config/livechat.toml` keys with serde defaults, overridden by
//! `LIVECHAT_<SECTION>__<KEY>` environment variables and the fixed short variables (README, "Configuration").
//!
//! Precedence, lowest first: built-in defaults → TOML file (`--config`) → short variables
//! (`DATABASE_URL`, `LIVECHAT_LISTEN`, ...) → `LIVECHAT_<SECTION>__<KEY>`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

mod sections;

pub use sections::*;

/// The whole configuration tree. Every section defaults, so an empty file is valid.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener, origins, drain.
    pub server: ServerConfig,
    /// Client and admin authentication.
    pub auth: AuthConfig,
    /// PostgreSQL connection.
    pub database: DatabaseConfig,
    /// Redis connection (cluster bus, durable jobs).
    pub redis: RedisConfig,
    /// Per-connection and per-user limits (README, "Limits").
    pub limits: LimitsConfig,
    /// The group-commit writer.
    pub storage: StorageConfig,
    /// Replay after reconnect.
    pub sync: SyncConfig,
    /// Online state fan-out.
    pub presence: PresenceConfig,
    /// The search indexer.
    pub search: SearchConfig,
    /// Notification jobs and sinks.
    pub notify: NotifyConfig,
    /// This node's identity in a cluster.
    pub node: NodeConfig,
    /// Several nodes on one PostgreSQL and one Redis (the bus bridge, cluster presence).
    pub cluster: ClusterConfig,
    /// Logging.
    pub log: LogConfig,
    /// The file this was loaded from (`--config`), re-read on SIGHUP; not a key.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// The short variables and the key each one sets.
const SHORT_VARS: &[(&str, &str)] = &[
    ("DATABASE_URL", "database.url"),
    ("REDIS_URL", "redis.url"),
    ("LIVECHAT_LISTEN", "server.listen"),
    ("LIVECHAT_JWT_SECRET", "auth.jwt_secret"),
    ("LIVECHAT_ADMIN_TOKEN", "auth.admin_token"),
    ("LIVECHAT_NOTIFY_WEBHOOK_URL", "notify.webhook_url"),
    ("LIVECHAT_NOTIFY_WEBHOOK_SECRET", "notify.webhook_secret"),
    ("LIVECHAT_SMTP_URL", "notify.smtp_url"),
    ("LIVECHAT_NODE_ID", "node.id"),
    ("LIVECHAT_ALLOWED_ORIGINS", "server.allowed_origins"),
    ("LIVECHAT_LOG", "log.level"),
];

impl Config {
    /// Loads defaults, the optional TOML file and the environment, then validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!("config file {} does not exist", path.display())));
            }
            fig = fig.merge(Toml::file(path));
        }
        // Heroku-style `PORT`: listen on every interface at that port unless LIVECHAT_LISTEN says otherwise.
        if let Ok(port) = std::env::var("PORT") {
            if std::env::var_os("LIVECHAT_LISTEN").is_none() {
                fig = fig.merge(Serialized::default("server.listen", format!("0.0.0.0:{port}")));
            }
        }
        for (var, key) in SHORT_VARS {
            if let Ok(value) = std::env::var(var) {
                // Taken as plain strings: a numeric-looking secret must stay a string.
                fig = fig.merge(Serialized::default(key, value));
            }
        }
        fig = fig.merge(Env::prefixed("LIVECHAT_").filter(|k| k.as_str().contains("__")).split("__"));
        let mut config: Config = fig.extract().map_err(|e| ConfigError::Invalid(one_line(&e)))?;
        config.validate()?;
        config.source = path.map(Path::to_path_buf);
        Ok(config)
    }

    /// Rejects values that would make the server misbehave rather than fail loudly.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let checks: [(bool, &str); 13] = [
            (l.frame_max_bytes >= 128, "limits.frame_max_bytes must be at least 128"),
            (l.content_max_chars >= 1, "limits.content_max_chars must be at least 1"),
            (l.messages_per_sec >= 1, "limits.messages_per_sec must be at least 1"),
            (l.messages_burst >= 1, "limits.messages_burst must be at least 1"),
            (l.typing_per_sec >= 1, "limits.typing_per_sec must be at least 1"),
            (l.outbound_queue_frames >= 1, "limits.outbound_queue_frames must be at least 1"),
            (l.ping_secs >= 1, "limits.ping_secs must be at least 1"),
            (l.idle_timeout_secs >= 1, "limits.idle_timeout_secs must be at least 1"),
            (l.connections_per_user >= 1, "limits.connections_per_user must be at least 1"),
            (self.storage.batch_max >= 1, "storage.batch_max must be at least 1"),
            ((1..=16).contains(&self.storage.writers), "storage.writers must be between 1 and 16"),
            (self.sync.max_replay >= 1, "sync.max_replay must be at least 1"),
            (self.log.format == "text" || self.log.format == "json", "log.format must be \"text\" or \"json\""),
        ];
        if let Some((_, msg)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(ConfigError::Invalid((*msg).to_string()));
        }
        if self.server.accept_grace_secs > 0 && self.server.accept_grace_secs >= self.server.drain_secs {
            return Err(ConfigError::Invalid(
                "server.accept_grace_secs must be less than server.drain_secs (the grace is part of the drain)".into(),
            ));
        }
        if l.header_timeout_secs == 0 {
            return Err(ConfigError::Invalid("limits.header_timeout_secs must be at least 1".into()));
        }
        if l.write_timeout_secs == 0 {
            return Err(ConfigError::Invalid("limits.write_timeout_secs must be at least 1".into()));
        }
        self.notify.validate()?;
        let c = &self.cluster;
        if c.heartbeat_ms == 0 || c.node_ttl_ms < 2 * c.heartbeat_ms {
            return Err(ConfigError::Invalid(
                "cluster.node_ttl_ms must be at least twice cluster.heartbeat_ms (and the heartbeat at least 1)".into(),
            ));
        }
        self.listen_addr()?;
        Ok(())
    }

    /// The parsed listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_addr("server.listen", &self.server.listen)
    }

    /// The parsed metrics-only address, if configured.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        self.server.metrics_listen.as_deref().map(|a| parse_addr("server.metrics_listen", a)).transpose()
    }

    /// `storage.write_timeout_ms` as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.storage.write_timeout_ms)
    }

    /// This node's name.
    pub fn node_id(&self) -> String {
        self.node.id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "livechat".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| ConfigError::Invalid(format!("{key} = {value:?} is not a host:port address")))
}

/// Figment errors can span lines; the CLI promises one.
fn one_line(e: &figment::Error) -> String {
    e.to_string().replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password() {
        assert_eq!(redact_url("postgres://u:secret@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn defaults_validate() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn claim_idle_must_exceed_the_configured_sinks_timeouts() {
        let mut c = Config::default();
        c.notify.claim_idle_ms = 1500;
        // Unused sinks do not count.
        assert!(c.validate().is_ok());
        c.notify.smtp_url = Some("smtp://127.0.0.1:25".into());
        assert!(c.validate().is_err(), "smtp_timeout_ms 10000 > claim_idle_ms 1500");
        c.notify.smtp_timeout_ms = 1000;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_limit_rejected() {
        let mut c = Config::default();
        c.limits.messages_per_sec = 0;
        assert!(c.validate().is_err());
    }
}
