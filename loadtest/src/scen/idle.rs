//! `idle`: hold N authenticated idle connections; report server RSS and fds per connection.

use super::aggregate::merge_events;
use super::orchestrate::{orchestrate, Orch};
use super::output::{finish, new_report, round3};
use super::setup::listen_only_plan;
use crate::hist::{hist_add, new_hist};
use crate::report::{pct, Report};
use crate::worker::Mode;
use crate::Cli;
use anyhow::Result;
use clap::Args;
use serde::Serialize;
use serde_json::json;

/// Options of `idle`.
// Field doc comments are the `--help` text: fields that have none there are described with
// plain comments, so that `--help` stays as it is.
#[derive(Args, Debug, Clone, Serialize)]
pub struct IdleArgs {
    // Connections to hold.
    #[arg(long, default_value_t = 19000)]
    pub conns: usize,
    /// Distinct users (default: one per connection)
    #[arg(long, default_value_t = 0)]
    pub users: usize,
    // How long to hold them after all are connected, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub hold_secs: f64,
}

/// Runs `idle`; the report's distribution is the connect + upgrade latency.
pub(super) async fn run(cli: &Cli, a: IdleArgs) -> Result<()> {
    let c = &cli.common;
    let plan = listen_only_plan(c, Mode::Idle, a.conns, a.users).await?;
    let o = orchestrate(c, &plan, a.hold_secs).await?;
    let mut rep = new_report(cli, "idle", serde_json::to_value(&a)?);
    let connected: u64 = o.outs.iter().map(|w| w.connected).sum();
    let closed: u64 = o.outs.iter().map(|w| w.closed).sum();
    let fails: u64 = o.outs.iter().map(|w| w.conn_fail).sum();
    let s = &mut rep.summary;
    s.insert("connections".into(), json!(connected));
    s.insert("connect_failures".into(), json!(fails));
    s.insert("closed_during_hold".into(), json!(closed));
    s.insert("alive_at_end".into(), json!(connected - closed.min(connected)));
    let conn_secs = o.outs.iter().map(|w| w.connect_secs).fold(0.0, f64::max);
    s.insert("connect_secs".into(), json!(round3(conn_secs)));
    add_server_memory(&mut rep, &o, connected);
    let mut h = new_hist();
    for w in &o.outs {
        hist_add(&mut h, &w.connect_lat);
    }
    merge_events(&mut rep, &o.outs);
    rep.summary.insert("connect_latency".into(), serde_json::to_value(pct(&h))?);
    rep.dist = Some(h);
    rep.dist_name = "connect+upgrade latency".into();
    finish(c, &rep)
}

/// Server RSS and fds before, once connected and at the end, and per connection.
fn add_server_memory(rep: &mut Report, o: &Orch, connected: u64) {
    let (Some(b), Some(Some(m)), Some(e)) = (o.base, o.marks.first(), o.end_sample) else { return };
    let s = &mut rep.summary;
    let n = connected.max(1) as f64;
    s.insert("server_rss_before_kib".into(), json!(b.rss_kib));
    s.insert("server_rss_connected_kib".into(), json!(m.rss_kib));
    s.insert("server_rss_end_kib".into(), json!(e.rss_kib));
    s.insert("server_fds_before".into(), json!(b.fds));
    s.insert("server_fds_connected".into(), json!(m.fds));
    let per = (e.rss_kib.max(m.rss_kib) as f64 - b.rss_kib as f64) * 1024.0 / n;
    s.insert("server_rss_bytes_per_conn".into(), json!(per.round()));
    s.insert("server_rss_kib_per_conn".into(), json!(round3(per / 1024.0)));
    s.insert("server_fds_per_conn".into(), json!(round3((m.fds as f64 - b.fds as f64) / n)));
    s.insert("server_cpu_s_during_hold".into(), json!(round3(e.cpu_secs - m.cpu_secs)));
}
