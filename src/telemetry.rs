//! Logging (tracing) and metrics (Prometheus exposition): names, help texts, buckets.
//!
//! Metric names follow `livechat_<subsystem>_<name>_<unit>`; counters end in `_total`; label
//! values are bounded (never a user or room id).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::app::App;

/// Swaps the log filter of the installed subscriber (SIGHUP); set once by [`init_tracing`].
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

fn parse_filter(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(filter).map_err(|e| format!("log filter {filter:?} is invalid: {e}"))
}

/// Installs the global tracing subscriber (stderr; human or JSON lines). The filter sits behind
/// a reload layer so SIGHUP can change it without a restart ([`reload_filter`]).
pub fn init_tracing(filter: &str, format: &str) -> Result<(), String> {
    use std::io::IsTerminal;
    let (filter, handle) = reload::Layer::new(parse_filter(filter)?);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let fmt = if format == "json" { fmt.json().boxed() } else { fmt.boxed() };
    // Already installed (tests call this more than once): keep the first.
    if tracing_subscriber::registry().with(filter).with(fmt).try_init().is_ok() {
        let _ = FILTER.set(handle);
    }
    Ok(())
}

/// Replaces the log filter (`log.level` / `LIVECHAT_LOG` syntax) of the running subscriber.
pub fn reload_filter(filter: &str) -> Result<(), String> {
    let new = parse_filter(filter)?;
    match FILTER.get() {
        Some(handle) => handle.reload(new).map_err(|e| format!("cannot swap the log filter: {e}")),
        None => Err("no reloadable log subscriber is installed".into()),
    }
}

/// Metric handles used on hot paths, registered once: a handle is an `Arc` to the atomic, so
/// an update skips the macro's key hashing and registry lookup.
pub struct Hot {
    /// `livechat_ws_events_in_total` by type: message, typing, status_update, sync.
    pub events_in: [Counter; 4],
    /// `livechat_ws_deliveries_total`.
    pub deliveries: Counter,
    /// `livechat_ws_delivery_latency_seconds`.
    pub delivery_latency: Histogram,
    /// `livechat_bus_fanout_total`.
    pub fanout: Counter,
    /// `livechat_ws_outbound_dropped_frames_total`.
    pub dropped: Counter,
}

/// The hot-path handles (bound to the recorder installed when first called).
pub fn hot() -> &'static Hot {
    static HOT: OnceLock<Hot> = OnceLock::new();
    HOT.get_or_init(|| Hot {
        events_in: ["message", "typing", "status_update", "sync"]
            .map(|t| metrics::counter!("livechat_ws_events_in_total", "type" => t)),
        deliveries: metrics::counter!("livechat_ws_deliveries_total"),
        delivery_latency: metrics::histogram!("livechat_ws_delivery_latency_seconds"),
        fanout: metrics::counter!("livechat_bus_fanout_total"),
        dropped: metrics::counter!("livechat_ws_outbound_dropped_frames_total"),
    })
}

