//! The shared Redis connection: made lazily and re-made after failures, so livechat starts and
//! keeps serving while Redis is away (degraded: node-local delivery, in-memory jobs) and heals
//! by itself when it returns.

use std::time::Duration;

use crate::telemetry::names;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

/// A lazily connected, self-healing Redis handle.
pub struct RedisLink {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
}

/// Redis could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("redis unavailable: {0}")]
pub struct RedisDown(pub String);

impl RedisLink {
    /// Parses the URL without connecting. `rediss://` means TLS with the system trust store
    /// (`rediss://…/#insecure` skips certificate checks, as Heroku Redis needs).
    pub fn new(url: &str) -> Result<Self, RedisDown> {
        Self::with_ca_file(url, None)
    }

    /// [`RedisLink::new`] trusting the CA certificate(s) in `ca_file` (`redis.ca_file`, PEM)
    /// for a `rediss://` URL instead of the system store.
    pub fn with_ca_file(url: &str, ca_file: Option<&std::path::Path>) -> Result<Self, RedisDown> {
        let invalid = |e: redis::RedisError| RedisDown(format!("REDIS_URL is invalid: {e}"));
        let client = match ca_file {
            None => redis::Client::open(url).map_err(invalid)?,
            Some(path) => {
                if !url.starts_with("rediss://") {
                    return Err(RedisDown("redis.ca_file is set but REDIS_URL is not rediss:// (TLS)".into()));
                }
                let pem = std::fs::read(path)
                    .map_err(|e| RedisDown(format!("cannot read redis.ca_file {}: {e}", path.display())))?;
                let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
                redis::Client::build_with_tls(url, certs).map_err(invalid)?
            }
        };
        Ok(Self { client, conn: Mutex::new(None) })
    }

    /// A multiplexed connection (cheap to clone), connecting first if needed.
    pub async fn conn(&self) -> Result<ConnectionManager, RedisDown> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.connect().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// A connection of its own, for blocking commands (`XREADGROUP ... BLOCK`): on the shared
    /// multiplexed connection they would hold up every command queued behind them. Callers
    /// keep it; it reconnects by itself like the shared one.
    pub async fn dedicated(&self) -> Result<ConnectionManager, RedisDown> {
        self.connect().await
    }

    /// A pub/sub connection of its own (the cluster bus bridge); not re-made by itself: the
    /// bridge reconnects and re-subscribes when its stream ends.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, RedisDown> {
        tokio::time::timeout(Duration::from_secs(3), self.client.get_async_pubsub())
            .await
            .map_err(|_| RedisDown("connect timed out".into()))?
            .map_err(|e| RedisDown(e.to_string()))
    }

    async fn connect(&self) -> Result<ConnectionManager, RedisDown> {
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        tokio::time::timeout(Duration::from_secs(3), ConnectionManager::new_with_config(self.client.clone(), cfg))
            .await
            .map_err(|_| RedisDown("connect timed out".into()))?
            .map_err(|e| RedisDown(e.to_string()))
    }

    /// True when Redis answers PING within a second.
    pub async fn ping(&self) -> bool {
        let probe = async {
            let mut c = self.conn().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut c).await.ok()
        };
        let up = matches!(tokio::time::timeout(Duration::from_secs(1), probe).await, Ok(Some(_)));
        metrics::gauge!(names::REDIS_UP).set(if up { 1.0 } else { 0.0 });
        up
    }
}
