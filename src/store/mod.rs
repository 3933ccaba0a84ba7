//! PostgreSQL: the connection pool ([`Store`]), migrations, the queries of each table group
//! ([`users`], [`rooms`], [`messages`]), batched look-ups ([`batch_loader`]), and the group-commit
//! writer. Storage builds no frames and knows no connections: it reports committed rows
//! through [`group_commit::CommitSink`].

pub mod batch_loader;
pub mod group_commit;
pub mod messages;
pub mod migrate;
pub mod rooms;
pub mod search;
pub mod search_index;
pub mod tls;
pub mod users;

pub use messages::{HistoryMessage, Sender};
pub use rooms::{Member, MyRoom, Room};

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use bb8_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::StoreError;

/// A pooled PostgreSQL handle. Cheap to clone. One connector type for every `sslmode`: with
/// `disable` (or none) tokio-postgres never calls it, so the connection is plain TCP.
pub type Pool = bb8::Pool<Manager>;

/// bb8's PostgreSQL manager with a free checkout check.
///
/// `PostgresConnectionManager::is_valid` runs a query: one extra round trip on every checkout
/// (it halved upgrade and REST throughput). Without any check, bb8 hands out connections that
/// PostgreSQL closed when it restarted (it calls `has_broken` only on return). Asking the client
/// whether its socket is closed costs nothing and catches exactly that case.
pub struct Manager(PostgresConnectionManager<MakeRustlsConnect>);

impl bb8::ManageConnection for Manager {
    type Connection = tokio_postgres::Client;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        self.0.connect().await
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        if conn.is_closed() {
            // The cheapest way to produce the manager's error type for a dead connection.
            conn.simple_query("").await.map(|_| ())
        } else {
            Ok(())
        }
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        self.0.has_broken(conn)
    }
}

/// Read side and admin writes of the store; message and receipt writes go through the batcher.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

/// Longest a single statement may run on a livechat connection.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(15);
/// A silently unreachable server (packets unanswered, no RST) is noticed within about this.
const DEAD_PEER: Duration = Duration::from_secs(10);

/// Settings that make a vanished PostgreSQL visible: TCP keepalives and a TCP user timeout (a
/// write unacknowledged this long fails the socket), and a statement timeout for reads (the URL's
/// own `options` are kept). Without them a SIGSTOPped or partitioned server holds a connection
/// (and whoever waits on it) for the kernel's 15-minute retransmission limit.
fn harden(cfg: &mut tokio_postgres::Config) {
    cfg.keepalives(true)
        .keepalives_idle(DEAD_PEER / 2)
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(DEAD_PEER);
    let timeout = format!("-c statement_timeout={}", STATEMENT_TIMEOUT.as_millis());
    let options = match cfg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} {timeout}"),
        _ => timeout,
    };
    cfg.options(&options);
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
        Self::with_ca_file(url, size, connect_timeout, None)
    }

    /// [`Store::new`] with `database.ca_file` for TLS (`sslmode` in the URL, see [`tls`]).
    pub fn with_ca_file(
        url: &str,
        size: u32,
        connect_timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<Self, StoreError> {
        let tls::PgTarget { config: mut cfg, tls, .. } = tls::target(url, ca_file)?;
        cfg.connect_timeout(connect_timeout);
        cfg.application_name("livechat");
        harden(&mut cfg);
        let manager = Manager(PostgresConnectionManager::new(cfg, tls));
        let pool = bb8::Pool::builder()
            .max_size(size.max(2))
            .min_idle(Some(1))
            .connection_timeout(connect_timeout)
            // Free check (see `Manager`): connections closed by a PostgreSQL restart are
            // replaced instead of failing the next request.
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
    pub async fn conn(&self) -> Result<bb8::PooledConnection<'_, Manager>, StoreError> {
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
