//! Metrics: every name declared once ([`names`]), described once with its help text and type
//! ([`install`]), and the handles hot paths use bound once ([`hot`]). Imports nothing of the
//! crate, so every layer can count.
//!
//! Names follow `livechat_<subsystem>_<name>_<unit>`; counters end in `_total`; label values are
//! bounded (never a user or room id); histograms have explicit buckets (`_seconds`, `_rows`),
//! else the exporter would render summaries.

pub mod names;

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// How a metric is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    /// A histogram of a count (e.g. rows per batch).
    Histogram,
    /// A histogram in seconds.
    Seconds,
}

/// One metric's declaration.
struct Def {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    /// Exists from the first scrape (at 0), so `rate()` and `increase()` in alert rules see the
    /// first increment.
    zero: bool,
}

/// Every metric livechat exports.
const DEFS: &[Def] = &[
    Def { name: names::WS_CONNECTIONS, kind: Kind::Gauge, help: "Open WebSocket connections.", zero: false },
    Def {
        name: names::WS_UPGRADES_REFUSED_TOTAL,
        kind: Kind::Counter,
        help: "WebSocket upgrades refused, by reason.",
        zero: false,
    },
    Def { name: names::WS_EVENTS_IN_TOTAL, kind: Kind::Counter, help: "Client events received, by type.", zero: false },
    Def {
        name: names::WS_ERRORS_TOTAL,
        kind: Kind::Counter,
        help: "Error events sent to clients, by code.",
        zero: false,
    },
    Def {
        name: names::WS_DELIVERIES_TOTAL,
        kind: Kind::Counter,
        help: "Frames written to client sockets.",
        zero: true,
    },
    Def {
        name: names::WS_DELIVERY_LATENCY_SECONDS,
        kind: Kind::Seconds,
        help: "Bus publish of a room message to the socket write that carried it (oldest message per written batch).",
        zero: false,
    },
    Def {
        name: names::WS_OUTBOUND_DROPPED_FRAMES_TOTAL,
        kind: Kind::Counter,
        help: "Frames for room subscribers discarded: outbound queue overflow (slow consumer) or a closing connection.",
        zero: true,
    },
    Def {
        name: names::WS_SLOW_CONSUMER_CLOSES_TOTAL,
        kind: Kind::Counter,
        help: "Connections closed 1013 for a full outbound queue.",
        zero: true,
    },
    Def {
        name: names::WS_PROTOCOL_CLOSES_TOTAL,
        kind: Kind::Counter,
        help: "Connections closed for a protocol violation or limit.",
        zero: true,
    },
    Def { name: names::WS_SYNC_REPLAYS_TOTAL, kind: Kind::Counter, help: "sync requests served.", zero: true },
    Def {
        name: names::WS_SYNC_REPLAYED_MESSAGES_TOTAL,
        kind: Kind::Counter,
        help: "Messages replayed by sync.",
        zero: true,
    },
    Def {
        name: names::BUS_FANOUT_TOTAL,
        kind: Kind::Counter,
        help: "Frames queued to subscriber outboxes.",
        zero: false,
    },
    Def {
        name: names::BUS_GAP_FILLS_TOTAL,
        kind: Kind::Counter,
        help: "Room sequence gaps filled from PostgreSQL.",
        zero: true,
    },
    Def {
        name: names::BUS_BRIDGE_CONNECTED,
        kind: Kind::Gauge,
        help: "1 while the Redis pub/sub bridge to the other nodes is up.",
        zero: false,
    },
    Def {
        name: names::BUS_BRIDGE_CONNECTS_TOTAL,
        kind: Kind::Counter,
        help: "Connections of the Redis pub/sub bridge (1 + reconnects).",
        zero: false,
    },
    Def {
        name: names::BUS_BRIDGE_PUBLISHED_TOTAL,
        kind: Kind::Counter,
        help: "Envelopes published to the other nodes over Redis.",
        zero: false,
    },
    Def {
        name: names::BUS_BRIDGE_RECEIVED_TOTAL,
        kind: Kind::Counter,
        help: "Envelopes received from the other nodes over Redis.",
        zero: false,
    },
    Def {
        name: names::BUS_BRIDGE_PUBLISH_ERRORS_TOTAL,
        kind: Kind::Counter,
        help: "Pipelined Redis publishes that failed.",
        zero: true,
    },
    Def {
        name: names::BUS_BRIDGE_DROPPED_TOTAL,
        kind: Kind::Counter,
        help: "Unordered events (typing, presence, receipts) not published to the other nodes.",
        zero: false,
    },
    Def {
        name: names::BUS_BRIDGE_CATCHUPS_TOTAL,
        kind: Kind::Counter,
        help: "Room catch-ups from PostgreSQL (after a room's SUBSCRIBE, a Redis reconnect, or a catch-up hint).",
        zero: true,
    },
    Def {
        name: names::PRESENCE_REDIS_ERRORS_TOTAL,
        kind: Kind::Counter,
        help: "Cluster presence calls to Redis that failed.",
        zero: false,
    },
    Def {
        name: names::PRESENCE_NODES_REAPED_TOTAL,
        kind: Kind::Counter,
        help: "Expired cluster nodes removed from the presence keys.",
        zero: false,
    },
    Def {
        name: names::STORAGE_COMMIT_SECONDS,
        kind: Kind::Seconds,
        help: "Group-commit transaction latency.",
        zero: false,
    },
    Def { name: names::STORAGE_BATCH_ROWS, kind: Kind::Histogram, help: "Writes per group commit.", zero: false },
    Def {
        name: names::WS_MEMBERSHIP_BATCH_ROWS,
        kind: Kind::Histogram,
        help: "Users per membership look-up query (WebSocket upgrades are batched).",
        zero: false,
    },
    Def {
        name: names::BUS_GAPS_SKIPPED_TOTAL,
        kind: Kind::Counter,
        help: "Room sequence gaps skipped: never committed, or unreadable past the fill's patience.",
        zero: true,
    },
    Def {
        name: names::STORAGE_MESSAGE_LOOKUP_BATCH_ROWS,
        kind: Kind::Histogram,
        help: "Messages per receipt look-up query (receipts are batched).",
        zero: false,
    },
    Def { name: names::STORAGE_MESSAGES_COMMITTED_TOTAL, kind: Kind::Counter, help: "Messages committed.", zero: true },
    Def {
        name: names::STORAGE_EVENTS_COMMITTED_TOTAL,
        kind: Kind::Counter,
        help: "Edits, deletes and reactions committed.",
        zero: true,
    },
    Def {
        name: names::STORAGE_BATCH_RETRIES_TOTAL,
        kind: Kind::Counter,
        help: "Batches retried after a failure before COMMIT.",
        zero: true,
    },
    Def {
        name: names::STORAGE_UNAVAILABLE_TOTAL,
        kind: Kind::Counter,
        help: "Writes answered with `unavailable`.",
        zero: true,
    },
    Def {
        name: names::STORAGE_QUEUE_DEPTH,
        kind: Kind::Gauge,
        help: "Writes waiting for the group-commit writer.",
        zero: false,
    },
    Def {
        name: names::SEARCH_INDEXED_TOTAL,
        kind: Kind::Counter,
        help: "Messages (re)indexed for search.",
        zero: true,
    },
    Def {
        name: names::SEARCH_ROOMS_BEHIND,
        kind: Kind::Gauge,
        help: "Rooms with events not yet indexed for search (this node's indexer).",
        zero: true,
    },
    Def {
        name: names::POSTGRES_UP,
        kind: Kind::Gauge,
        help: "1 when PostgreSQL answered the last readiness probe.",
        zero: false,
    },
    Def {
        name: names::REDIS_UP,
        kind: Kind::Gauge,
        help: "1 when Redis answered the last readiness probe.",
        zero: false,
    },
    Def { name: names::HTTP_ACCEPT_ERRORS_TOTAL, kind: Kind::Counter, help: "Failed accept() calls.", zero: true },
    Def {
        name: names::NOTIFY_JOBS_ENQUEUED_TOTAL,
        kind: Kind::Counter,
        help: "Notification jobs enqueued.",
        zero: true,
    },
    Def {
        name: names::NOTIFY_JOBS_DELIVERED_TOTAL,
        kind: Kind::Counter,
        help: "Notification jobs delivered, by sink.",
        zero: false,
    },
    Def {
        name: names::NOTIFY_JOBS_RETRIED_TOTAL,
        kind: Kind::Counter,
        help: "Failed notification deliveries scheduled for a retry.",
        zero: true,
    },
    Def {
        name: names::NOTIFY_JOBS_DEAD_LETTERED_TOTAL,
        kind: Kind::Counter,
        help: "Notification jobs moved to the dead letters.",
        zero: true,
    },
    Def {
        name: names::NOTIFY_JOBS_RECLAIMED_TOTAL,
        kind: Kind::Counter,
        help: "Notification jobs taken over from a dead worker.",
        zero: true,
    },
    Def {
        name: names::NOTIFY_ENQUEUE_REFUSED_TOTAL,
        kind: Kind::Counter,
        help: "Relay passes refused by a full queue (rows wait in the outbox).",
        zero: true,
    },
    Def {
        name: names::NOTIFY_QUEUE_DEPTH,
        kind: Kind::Gauge,
        help: "Notification jobs queued, in flight or waiting for a retry.",
        zero: false,
    },
    Def {
        name: names::NOTIFY_DEAD_LETTERS,
        kind: Kind::Gauge,
        help: "Notification jobs in the dead letters.",
        zero: false,
    },
    Def {
        name: names::NOTIFY_DELIVERY_SECONDS,
        kind: Kind::Seconds,
        help: "From enqueue to successful delivery.",
        zero: false,
    },
    Def {
        name: names::CONFIG_RELOADS_TOTAL,
        kind: Kind::Counter,
        help: "SIGHUP configuration reloads, by result (ok, error).",
        zero: false,
    },
    Def { name: names::PROCESS_RESIDENT_MEMORY_BYTES, kind: Kind::Gauge, help: "Resident set size.", zero: false },
    Def { name: names::PROCESS_OPEN_FDS, kind: Kind::Gauge, help: "Open file descriptors.", zero: false },
];

