//! `resume`: mass reconnect with `sync`, verifying that no client misses a message.
//!
//! Phase 1: every member online, `--before` messages. Phase 2: everyone but the sender
//! (member 0) disconnects and `--gap` messages are sent. Phase 3: all reconnect at once and
//! `sync` from the last seq they saw while `--live-rate` messages/s keep flowing; each must
//! end with every seq exactly once.

mod online;
mod reconnect;
mod tally;
mod wave;

use super::client::{seed_messages, Client};
use super::output::{finish, new_report, round3};
use super::setup::{api, make_tokens, make_users, run_prefix, target, ws_path};
use crate::report::pct;
use crate::Cli;
use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use serde_json::json;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tally::Tally;
use tokio::sync::Semaphore;
use wave::Wave;

/// Options of `resume`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct ResumeArgs {
    /// Room members (connections); member 0 is the sender
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Messages before the disconnect
    #[arg(long, default_value_t = 100)]
    pub before: usize,
    /// Messages sent while everyone else is offline
    #[arg(long, default_value_t = 500)]
    pub gap: usize,
    /// Live messages/s sent during the reconnect wave
    #[arg(long, default_value_t = 50.0)]
    pub live_rate: f64,
}

/// The room under test and how its members connect.
struct Room {
    target: SocketAddr,
    id: u64,
    /// one per member; member 0 is the sender
    tokens: Vec<String>,
    /// user id of member 0
    sender_id: u64,
    /// upgrades in flight (`--connect-concurrency`)
    connect: Semaphore,
}

impl Room {
    /// Members other than the sender.
    fn receivers(&self) -> usize {
        self.tokens.len() - 1
    }
}

/// Runs `resume`; the report's distribution is the time from reconnect to `synced`.
pub(super) async fn run(cli: &Cli, a: ResumeArgs) -> Result<()> {
    let c = &cli.common;
    if c.legacy {
        bail!("resume: the legacy app has no sync/seq");
    }
    let t = target(c)?;
    let m = a.members.max(2);
    let users = make_users(c, m).await?;
    let tokens = make_tokens(c, &users).await?;
    let id =
        api(c)?.create_room(&format!("{}resume", run_prefix()), &tokens[0], &users[1..], c.setup_concurrency).await?;
    let mut sender = Client::open(t, 0, &ws_path(&tokens[0])).await?;
    let room =
        Rc::new(Room { target: t, id, tokens, sender_id: users[0], connect: Semaphore::new(c.connect_concurrency) });
    let online = online::run(&room, &mut sender, a.before).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // phase 2: messages while they are offline
    let gap_last = seed_messages(&mut sender, id, room.sender_id, a.gap, 64, "g").await?;
    eprintln!(
        "resume: {} before (last seq {}), {} while offline (last seq {gap_last}); reconnecting {} clients",
        a.before,
        online.before_last,
        a.gap,
        m - 1
    );
    let mut wave = wave::run(&room, sender, &online.pre_seen, gap_last, a.live_rate, &c.server_pid).await?;
    let tally = Tally::new(wave.final_seq, std::mem::take(&mut wave.results));
    report(cli, &a, room.receivers(), online.behind(), &wave, tally)
}

/// Builds, prints and writes the report: the verdict is PASS only if every client synced
/// and none missed a seq.
fn report(cli: &Cli, a: &ResumeArgs, clients: usize, behind: usize, wave: &Wave, t: Tally) -> Result<()> {
    let mut rep = new_report(cli, "resume", serde_json::to_value(a)?);
    let s = &mut rep.summary;
    s.insert("reconnected_clients".into(), json!(clients));
    s.insert("clients_behind_before_disconnect".into(), json!(behind));
    s.insert("clients_failed".into(), json!(t.failed));
    s.insert("clients_not_synced".into(), json!(t.not_synced));
    s.insert("missing_seqs_total (gap)".into(), json!(t.gaps));
    s.insert("clients_with_gap".into(), json!(t.clients_with_gap));
    s.insert("duplicate_deliveries".into(), json!(t.dups));
    s.insert("final_seq".into(), json!(wave.final_seq));
    s.insert("upgrade_retries (503 etc.)".into(), json!(t.upgrade_retries));
    s.insert("sync_retries (unavailable)".into(), json!(t.sync_retries));
    s.insert("out_of_order_deliveries".into(), json!(t.out_of_order));
    s.insert("live_messages_during_wave".into(), json!(wave.live_sent));
    s.insert("replayed_before_synced".into(), json!(t.replayed));
    s.insert("wave_secs".into(), json!(round3(wave.secs)));
    s.insert("replayed_msgs_per_s".into(), json!((t.replayed as f64 / wave.secs.max(1e-9)).round()));
    s.insert("time_to_synced".into(), serde_json::to_value(pct(&t.h))?);
    s.insert("client_cpu_s".into(), json!(round3(wave.client_cpu_s)));
    if let Some(cpu) = wave.server_cpu_s {
        s.insert("server_cpu_s".into(), json!(round3(cpu)));
    }
    let verdict = if t.passed() { "PASS: no gap" } else { "FAIL" };
    s.insert("verdict".into(), json!(verdict));
    rep.errors = t.errs;
    rep.dist = Some(t.h);
    rep.dist_name = "reconnect → synced".into();
    finish(&cli.common, &rep)
}
