//! Merging worker results into report rows and totals.

use super::orchestrate::Orch;
use super::output::round3;
use crate::hist::{hist_add, new_hist};
use crate::report::{pct, Report, StepRow};
use crate::stats::ServerSample;
use crate::worker::{Plan, WorkerOut};
use hdrhistogram::Histogram;
use serde_json::json;
use std::collections::BTreeMap;

/// Adds the counts of `from` to `into`.
pub(super) fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// The workers' `error` and other event counts, into the report.
pub(super) fn merge_events(rep: &mut Report, outs: &[WorkerOut]) {
    for w in outs {
        add_counts(&mut rep.errors, &w.errors);
        add_counts(&mut rep.other_events, &w.other);
    }
}

/// Aggregates worker outputs into step rows; `deliv_per_msg` is the deliveries each message
/// should produce.
pub(super) fn aggregate(rep: &mut Report, plan: &Plan, o: &Orch, deliv_per_msg: f64) {
    let nsteps = plan.steps.len().max(1);
    let mut all = new_hist();
    for k in 0..nsteps {
        let (row, lat) = step_row(plan, o, k, deliv_per_msg);
        let _ = all.add(&lat);
        rep.steps.push(row);
    }
    rep.dist = Some(all);
    rep.dist_name = "delivery latency".into();
    merge_events(rep, &o.outs);
    summarize_connections(rep, &o.outs);
    summarize_totals(rep, o);
}

/// Row `k`, summed over the workers, and its delivery latency histogram.
fn step_row(plan: &Plan, o: &Orch, k: usize, deliv_per_msg: f64) -> (StepRow, Histogram<u64>) {
    let offered = plan.steps.get(k).copied().unwrap_or(0.0);
    let mut row = StepRow {
        offered_msgs_per_s: offered,
        offered_deliveries_per_s: offered * deliv_per_msg,
        ..Default::default()
    };
    let mut lat = new_hist();
    let mut ack = new_hist();
    let mut ccpu = 0.0;
    for w in &o.outs {
        let s = &w.steps[k];
        row.sent += s.sent;
        row.send_errors += s.send_err;
        row.expected += s.expected;
        row.received += s.recv;
        row.duplicates += s.dups;
        row.seq_gaps += s.gaps;
        row.acks += s.acks;
        hist_add(&mut lat, &s.lat);
        hist_add(&mut ack, &s.ack);
        if w.cpu_marks.len() > k + 1 {
            ccpu += w.cpu_marks[k + 1] - w.cpu_marks[k];
        }
    }
    if plan.window > 0 {
        // closed loop: the offered rate is what was achieved
        row.offered_msgs_per_s = row.sent as f64 / plan.step_secs;
        row.offered_deliveries_per_s = row.offered_msgs_per_s * deliv_per_msg;
    }
    row.loss = row.expected - (row.received - row.duplicates) as i64;
    row.deliveries_per_s = row.received as f64 / plan.step_secs;
    row.acks_per_s = row.acks as f64 / plan.step_secs;
    row.latency = pct(&lat);
    row.ack_latency = pct(&ack);
    row.client_cpu_s = ccpu;
    if let (Some(Some(a)), Some(Some(b))) = (o.marks.get(k), o.marks.get(k + 1)) {
        add_server_figures(&mut row, a, b);
    }
    (row, lat)
}

/// The server's CPU, run-queue wait, RSS and fds over a step from its boundary samples.
fn add_server_figures(row: &mut StepRow, a: &ServerSample, b: &ServerSample) {
    row.server_cpu_s = b.cpu_secs - a.cpu_secs;
    row.server_runq_wait_s = b.runq_wait_secs - a.runq_wait_secs;
    row.server_rss_kib = b.rss_kib;
    row.server_fds = b.fds;
    if row.server_cpu_s > 0.0 {
        row.deliveries_per_server_cpu_s = row.received as f64 / row.server_cpu_s;
    }
}

/// Connections, failures, closes and client CPU over all workers.
fn summarize_connections(rep: &mut Report, outs: &[WorkerOut]) {
    let connected: u64 = outs.iter().map(|w| w.connected).sum();
    let fails: u64 = outs.iter().map(|w| w.conn_fail).sum();
    let closed: u64 = outs.iter().map(|w| w.closed).sum();
    let ccpu: f64 = outs.iter().map(|w| w.cpu_total).sum();
    let runq: f64 = outs.iter().map(|w| w.runq_wait).sum();
    let s = &mut rep.summary;
    s.insert("connections".into(), json!(connected));
    s.insert("connect_failures".into(), json!(fails));
    s.insert("closed_by_server".into(), json!(closed));
    s.insert("client_cpu_s_total".into(), json!(round3(ccpu)));
    s.insert("client_runq_wait_s_total".into(), json!(round3(runq)));
    let mut ce: BTreeMap<String, u64> = BTreeMap::new();
    for w in outs {
        add_counts(&mut ce, &w.conn_errors);
    }
    if !ce.is_empty() {
        s.insert("connect_errors".into(), json!(ce));
    }
}

/// Loss and duplicates over all steps; server CPU and run-queue wait over the whole run.
fn summarize_totals(rep: &mut Report, o: &Orch) {
    let tot_loss: i64 = rep.steps.iter().map(|s| s.loss).sum();
    let tot_dup: u64 = rep.steps.iter().map(|s| s.duplicates).sum();
    rep.summary.insert("loss_total".into(), json!(tot_loss));
    rep.summary.insert("duplicates_total".into(), json!(tot_dup));
    if let (Some(a), Some(b)) = (o.marks.first().copied().flatten(), o.end_sample) {
        rep.summary.insert("server_cpu_s_total".into(), json!(round3(b.cpu_secs - a.cpu_secs)));
        rep.summary.insert("server_runq_wait_s_total".into(), json!(round3(b.runq_wait_secs - a.runq_wait_secs)));
    }
}
