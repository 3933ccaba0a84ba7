//! PostgreSQL: the connection pool, migrations, read queries, and the group-commit writer.

pub mod batcher;
pub mod migrate;
pub mod queries;

use std::str::FromStr;
use std::time::Duration;

use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::NoTls;

use crate::error::StoreError;

/// A pooled PostgreSQL handle. Cheap to clone.
pub type Pool = bb8::Pool<PostgresConnectionManager<NoTls>>;

/// Read side and admin writes of the store; message and receipt writes go through the batcher.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

/// Parses a `DATABASE_URL`, with a one-line error that never echoes the password.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    tokio_postgres::Config::from_str(url)
        .map_err(|e| StoreError::Db(format!("DATABASE_URL is not a valid PostgreSQL URL: {e}")))
}

impl Store {
    /// Builds the pool without connecting; connections open on demand and are replaced after
    /// PostgreSQL restarts, so the server recovers by itself.
    pub fn new(url: &str, size: u32, connect_timeout: Duration) -> Result<Self, StoreError> {
        let mut cfg = parse_url(url)?;
        cfg.connect_timeout(connect_timeout);
        cfg.application_name("livechat");
        let manager = PostgresConnectionManager::new(cfg, NoTls);
        let pool = bb8::Pool::builder()
            .max_size(size.max(2))
            .min_idle(Some(1))
            .connection_timeout(connect_timeout)
            // A dead connection (PostgreSQL restarted) is detected by a cheap query before use.
            .test_on_check_out(true)
            .retry_connection(false)
            .build_unchecked(manager);
        Ok(Self { pool })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A pooled connection, or `Unavailable`.
    pub async fn conn(&self) -> Result<bb8::PooledConnection<'_, PostgresConnectionManager<NoTls>>, StoreError> {
        self.pool.get().await.map_err(StoreError::from)
    }

    /// True when PostgreSQL answers a trivial query.
    pub async fn ping(&self) -> bool {
        let probe = async {
            let c = self.conn().await?;
            c.simple_query("SELECT 1").await.map_err(StoreError::from)
        };
        matches!(tokio::time::timeout(Duration::from_secs(2), probe).await, Ok(Ok(_)))
    }
}
