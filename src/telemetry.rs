//! Logging (tracing) and metrics (Prometheus exposition): names, help texts, buckets.
//!
//! Metric names follow `livechat_<subsystem>_<name>_<unit>`; counters end in `_total`; label
//! values are bounded (never a user or room id).

use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::app::App;

/// Installs the global tracing subscriber (stderr; human or JSON lines).
pub fn init_tracing(filter: &str, format: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("log filter {filter:?} is invalid: {e}"))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = if format == "json" { builder.json().try_init() } else { builder.try_init() };
    // Already installed (tests call this more than once): keep the first.
    let _ = result;
    Ok(())
}

/// Installs the Prometheus recorder and describes every metric; `None` if one is installed.
pub fn install_metrics() -> Option<PrometheusHandle> {
    let latency = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
    let rows = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rows".into()), &rows))
        .ok()?
        .install_recorder()
        .ok()?;
    describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Some(handle)
}

fn describe() {
    describe_gauge!("livechat_ws_connections", "Open WebSocket connections.");
    describe_counter!("livechat_ws_upgrades_refused_total", "WebSocket upgrades refused, by reason.");
    describe_counter!("livechat_ws_events_in_total", "Client events received, by type.");
    describe_counter!("livechat_ws_errors_total", "Error events sent to clients, by code.");
    describe_counter!("livechat_ws_deliveries_total", "Frames written to client sockets.");
    describe_counter!("livechat_ws_slow_consumer_closes_total", "Connections closed 1013 for a full outbound queue.");
    describe_counter!("livechat_ws_protocol_closes_total", "Connections closed for a protocol violation or limit.");
    describe_counter!("livechat_ws_sync_replays_total", "sync requests served.");
    describe_counter!("livechat_ws_sync_replayed_messages_total", "Messages replayed by sync.");
    describe_counter!("livechat_bus_fanout_total", "Frames queued to subscriber outboxes.");
    describe_counter!("livechat_bus_gap_fills_total", "Room sequence gaps filled from PostgreSQL.");
    describe_histogram!("livechat_storage_commit_seconds", Unit::Seconds, "Group-commit transaction latency.");
    describe_histogram!("livechat_storage_batch_rows", "Writes per group commit.");
    describe_counter!("livechat_storage_messages_committed_total", "Messages committed.");
    describe_counter!("livechat_storage_batch_retries_total", "Batches retried after a failure before COMMIT.");
    describe_counter!("livechat_storage_unavailable_total", "Writes answered with `unavailable`.");
    describe_gauge!("livechat_storage_queue_depth", "Writes waiting for the group-commit writer.");
    describe_gauge!("livechat_postgres_up", "1 when PostgreSQL answered the last readiness probe.");
    describe_gauge!("livechat_redis_up", "1 when Redis answered the last readiness probe.");
    describe_counter!("livechat_http_accept_errors_total", "Failed accept() calls.");
    describe_gauge!("livechat_process_resident_memory_bytes", "Resident set size.");
    describe_gauge!("livechat_process_open_fds", "Open file descriptors.");
}

/// Samples gauges that are cheaper to read at scrape time than to maintain.
pub fn refresh_process_metrics(app: &App) {
    metrics::gauge!("livechat_storage_queue_depth").set(app.writer.depth() as f64);
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
        if let Some(kb) = kb {
            metrics::gauge!("livechat_process_resident_memory_bytes").set(kb * 1024.0);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("livechat_process_open_fds").set(dir.count() as f64);
    }
}
