//! Report: terminal table, JSON file, SVG plot.

mod svg;

pub use svg::svg;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Percentiles of a latency histogram, in ms.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Pct {
    /// number of samples
    pub count: u64,
    /// median
    pub p50_ms: f64,
    /// 90th percentile
    pub p90_ms: f64,
    /// 99th percentile
    pub p99_ms: f64,
    /// 99.9th percentile
    pub p999_ms: f64,
    /// largest sample
    pub max_ms: f64,
}

/// The percentiles of a µs histogram (all zero when it is empty).
pub fn pct(h: &Histogram<u64>) -> Pct {
    if h.is_empty() {
        return Pct::default();
    }
    let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
    Pct {
        count: h.len(),
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: h.max() as f64 / 1000.0,
    }
}

/// One traffic step (one offered rate) of a stepped scenario, all workers together.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StepRow {
    /// offered messages/s (closed loop: achieved)
    pub offered_msgs_per_s: f64,
    /// offered messages/s × deliveries per message
    pub offered_deliveries_per_s: f64,
    /// messages sent in this step
    pub sent: u64,
    /// messages answered with an `error`
    pub send_errors: u64,
    /// deliveries expected for the messages sent
    pub expected: i64,
    /// deliveries received, duplicates included
    pub received: u64,
    /// expected − unique received
    pub loss: i64,
    /// deliveries whose seq was not above the last one seen
    pub duplicates: u64,
    /// seqs skipped between consecutive deliveries
    pub seq_gaps: u64,
    /// deliveries received / step length
    pub deliveries_per_s: f64,
    /// delivery latency from the scheduled send time
    pub latency: Pct,
    /// senders' own copies received (acks)
    pub acks: u64,
    /// acks / step length
    pub acks_per_s: f64,
    /// ack latency from the scheduled send time
    pub ack_latency: Pct,
    /// server CPU seconds in this step
    pub server_cpu_s: f64,
    /// server threads runnable but not running (CPU contention), seconds
    pub server_runq_wait_s: f64,
    /// harness CPU seconds in this step, all workers
    pub client_cpu_s: f64,
    /// deliveries received per server CPU second
    pub deliveries_per_server_cpu_s: f64,
    /// server RSS at the end of the step, KiB
    pub server_rss_kib: u64,
    /// server open fds at the end of the step
    pub server_fds: u64,
}

/// The machine the harness ran on.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// online CPUs
    pub nproc: usize,
    /// kernel release
    pub kernel: String,
    /// CPU model name
    pub cpu: String,
    /// MemTotal, KiB
    pub mem_total_kib: u64,
}

/// This machine's CPUs, kernel and memory, from /proc.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let mem_total_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0);
    let nproc = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(0) as usize;
    Machine { nproc, kernel, cpu, mem_total_kib }
}

/// A scenario's full result: what `--json` writes and `render` reads back.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Report {
    /// scenario name (`fanout`, `connect-storm`, ...)
    pub scenario: String,
    /// `--label`
    pub label: String,
    /// the command line that produced it
    pub command: String,
    /// start time, ISO 8601 UTC
    pub date_utc: String,
    /// where it ran
    pub machine: Machine,
    /// the scenario's options
    pub params: serde_json::Value,
    /// one row per traffic step (stepped scenarios only)
    pub steps: Vec<StepRow>,
    /// scenario-specific totals, printed as `key value` lines
    pub summary: BTreeMap<String, serde_json::Value>,
    /// `error` events by code
    pub errors: BTreeMap<String, u64>,
    /// events other than messages and errors, by type
    pub other_events: BTreeMap<String, u64>,
    /// latency distribution for scenarios without steps (µs value, count)
    #[serde(skip)]
    pub dist: Option<Histogram<u64>>,
    /// what `dist` measures (plot legend)
    pub dist_name: String,
    /// the distribution as (percentile, ms) points, for the SVG and for `render`
    #[serde(default)]
    pub dist_points: Vec<(f64, f64)>,
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn date_utc() -> String {
    iso_utc(crate::clock::now_secs() as i64)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn iso_utc(secs: i64) -> String {
    // civil-from-days (Howard Hinnant), no chrono needed
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn fmt_num(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// Prints the report to stdout: header, step table, summary, error and event counts.
pub fn print_table(r: &Report) {
    println!();
    println!("== livechat-loadtest {} {} ({}) ==", r.scenario, r.label, r.date_utc);
    println!("machine: {} cpus, {}, kernel {}", r.machine.nproc, r.machine.cpu, r.machine.kernel);
    if !r.steps.is_empty() {
        println!(
            "{:>9} {:>9} {:>9} {:>9} {:>6} {:>5} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>9} {:>8}",
            "offer/s", "deliv/s", "sent", "recv", "loss", "dups", "gaps", "p50ms", "p90ms", "p99ms", "p999ms", "maxms",
            "ackp99", "srvCPU", "srvWait", "cliCPU", "del/srvCPU", "rssMiB"
        );
        for s in &r.steps {
            println!(
                "{:>9} {:>9} {:>9} {:>9} {:>6} {:>5} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7.2} {:>7.2} {:>7.2} {:>9} {:>8.1}",
                fmt_num(s.offered_msgs_per_s),
                fmt_num(s.deliveries_per_s),
                s.sent,
                s.received,
                s.loss,
                s.duplicates,
                s.seq_gaps,
                s.latency.p50_ms,
                s.latency.p90_ms,
                s.latency.p99_ms,
                s.latency.p999_ms,
                s.latency.max_ms,
                s.ack_latency.p99_ms,
                s.server_cpu_s,
                s.server_runq_wait_s,
                s.client_cpu_s,
                fmt_num(s.deliveries_per_server_cpu_s),
                s.server_rss_kib as f64 / 1024.0
            );
        }
    }
    for (k, v) in &r.summary {
        println!("  {k:<34} {v}");
    }
    if !r.errors.is_empty() {
        println!("  errors by code: {:?}", r.errors);
    }
    if !r.other_events.is_empty() {
        println!("  other events:   {:?}", r.other_events);
    }
}

/// (percentile, ms) points of a histogram for plotting.
pub fn dist_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return vec![];
    }
    let qs: [f64; 11] = [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0];
    qs.iter().map(|&q| (q * 100.0, h.value_at_quantile(q) as f64 / 1000.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(951_782_400 + 3_661), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn number_format() {
        assert_eq!(
            [fmt_num(2_500_000.0), fmt_num(25_000.0), fmt_num(250.0), fmt_num(2.5)],
            ["2.50M", "25.0k", "250", "2.50"]
        );
    }
}
