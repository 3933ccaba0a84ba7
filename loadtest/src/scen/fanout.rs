//! `fanout`: rooms × members × senders, open-loop message rate stepped to the knee.

use super::aggregate::aggregate;
use super::orchestrate::orchestrate;
use super::output::{finish, new_report};
use super::setup::{api, base_plan, make_tokens, make_users, parse_rates, run_prefix};
use crate::worker::{ConnSpec, Mode};
use crate::Cli;
use anyhow::Result;
use clap::Args;
use serde::Serialize;

/// Options of `fanout`.
// Field doc comments are the `--help` text: fields that have none there are described with
// plain comments, so that `--help` stays as it is.
#[derive(Args, Debug, Clone, Serialize)]
pub struct FanoutArgs {
    /// Rooms (each with its own members)
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Members (= connections) per room
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Senders per room (a subset of the members)
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Offered messages/s (all rooms together), one step per value, e.g. 200,500,1000
    #[arg(long, default_value = "100,300,1000")]
    pub rates: String,
    // Seconds per rate step.
    #[arg(long, default_value_t = 10.0)]
    pub step_secs: f64,
    /// Content bytes per message
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    // Longest wait for late deliveries after the last step, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,
}

/// Runs `fanout`: the first `senders` members of every room send.
pub(super) async fn run(cli: &Cli, a: FanoutArgs) -> Result<()> {
    let c = &cli.common;
    let rooms = if c.legacy { 1 } else { a.rooms };
    let n = rooms * a.members;
    let users = make_users(c, n).await?;
    let tokens = make_tokens(c, &users).await?;
    let api = api(c)?;
    let mut plan = base_plan(c, Mode::Traffic)?;
    for r in 0..rooms {
        let m = &users[r * a.members..(r + 1) * a.members];
        let room = if c.legacy {
            1
        } else {
            api.create_room(&format!("{}fanout{r}", run_prefix()), &tokens[r * a.members], &m[1..], c.setup_concurrency)
                .await?
        };
        for j in 0..a.members {
            let sender = j < a.senders;
            plan.conns.push(ConnSpec {
                token: tokens[r * a.members + j].clone(),
                user: m[j],
                send_room: if sender { room } else { 0 },
                fanout: a.members as u64,
            });
            if sender {
                plan.n_senders += 1;
            }
        }
    }
    plan.steps = parse_rates(&a.rates);
    plan.step_secs = a.step_secs;
    plan.size = a.size;
    plan.drain_secs = a.drain_secs;
    let o = orchestrate(c, &plan, 0.0).await?;
    let mut rep = new_report(cli, "fanout", serde_json::to_value(&a)?);
    aggregate(&mut rep, &plan, &o, a.members as f64);
    finish(c, &rep)
}