/// Metric handles used on hot paths, registered once: a handle is an `Arc` to the atomic, so
/// an update skips the macro's key hashing and registry lookup.
pub struct Hot {
    /// `livechat_ws_events_in_total` by type: message, typing, status_update, sync, edit,
    /// delete, react.
    pub events_in: [Counter; 7],
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
        events_in: ["message", "typing", "status_update", "sync", "edit", "delete", "react"]
            .map(|t| metrics::counter!(names::WS_EVENTS_IN_TOTAL, "type" => t)),
        deliveries: metrics::counter!(names::WS_DELIVERIES_TOTAL),
        delivery_latency: metrics::histogram!(names::WS_DELIVERY_LATENCY_SECONDS),
        fanout: metrics::counter!(names::BUS_FANOUT_TOTAL),
        dropped: metrics::counter!(names::WS_OUTBOUND_DROPPED_FRAMES_TOTAL),
    })
}

/// Installs the Prometheus recorder and describes every metric; `None` if one is installed
/// already. Call inside the runtime (it spawns the exporter's upkeep task).
pub fn install() -> Option<PrometheusHandle> {
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
    for d in DEFS {
        match d.kind {
            Kind::Counter => {
                describe_counter!(d.name, d.help);
                if d.zero {
                    metrics::counter!(d.name).increment(0);
                }
            }
            Kind::Gauge => describe_gauge!(d.name, d.help),
            Kind::Histogram => describe_histogram!(d.name, d.help),
            Kind::Seconds => describe_histogram!(d.name, Unit::Seconds, d.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        let mut seen = std::collections::HashSet::new();
        for d in DEFS {
            assert!(seen.insert(d.name), "{} declared twice", d.name);
            assert!(d.name.starts_with("livechat_"), "{}", d.name);
            assert_eq!(d.kind == Kind::Counter, d.name.ends_with("_total"), "{}", d.name);
            assert_eq!(d.kind == Kind::Seconds, d.name.ends_with("_seconds"), "{}", d.name);
            assert!(!d.help.is_empty() && d.help.ends_with('.'), "{}", d.name);
        }
    }
}
