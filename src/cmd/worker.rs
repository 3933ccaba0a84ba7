//! `livechat worker`: notification workers only (no HTTP API), sharing the Redis job queue with
//! the relays of `serve`, until SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::systemd;
use crate::config::Config;
use crate::http::metrics::serve_worker_metrics;
use crate::notify::sinks::Sinks;
use crate::notify::worker::Worker;
use crate::notify::{self};
use crate::redis_link::RedisLink;
use crate::store::Store;
use crate::telemetry;

/// Why `livechat worker` cannot start.
#[derive(Debug, Error)]
pub enum WorkerStartError {
    /// A required setting is missing or a sink cannot be set up.
    #[error("{0}")]
    Config(String),
}

/// `livechat worker`: workers only, until SIGTERM/SIGINT.
pub async fn run_worker(config: Config) -> Result<(), WorkerStartError> {
    let Some(redis_url) = config.redis.url.as_deref() else {
        return Err(WorkerStartError::Config(
            "livechat worker needs REDIS_URL (the shared job queue); without Redis, jobs live in the \
             serve process's memory and its in-process workers deliver them"
                .into(),
        ));
    };
    let db_url = config.database.url.as_deref().ok_or_else(|| {
        WorkerStartError::Config("DATABASE_URL is not set (needed for users' e-mail addresses)".into())
    })?;
    let link = Arc::new(
        RedisLink::with_ca_file(redis_url, config.redis.ca_file.as_deref())
            .map_err(|e| WorkerStartError::Config(e.to_string()))?,
    );
    let timeout = Duration::from_millis(config.database.connect_timeout_ms);
    let store = Store::with_ca_file(db_url, 4, timeout, config.database.ca_file.as_deref())
        .map_err(|e| WorkerStartError::Config(e.to_string()))?;
    let n = &config.notify;
    if !n.enabled() {
        tracing::warn!(
            "No sink is configured (notify.webhook_url, notify.smtp_url, notify.log_sink): every job will fail."
        );
    }
    let sinks = Arc::new(Sinks::new(n, Some(store)).map_err(|e| WorkerStartError::Config(e.to_string()))?);
    let metrics_listener = match config.metrics_addr().map_err(|e| WorkerStartError::Config(e.to_string()))? {
        Some(addr) => Some((
            addr,
            tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                WorkerStartError::Config(format!("cannot listen on {addr} (server.metrics_listen): {e}"))
            })?,
        )),
        None => None,
    };
    let queue = notify::queue(&config, Some(link));
    let consumer = notify::consumer_name(&config);
    if let Some((addr, listener)) = metrics_listener {
        match telemetry::install() {
            Some(handle) => {
                tracing::info!(%addr, "Serving /metrics.");
                tokio::spawn(serve_worker_metrics(listener, handle));
            }
            None => tracing::warn!("A metrics recorder is already installed; /metrics not served."),
        }
    }
    let w = Worker::new(queue, sinks, consumer.clone(), n.worker_concurrency, notify::claim_idle(n));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(w.run(cancel.clone()));
    // The one stdout line tests and scripts wait for.
    println!("worker {consumer} running");
    tracing::info!(%consumer, "Notification worker running.");
    // systemd (livechat-worker.service, Type=notify): up, then watchdog pings until exit.
    systemd::ready();
    systemd::spawn_watchdog(CancellationToken::new());
    super::wait_for_signal().await;
    systemd::stopping();
    tracing::info!("Stopping the worker; unfinished jobs stay in Redis.");
    cancel.cancel();
    let _ = task.await;
    Ok(())
}
