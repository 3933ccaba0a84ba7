//! Schema migrations from `migrations/`, embedded at build time and tracked by refinery in
//! `refinery_schema_history`. An advisory lock serialises nodes starting at once.

use std::path::Path;

use crate::error::StoreError;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Arbitrary constant key for `pg_advisory_lock`: "livechat" in ASCII.
const LOCK_KEY: i64 = 0x6c69_7665_6368_6174;

/// Applies pending migrations; returns how many were applied.
pub async fn run(url: &str) -> Result<usize, StoreError> {
    run_with_ca_file(url, None).await
}

/// [`run`] with `database.ca_file` for TLS (`sslmode` in the URL, see [`super::tls`]).
pub async fn run_with_ca_file(url: &str, ca_file: Option<&Path>) -> Result<usize, StoreError> {
    run_to(url, ca_file, None).await
}

/// [`run_with_ca_file`] up to migration `target` only (all when `None`): a staged upgrade, or
/// a database at an older release's schema for upgrade tests.
pub async fn run_to(url: &str, ca_file: Option<&Path>, target: Option<u32>) -> Result<usize, StoreError> {
    let super::tls::PgTarget { config: mut cfg, tls, .. } = super::tls::target(url, ca_file)?;
    // Bounded: an unreachable host or a stalled TLS handshake must fail start-up, not hang it.
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(std::time::Duration::from_secs(10));
    }
    let (mut client, conn) = cfg.connect(tls).await.map_err(StoreError::from)?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "Migration connection closed.");
        }
    });
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY]).await?;
    let mut runner = embedded::migrations::runner();
    if let Some(v) = target {
        runner = runner.set_target(refinery::Target::Version(v));
    }
    let report = runner.run_async(&mut client).await.map_err(|e| StoreError::Db(format!("migration failed: {e}")));
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await;
    drop(client);
    let _ = driver.await;
    Ok(report?.applied_migrations().len())
}
