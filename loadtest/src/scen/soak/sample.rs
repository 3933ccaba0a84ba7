//! Samples over time: server RSS and fds, and the delivery latency of each interval.

use super::member::Shared;
use crate::hist::new_hist;
use crate::report::pct;
use crate::stats::server_sample;
use serde::Serialize;
use std::rc::Rc;
use std::time::Duration;

/// One sample.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Sample {
    /// Seconds since the sampling started.
    pub at_s: f64,
    /// Server resident memory.
    pub rss_kib: u64,
    /// Server open file descriptors.
    pub fds: u64,
    /// Deliveries in the interval.
    pub deliveries: u64,
    /// Their latency: median and p99, ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Samples every `every_secs` until the run stops.
pub(super) async fn run(shared: Rc<Shared>, pids: Vec<u32>, every_secs: f64) -> Vec<Sample> {
    let every = Duration::from_secs_f64(every_secs.max(1.0));
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    while !shared.stop.get() {
        tokio::time::sleep(every).await;
        if shared.draining.get() {
            break;
        }
        let h = shared.interval.replace(new_hist());
        let p = pct(&h);
        let srv = server_sample(&pids);
        let s = Sample {
            at_s: (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            rss_kib: srv.as_ref().map_or(0, |x| x.rss_kib),
            fds: srv.as_ref().map_or(0, |x| x.fds),
            deliveries: p.count,
            p50_ms: p.p50_ms,
            p99_ms: p.p99_ms,
        };
        eprintln!(
            "soak: t={:>6.1}s rss={} KiB fds={} deliveries={} p50={:.1} ms p99={:.1} ms",
            s.at_s, s.rss_kib, s.fds, s.deliveries, s.p50_ms, s.p99_ms
        );
        out.push(s);
    }
    out
}
