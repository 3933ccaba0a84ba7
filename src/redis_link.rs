//! The shared Redis connection: made lazily and re-made after failures, so livechat starts and
//! keeps serving while Redis is away (degraded: node-local delivery, in-memory jobs) and heals
//! by itself when it returns.

use std::time::Duration;

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
    /// Parses the URL without connecting.
    pub fn new(url: &str) -> Result<Self, RedisDown> {
        let client = redis::Client::open(url).map_err(|e| RedisDown(format!("REDIS_URL is invalid: {e}")))?;
        Ok(Self { client, conn: Mutex::new(None) })
    }

    /// A multiplexed connection (cheap to clone), connecting first if needed.
    pub async fn conn(&self) -> Result<ConnectionManager, RedisDown> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let c =
            tokio::time::timeout(Duration::from_secs(3), ConnectionManager::new_with_config(self.client.clone(), cfg))
                .await
                .map_err(|_| RedisDown("connect timed out".into()))?
                .map_err(|e| RedisDown(e.to_string()))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// True when Redis answers PING within a second.
    pub async fn ping(&self) -> bool {
        let probe = async {
            let mut c = self.conn().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut c).await.ok()
        };
        let up = matches!(tokio::time::timeout(Duration::from_secs(1), probe).await, Ok(Some(_)));
        metrics::gauge!("livechat_redis_up").set(if up { 1.0 } else { 0.0 });
        up
    }
}