/// Microseconds since the process's first call: a compact publish stamp for room messages
/// (8 bytes on every queued `Out::Seq`, where an `Instant` would take 16).
pub fn stamp() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Installs the Prometheus recorder and describes every metric; `None` if one is installed.
pub fn install_metrics() -> Option<PrometheusHandle> {
    let latency = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
    let rows = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rows".into()), &rows))
        .ok()?
        .install_recorder()
        .ok()?;
    describe();
    // Bind the hot-path handles to this recorder before any traffic.
    let _ = hot();
    // Counters that alerts use exist from the first scrape (0), not from their first event,
    // so `rate()` and `increase()` see the first increment.
    for name in [
        "livechat_ws_slow_consumer_closes_total",
        "livechat_ws_protocol_closes_total",
        "livechat_ws_sync_replays_total",
        "livechat_ws_sync_replayed_messages_total",
        "livechat_ws_deliveries_total",
        "livechat_ws_outbound_dropped_frames_total",
        "livechat_bus_gap_fills_total",
        "livechat_bus_bridge_publish_errors_total",
        "livechat_bus_bridge_catchups_total",
        "livechat_storage_unavailable_total",
        "livechat_storage_batch_retries_total",
        "livechat_storage_messages_committed_total",
        "livechat_http_accept_errors_total",
    ] {
        metrics::counter!(name).increment(0);
    }
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
    describe_histogram!(
        "livechat_ws_delivery_latency_seconds",
        Unit::Seconds,
        "Bus publish of a room message to the socket write that carried it (oldest message per written batch)."
    );
    describe_counter!(
        "livechat_ws_outbound_dropped_frames_total",
        "Frames for room subscribers discarded: outbound queue overflow (slow consumer) or a closing connection."
    );
    describe_counter!("livechat_ws_slow_consumer_closes_total", "Connections closed 1013 for a full outbound queue.");
    describe_counter!("livechat_ws_protocol_closes_total", "Connections closed for a protocol violation or limit.");
    describe_counter!("livechat_ws_sync_replays_total", "sync requests served.");
    describe_counter!("livechat_ws_sync_replayed_messages_total", "Messages replayed by sync.");
    describe_counter!("livechat_bus_fanout_total", "Frames queued to subscriber outboxes.");
    describe_counter!("livechat_bus_gap_fills_total", "Room sequence gaps filled from PostgreSQL.");
    describe_gauge!("livechat_bus_bridge_connected", "1 while the Redis pub/sub bridge to the other nodes is up.");
    describe_counter!(
        "livechat_bus_bridge_connects_total",
        "Connections of the Redis pub/sub bridge (1 + reconnects)."
    );
    describe_counter!("livechat_bus_bridge_published_total", "Envelopes published to the other nodes over Redis.");
    describe_counter!("livechat_bus_bridge_received_total", "Envelopes received from the other nodes over Redis.");
    describe_counter!("livechat_bus_bridge_publish_errors_total", "Pipelined Redis publishes that failed.");
    describe_counter!(
        "livechat_bus_bridge_dropped_total",
        "Unordered events (typing, presence, receipts) not published to the other nodes."
    );
    describe_counter!(
        "livechat_bus_bridge_catchups_total",
        "Room catch-ups from PostgreSQL (after a room's SUBSCRIBE, a Redis reconnect, or a catch-up hint)."
    );
    describe_counter!("livechat_presence_redis_errors_total", "Cluster presence calls to Redis that failed.");
    describe_counter!("livechat_presence_nodes_reaped_total", "Expired cluster nodes removed from the presence keys.");
    describe_histogram!("livechat_storage_commit_seconds", Unit::Seconds, "Group-commit transaction latency.");
    describe_histogram!("livechat_storage_batch_rows", "Writes per group commit.");
    describe_histogram!(
        "livechat_ws_membership_batch_rows",
        "Users per membership look-up query (WebSocket upgrades are batched)."
    );
    describe_counter!("livechat_storage_messages_committed_total", "Messages committed.");
    describe_counter!("livechat_storage_batch_retries_total", "Batches retried after a failure before COMMIT.");
    describe_counter!("livechat_storage_unavailable_total", "Writes answered with `unavailable`.");
    describe_gauge!("livechat_storage_queue_depth", "Writes waiting for the group-commit writer.");
    describe_gauge!("livechat_postgres_up", "1 when PostgreSQL answered the last readiness probe.");
    describe_gauge!("livechat_redis_up", "1 when Redis answered the last readiness probe.");
    describe_counter!("livechat_http_accept_errors_total", "Failed accept() calls.");
    describe_counter!("livechat_notify_jobs_enqueued_total", "Notification jobs enqueued.");
    describe_counter!("livechat_notify_jobs_delivered_total", "Notification jobs delivered, by sink.");
    describe_counter!("livechat_notify_jobs_retried_total", "Failed notification deliveries scheduled for a retry.");
    describe_counter!("livechat_notify_jobs_dead_lettered_total", "Notification jobs moved to the dead letters.");
    describe_counter!("livechat_notify_jobs_reclaimed_total", "Notification jobs taken over from a dead worker.");
    describe_counter!(
        "livechat_notify_enqueue_refused_total",
        "Relay passes refused by a full queue (rows wait in the outbox)."
    );
    describe_gauge!("livechat_notify_queue_depth", "Notification jobs queued, in flight or waiting for a retry.");
    describe_gauge!("livechat_notify_dead_letters", "Notification jobs in the dead letters.");
    describe_histogram!("livechat_notify_delivery_seconds", Unit::Seconds, "From enqueue to successful delivery.");
    describe_counter!("livechat_config_reloads_total", "SIGHUP configuration reloads, by result (ok, error).");
    describe_gauge!("livechat_process_resident_memory_bytes", "Resident set size.");
    describe_gauge!("livechat_process_open_fds", "Open file descriptors.");
}

/// Samples gauges at scrape time: PostgreSQL/Redis reachability (bounded probes, so the
/// gauges exist without a `/readyz` caller) and what is cheaper to read than to maintain.
pub async fn refresh_scrape_metrics(app: &App) {
    let redis = async {
        if let Some(r) = &app.redis {
            // ping() sets livechat_redis_up itself.
            r.ping().await;
        }
    };
    let (pg, ()) = tokio::join!(app.store.ping(), redis);
    metrics::gauge!("livechat_postgres_up").set(if pg { 1.0 } else { 0.0 });
    refresh_process_metrics(app);
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
