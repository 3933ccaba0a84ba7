//! `soak`: mixed traffic for a long time, to show that nothing grows and nothing is lost.
//!
//! One room of `--members`: member 0 sends `--rate` messages/s (open loop); every other member
//! receives, sends read receipts and now and then typing, and one member at a time drops its
//! connection and reconnects with `resume=1` + `sync` from the last seq it saw (every
//! `--reconnect-ms`); `--stuck` clients connect and never read (the server must cut them off and
//! free them), replaced every 30 s. Every `--sample-secs` the server's RSS and fds and the
//! interval's delivery latency are sampled. At the end every receiver must hold every seq
//! exactly once.

mod member;
mod sample;

use super::client::{message_json, Client};
use super::output::{finish, new_report, round3};
use super::setup::{api, make_tokens, make_users, run_prefix, target, ws_path};
use crate::clock::now_us;
use crate::hist::new_hist;
use crate::report::pct;
use crate::Cli;
use anyhow::{bail, Result};
use clap::Args;
use member::{Member, Shared};
use serde::Serialize;
use serde_json::json;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// Options of `soak`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct SoakArgs {
    /// Room members (connections); member 0 is the sender
    #[arg(long, default_value_t = 200)]
    pub members: usize,
    /// Messages/s sent (each delivered to every member)
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// How long the traffic lasts
    #[arg(long, default_value_t = 600.0)]
    pub secs: f64,
    /// Seconds between samples
    #[arg(long, default_value_t = 10.0)]
    pub sample_secs: f64,
    /// One member reconnects (resume=1 + sync) every this many ms
    #[arg(long, default_value_t = 500)]
    pub reconnect_ms: u64,
    /// Clients that never read
    #[arg(long, default_value_t = 3)]
    pub stuck: usize,
}

/// Runs `soak`.
pub(super) async fn run(cli: &Cli, a: SoakArgs) -> Result<()> {
    let c = &cli.common;
    if c.legacy {
        bail!("soak: needs rooms, sync and receipts");
    }
    let t = target(c)?;
    let m = a.members.max(2);
    let users = make_users(c, m + a.stuck).await?;
    let tokens = make_tokens(c, &users).await?;
    let room =
        api(c)?.create_room(&format!("{}soak", run_prefix()), &tokens[0], &users[1..], c.setup_concurrency).await?;
    let shared =
        Rc::new(Shared { target: t, room, stop: Cell::new(false), final_seq: Cell::new(0), ..Shared::default() });
    let members: Vec<Rc<Member>> = (1..m).map(|i| Rc::new(Member::new(i, tokens[i].clone()))).collect();
    let mut tasks = Vec::new();
    for mb in &members {
        tasks.push(tokio::task::spawn_local(member::run(shared.clone(), mb.clone())));
    }
    eprintln!("soak: {} members connected, {} msgs/s for {} s", m - 1, a.rate, a.secs);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stuck = tokio::task::spawn_local(member::stuck(shared.clone(), tokens[m..].to_vec()));
    let chaos = tokio::task::spawn_local(member::reconnects(shared.clone(), members.clone(), a.reconnect_ms));
    let sampler = tokio::task::spawn_local(sample::run(shared.clone(), c.server_pid.clone(), a.sample_secs));
    let sent = send(&shared, &tokens[0], users[0], a.rate, a.secs).await?;
    shared.draining.set(true);
    chaos.abort();
    stuck.abort();
    // Drain: every member catches up to the last seq (reconnecting ones sync), within 60 s.
    let deadline = now_us() + 60_000_000;
    while members.iter().any(|mb| mb.last_seq.get() < shared.final_seq.get()) && now_us() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let samples = sampler.await.unwrap_or_default();
    shared.stop.set(true);
    for t in tasks {
        t.abort();
    }
    report(cli, &a, &shared, &members, sent, samples)
}

/// Member 0 sends at `rate` for `secs`; returns how many messages were acknowledged.
async fn send(shared: &Shared, token: &str, user: u64, rate: f64, secs: f64) -> Result<u64> {
    let mut cl = Client::open(shared.target, 0, &ws_path(token)).await?;
    let (start, end) = (now_us(), now_us() + (secs * 1e6) as u64);
    let gap_us = (1e6 / rate.max(0.1)) as u64;
    let (mut sent, mut acked) = (0u64, 0u64);
    while now_us() < end {
        let due = start + sent * gap_us;
        if now_us() >= due {
            let content = format!("t={};s=0;soak", now_us());
            cl.send_text(&message_json(shared.room, &content, &format!("s{sent}"))).await?;
            sent += 1;
            continue;
        }
        let wait = Duration::from_micros(due.saturating_sub(now_us()).min(50_000));
        if let Ok(f) = tokio::time::timeout(wait, cl.next()).await {
            let Some(f) = f? else { bail!("soak: the sender was disconnected") };
            acked += member::count_ack(&f, user, &shared.final_seq);
        }
    }
    let deadline = now_us() + 30_000_000;
    while acked < sent && now_us() < deadline {
        if let Ok(f) = tokio::time::timeout(Duration::from_secs(1), cl.next()).await {
            let Some(f) = f? else { break };
            acked += member::count_ack(&f, user, &shared.final_seq);
        }
    }
    Ok(acked)
}

fn report(
    cli: &Cli,
    a: &SoakArgs,
    shared: &Shared,
    members: &[Rc<Member>],
    acked: u64,
    samples: Vec<sample::Sample>,
) -> Result<()> {
    let mut rep = new_report(cli, "soak", serde_json::to_value(a)?);
    let final_seq = shared.final_seq.get();
    let lost: u64 = members.iter().map(|m| final_seq.saturating_sub(m.last_seq.get()) + m.gaps.get()).sum();
    let dups: u64 = members.iter().map(|m| m.dups.get()).sum();
    let s = &mut rep.summary;
    s.insert("messages_acked".into(), json!(acked));
    s.insert("final_seq".into(), json!(final_seq));
    s.insert("lost_total".into(), json!(lost));
    s.insert("duplicates_total".into(), json!(dups));
    s.insert("reconnects".into(), json!(shared.reconnects.get()));
    s.insert("receipts_sent".into(), json!(shared.receipts.get()));
    s.insert("typing_sent".into(), json!(shared.typing.get()));
    s.insert("stuck_clients_cut_off".into(), json!(shared.stuck_cut.get()));
    s.insert("samples".into(), serde_json::to_value(&samples)?);
    // Warm-up: the first third of the run; growth is measured from its end to the last sample.
    if let (Some(w), Some(l)) = (samples.get(samples.len() / 3), samples.last()) {
        let growth = (l.rss_kib as f64 - w.rss_kib as f64) / (w.rss_kib.max(1) as f64);
        s.insert("rss_growth_after_warmup_pct".into(), json!(round3(growth * 100.0)));
        s.insert("fds_first_last".into(), json!([w.fds, l.fds]));
    }
    let verdict = if lost == 0 && dups == 0 { "PASS: nothing lost or repeated" } else { "FAIL" };
    s.insert("verdict".into(), json!(verdict));
    let h = shared.latency.replace(new_hist());
    s.insert("delivery_latency".into(), serde_json::to_value(pct(&h))?);
    rep.dist = Some(h);
    rep.dist_name = "delivery latency".into();
    finish(&cli.common, &rep)
}
