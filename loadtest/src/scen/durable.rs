//! `durable`: max committed messages/s (closed loop, `--window`) or ack latency at open-loop
//! rates. Every sender is alone in its room, so each delivery is an ack.

use super::aggregate::aggregate;
use super::orchestrate::orchestrate;
use super::output::{finish, new_report};
use super::setup::{api, base_plan, make_tokens, make_users, parse_rates, run_prefix};
use crate::hist::{hist_add, new_hist};
use crate::worker::{ConnSpec, Mode};
use crate::Cli;
use anyhow::Result;
use clap::Args;
use serde::Serialize;
use serde_json::json;

/// Options of `durable`.
// Field doc comments are the `--help` text: fields that have none there are described with
// plain comments, so that `--help` stays as it is.
#[derive(Args, Debug, Clone, Serialize)]
pub struct DurableArgs {
    /// Sender connections, each in its own one-member room (deliveries = acks)
    #[arg(long, default_value_t = 100)]
    pub conns: usize,
    /// Offered messages/s per step (open loop); ignored with --window
    #[arg(long, default_value = "1000,10000")]
    pub rates: String,
    /// Closed loop: messages in flight per connection (max throughput); 0 = open loop
    #[arg(long, default_value_t = 0)]
    pub window: usize,
    // Seconds per step.
    #[arg(long, default_value_t = 10.0)]
    pub step_secs: f64,
    // Content bytes per message.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    // Longest wait for late deliveries after the last step, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,
}

/// Runs `durable`; the report's distribution is the ack latency.
pub(super) async fn run(cli: &Cli, a: DurableArgs) -> Result<()> {
    let c = &cli.common;
    let users = make_users(c, a.conns).await?;
    let tokens = make_tokens(c, &users).await?;
    let api = api(c)?;
    let mut plan = base_plan(c, Mode::Traffic)?;
    let pre = run_prefix();
    for i in 0..a.conns {
        let room = if c.legacy { 1 } else { api.create_room(&format!("{pre}d{i}"), &tokens[i], &[], 1).await? };
        plan.conns.push(ConnSpec {
            token: tokens[i].clone(),
            user: users[i],
            send_room: room,
            fanout: if c.legacy { a.conns as u64 } else { 1 },
        });
    }
    plan.n_senders = a.conns;
    plan.window = a.window;
    plan.steps = if a.window > 0 { vec![0.0] } else { parse_rates(&a.rates) };
    plan.step_secs = a.step_secs;
    plan.size = a.size;
    plan.drain_secs = a.drain_secs;
    let o = orchestrate(c, &plan, 0.0).await?;
    let mut rep = new_report(cli, "durable", serde_json::to_value(&a)?);
    aggregate(&mut rep, &plan, &o, if c.legacy { a.conns as f64 } else { 1.0 });
    let mut ack = new_hist();
    for w in &o.outs {
        for s in &w.steps {
            hist_add(&mut ack, &s.ack);
        }
    }
    let best = rep.steps.iter().map(|s| s.acks_per_s).fold(0.0, f64::max);
    rep.summary.insert("max_committed_msgs_per_s".into(), json!(best.round()));
    rep.dist = Some(ack);
    rep.dist_name = "ack (echo) latency".into();
    finish(c, &rep)
}
