//! `connect-storm`: authenticated WebSocket upgrades per second.

use super::aggregate::add_counts;
use super::orchestrate::orchestrate;
use super::output::{finish, new_report, round3};
use super::setup::listen_only_plan;
use crate::hist::{hist_add, new_hist};
use crate::report::pct;
use crate::worker::Mode;
use crate::Cli;
use anyhow::Result;
use clap::Args;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;

/// Options of `connect-storm`.
// Field doc comments are the `--help` text: fields that have none there are described with
// plain comments, so that `--help` stays as it is.
#[derive(Args, Debug, Clone, Serialize)]
pub struct StormArgs {
    // Connections to open.
    #[arg(long, default_value_t = 10000)]
    pub conns: usize,
    // Distinct users (0 = one per connection).
    #[arg(long, default_value_t = 0)]
    pub users: usize,
}

/// Runs `connect-storm`: the workers connect only after `go`, `--connect-concurrency` at a
/// time each; the report's distribution is the handshake latency.
pub(super) async fn run(cli: &Cli, a: StormArgs) -> Result<()> {
    let c = &cli.common;
    let plan = listen_only_plan(c, Mode::Storm, a.conns, a.users).await?;
    let o = orchestrate(c, &plan, 0.0).await?;
    let mut rep = new_report(cli, "connect-storm", serde_json::to_value(&a)?);
    let connected: u64 = o.outs.iter().map(|w| w.connected).sum();
    let fails: u64 = o.outs.iter().map(|w| w.conn_fail).sum();
    let secs = o.outs.iter().map(|w| w.connect_secs).fold(0.0, f64::max);
    let mut h = new_hist();
    let mut ce: BTreeMap<String, u64> = BTreeMap::new();
    let mut retried: BTreeMap<String, u64> = BTreeMap::new();
    for w in &o.outs {
        hist_add(&mut h, &w.connect_lat);
        add_counts(&mut ce, &w.conn_errors);
        add_counts(&mut retried, &w.retried);
    }
    let s = &mut rep.summary;
    s.insert("connect_retries".into(), json!(retried));
    s.insert("connections".into(), json!(connected));
    s.insert("connect_failures".into(), json!(fails));
    s.insert("connect_errors".into(), json!(ce));
    s.insert("elapsed_s".into(), json!(round3(secs)));
    s.insert("upgrades_per_s".into(), json!((connected as f64 / secs.max(1e-9)).round()));
    s.insert("handshake_latency".into(), serde_json::to_value(pct(&h))?);
    s.insert("concurrency".into(), json!(c.connect_concurrency));
    s.insert("client_cpu_s".into(), json!(round3(o.outs.iter().map(|w| w.cpu_total).sum::<f64>())));
    if let (Some(Some(m)), Some(e)) = (o.marks.first(), o.end_sample) {
        let cpu = e.cpu_secs - m.cpu_secs;
        s.insert("server_cpu_s".into(), json!(round3(cpu)));
        s.insert("server_runq_wait_s".into(), json!(round3(e.runq_wait_secs - m.runq_wait_secs)));
        s.insert("upgrades_per_server_cpu_s".into(), json!((connected as f64 / cpu.max(1e-9)).round()));
        s.insert("server_rss_kib".into(), json!(e.rss_kib));
    }
    rep.dist = Some(h);
    rep.dist_name = "TCP connect + authenticated upgrade".into();
    finish(c, &rep)
}
