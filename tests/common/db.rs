//! The shared test PostgreSQL: a fresh database per test, direct connections for assertions.

use std::time::Duration;

use tokio::time::timeout;

use super::{bounded, random_hex};

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:55433/postgres";

/// The superuser URL of the shared test cluster.
pub fn pg_admin_url() -> String {
    std::env::var("LIVECHAT_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

/// Replace the database name (the path) of a postgres URL.
pub fn with_db_name(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    // scheme://authority/path
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[after_scheme..].find('/').map(|i| i + after_scheme);
    let mut out = match path_start {
        Some(i) => format!("{}/{}", &base[..i], db),
        None => format!("{}/{}", base, db),
    };
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A freshly created database, dropped (best effort, `WITH (FORCE)`) on Drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// Creates `lc_<random>` on the shared test cluster.
    pub async fn create() -> TestDb {
        Self::create_on(&pg_admin_url()).await
    }

    /// Creates `lc_<random>` on the cluster reachable with the superuser URL `admin_url`.
    pub async fn create_on(admin_url: &str) -> TestDb {
        let name = format!("lc_{}", random_hex(8));
        let client = pg_connect(admin_url).await;
        bounded("CREATE DATABASE", client.batch_execute(&format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin_url}: {e}"));
        TestDb { url: with_db_name(admin_url, &name), name, admin_url: admin_url.to_string() }
    }

    /// A direct connection to this database (for assertions on stored rows).
    pub async fn client(&self) -> tokio_postgres::Client {
        pg_connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Drop may run inside a tokio runtime: do the async work on a private thread/runtime.
        let _ = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(_) => return,
            };
            rt.block_on(async move {
                let _ = timeout(Duration::from_secs(10), async {
                    if let Ok((client, conn)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
                        tokio::spawn(conn);
                        let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                    }
                })
                .await;
            });
        })
        .join();
    }
}

/// Connect with tokio-postgres (NoTls), driving the connection on a spawned task.
pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = bounded("postgres connect", tokio_postgres::connect(url, tokio_postgres::NoTls))
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e} (is the test PostgreSQL running? see scripts/services.sh)"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// `SELECT seq FROM messages WHERE room_id=$1 ORDER BY seq`.
pub async fn db_room_seqs(client: &tokio_postgres::Client, room_id: i64) -> Vec<i64> {
    let rows = bounded(
        "select seqs",
        client.query("SELECT seq::bigint FROM messages WHERE room_id = $1::bigint ORDER BY seq", &[&room_id]),
    )
    .await
    .expect("select seqs");
    rows.iter().map(|r| r.get::<_, i64>(0)).collect()
}

/// `room_id`'s stored log (SPEC §10), ordered by seq: `(seq, kind)` for every message (kind
/// `"message"`) and every `room_events` row (its `kind`: `"member"`, `"edit"`, `"delete"`,
/// `"reaction"`). Both tables are read in one statement (`UNION ALL`), so a seq stored in both
/// shows up twice.
pub async fn db_room_log(client: &tokio_postgres::Client, room_id: i64) -> Vec<(i64, String)> {
    let rows = bounded(
        "select room log",
        client.query(
            "SELECT seq::bigint, 'message'::text FROM messages WHERE room_id = $1::bigint \
             UNION ALL SELECT seq::bigint, kind::text FROM room_events WHERE room_id = $1::bigint \
             ORDER BY 1",
            &[&room_id],
        ),
    )
    .await
    .expect("select room log");
    rows.iter().map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1))).collect()
}

/// Asserts `room_id`'s stored log ([`db_room_log`]: messages and `room_events` together) holds
/// every seq 1..=n exactly once — no gap, no repeat — and returns it.
pub async fn assert_db_room_log_gapless(client: &tokio_postgres::Client, room_id: i64) -> Vec<(i64, String)> {
    let log = db_room_log(client, room_id).await;
    let seqs: Vec<i64> = log.iter().map(|e| e.0).collect();
    assert_eq!(seqs, (1..=log.len() as i64).collect::<Vec<_>>(), "room {room_id}: stored log is gapless 1..n: {log:?}");
    log
}
