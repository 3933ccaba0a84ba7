//! Report: terminal table, JSON file, SVG plot.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Pct {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

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

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StepRow {
    pub offered_msgs_per_s: f64,
    pub offered_deliveries_per_s: f64,
    pub sent: u64,
    pub send_errors: u64,
    pub expected: i64,
    pub received: u64,
    pub loss: i64,
    pub duplicates: u64,
    pub seq_gaps: u64,
    pub deliveries_per_s: f64,
    pub latency: Pct,
    pub acks: u64,
    pub acks_per_s: f64,
    pub ack_latency: Pct,
    pub server_cpu_s: f64,
    /// server threads runnable but not running (CPU contention), seconds
    pub server_runq_wait_s: f64,
    pub client_cpu_s: f64,
    pub deliveries_per_server_cpu_s: f64,
    pub server_rss_kib: u64,
    pub server_fds: u64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu: String,
    pub mem_total_kib: u64,
}

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

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub label: String,
    pub command: String,
    pub date_utc: String,
    pub machine: Machine,
    pub params: serde_json::Value,
    pub steps: Vec<StepRow>,
    pub summary: BTreeMap<String, serde_json::Value>,
    pub errors: BTreeMap<String, u64>,
    pub other_events: BTreeMap<String, u64>,
    /// latency distribution for scenarios without steps (µs value, count)
    #[serde(skip)]
    pub dist: Option<Histogram<u64>>,
    pub dist_name: String,
    /// the distribution as (percentile, ms) points, for the SVG and for `render`
    #[serde(default)]
    pub dist_points: Vec<(f64, f64)>,
}

pub fn date_utc() -> String {
    // civil-from-days (Howard Hinnant), no chrono needed
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
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

/// SVG: latency percentiles (log y) vs offered rate (steps), or the latency-by-percentile curve.
pub fn svg(r: &Report) -> String {
    let (w, h) = (920.0, 480.0);
    let (l, rt, t, b) = (80.0, 260.0, 40.0, 60.0);
    let pw = w - l - rt;
    let ph = h - t - b;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"##
    );
    let title = format!("livechat {} {} — {}", r.scenario, r.label, r.date_utc);
    let _ = write!(s, r#"<text x="{l}" y="22" font-size="14" font-weight="bold">{}</text>"#, esc(&title));
    // series: (name, color, points(x, y_ms))
    let mut series: Vec<(String, &str, Vec<(f64, f64)>)> = Vec::new();
    let xlabel;
    let mut xlog = false;
    if r.steps.len() >= 2 {
        let use_deliv = r.steps.iter().any(|s| s.offered_deliveries_per_s > s.offered_msgs_per_s);
        xlabel = if use_deliv { "offered deliveries/s" } else { "offered messages/s" }.to_string();
        let xs: Vec<f64> =
            r.steps.iter().map(|s| if use_deliv { s.offered_deliveries_per_s } else { s.offered_msgs_per_s }).collect();
        let pick: [(&str, &str, fn(&Pct) -> f64); 4] = [
            ("p50", "#1f77b4", |p| p.p50_ms),
            ("p90", "#2ca02c", |p| p.p90_ms),
            ("p99", "#d62728", |p| p.p99_ms),
            ("p99.9", "#9467bd", |p| p.p999_ms),
        ];
        for (name, color, f) in pick {
            let pts = r
                .steps
                .iter()
                .zip(&xs)
                .filter(|(s, _)| s.latency.count > 0)
                .map(|(st, &x)| (x, f(&st.latency).max(0.001)))
                .collect();
            series.push((name.to_string(), color, pts));
        }
    } else {
        xlog = true;
        xlabel = "percentile".to_string();
        let pts: Vec<(f64, f64)> = r
            .dist_points
            .iter()
            .map(|&(q, ms)| (-(1.0 - (q / 100.0).min(0.99999f64)).log10(), ms.max(0.001))) // 99% → 2
            .collect();
        series.push((r.dist_name.clone(), "#d62728", pts));
    }
    let all: Vec<(f64, f64)> = series.iter().flat_map(|x| x.2.iter().copied()).collect();
    if all.is_empty() {
        s.push_str(r#"<text x="100" y="200">no data</text></svg>"#);
        return s;
    }
    let xmin = all.iter().map(|p| p.0).fold(f64::MAX, f64::min);
    let xmax = all.iter().map(|p| p.0).fold(f64::MIN, f64::max);
    let (xmin, xmax) = if (xmax - xmin).abs() < 1e-9 { (xmin * 0.9, xmax * 1.1 + 1.0) } else { (xmin, xmax) };
    let ymin = all.iter().map(|p| p.1).fold(f64::MAX, f64::min).max(0.001);
    let ymax = all.iter().map(|p| p.1).fold(f64::MIN, f64::max).max(ymin * 10.0);
    let (ly0, ly1) = (ymin.log10().floor(), ymax.log10().ceil());
    let px = |x: f64| l + (x - xmin) / (xmax - xmin) * pw;
    let yfloor = 10f64.powf(ly0);
    let py = |y: f64| t + ph - (y.max(yfloor).log10() - ly0) / (ly1 - ly0) * ph;
    // axes + grid
    let _ = write!(s, r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##);
    let mut e = ly0 as i32;
    while e as f64 <= ly1 {
        let v = 10f64.powi(e);
        let y = py(v);
        let _ = write!(
            s,
            r##"<line x1="{l}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{} ms</text>"##,
            l + pw,
            l - 6.0,
            y + 4.0,
            if v < 1.0 { format!("{v}") } else { format!("{v:.0}") }
        );
        e += 1;
    }
    for i in 0..=5 {
        let x = xmin + (xmax - xmin) * i as f64 / 5.0;
        let lab = if xlog {
            let q = 1.0 - 10f64.powf(-x);
            if x < 0.5 {
                "0%".to_string()
            } else {
                format!("{}%", (q * 100.0 * 1000.0).round() / 1000.0)
            }
        } else {
            fmt_num(x)
        };
        let _ = write!(
            s,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2:.1}" stroke="#ddd"/><text x="{0:.1}" y="{3:.1}" text-anchor="middle">{4}</text>"##,
            px(x),
            t,
            t + ph,
            t + ph + 18.0,
            lab
        );
    }
    let _ =
        write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, l + pw / 2.0, h - 15.0, esc(&xlabel));
    let _ = write!(
        s,
        r#"<text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle">latency (ms, log)</text>"#,
        t + ph / 2.0,
        t + ph / 2.0
    );
    for (i, (name, color, pts)) in series.iter().enumerate() {
        let poly: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        let _ = write!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, poly.join(" "));
        for &(x, y) in pts {
            let _ = write!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#, px(x), py(y));
        }
        let ly = t + 20.0 + i as f64 * 20.0;
        let _ = write!(
            s,
            r#"<line x1="{0:.1}" y1="{1:.1}" x2="{2:.1}" y2="{1:.1}" stroke="{color}" stroke-width="2"/><text x="{3:.1}" y="{4:.1}">{5}</text>"#,
            l + pw + 15.0,
            ly,
            l + pw + 40.0,
            l + pw + 46.0,
            ly + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn esc(x: &str) -> String {
    x.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// (percentile, ms) points of a histogram for plotting.
pub fn dist_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return vec![];
    }
    let qs: [f64; 11] = [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0];
    qs.iter().map(|&q| (q * 100.0, h.value_at_quantile(q) as f64 / 1000.0)).collect()
}
