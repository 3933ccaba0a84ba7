//! `events`: a room-event mix (README "Room events") at full speed. Each connection is alone
//! in its room and keeps `--window` writes in flight: messages, and `--edit-pct` % edits and
//! `--react-pct` % reactions of its own recent messages (a reaction always changes something:
//! it toggles one of a few emoji). Every write is acknowledged by its own event, so the report
//! counts committed events per second by kind and their ack latency.

use super::client::{message_json, Client};
use super::output::{finish, new_report, round3};
use super::setup::{api, make_tokens, make_users, run_prefix, target, ws_path};
use crate::clock::now_us;
use crate::hist::new_hist;
use crate::report::pct;
use crate::stats::server_sample;
use crate::ws;
use crate::Cli;
use anyhow::{bail, Result};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

/// Options of `events`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct EventsArgs {
    /// Connections, each alone in its room
    #[arg(long, default_value_t = 50)]
    pub conns: usize,
    /// Writes in flight per connection
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// How long to send, seconds
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// Share of writes that are edits, percent
    #[arg(long, default_value_t = 10)]
    pub edit_pct: u64,
    /// Share of writes that are reactions, percent
    #[arg(long, default_value_t = 20)]
    pub react_pct: u64,
}

/// The kinds of write, in report order.
const KINDS: [&str; 3] = ["message", "edit", "reaction"];
/// Emoji a connection toggles on its messages.
const EMOJI: [&str; 4] = ["👍", "🎉", "❤", "👀"];
/// Recent messages a connection edits and reacts to.
const RECENT: usize = 64;

/// What one connection counted, per kind.
struct Tally {
    acks: [u64; 3],
    lat: [Histogram<u64>; 3],
    errors: u64,
}

impl Tally {
    fn new() -> Self {
        Tally { acks: [0; 3], lat: [new_hist(), new_hist(), new_hist()], errors: 0 }
    }

    fn add(&mut self, o: &Tally) {
        for k in 0..3 {
            self.acks[k] += o.acks[k];
            let _ = self.lat[k].add(&o.lat[k]);
        }
        self.errors += o.errors;
    }
}

/// Runs `events`.
pub(super) async fn run(cli: &Cli, a: EventsArgs) -> Result<()> {
    let c = &cli.common;
    if c.legacy {
        bail!("events: the legacy app has no edits or reactions");
    }
    let t = target(c)?;
    let users = make_users(c, a.conns).await?;
    let tokens = make_tokens(c, &users).await?;
    let api = api(c)?;
    let pre = run_prefix();
    let mut rooms = Vec::with_capacity(a.conns);
    for (i, tok) in tokens.iter().enumerate() {
        rooms.push(api.create_room(&format!("{pre}e{i}"), tok, &[], 1).await?);
    }
    let s0 = server_sample(&c.server_pid);
    let end = now_us() + (a.secs * 1e6) as u64;
    let tasks: Vec<_> = (0..a.conns)
        .map(|i| {
            let mix = Mix { edit_pct: a.edit_pct, react_pct: a.react_pct, window: a.window.max(1) };
            tokio::task::spawn_local(one_conn(t, i, tokens[i].clone(), users[i], rooms[i], mix, end))
        })
        .collect();
    let mut total = Tally::new();
    for tk in tasks {
        total.add(&tk.await??);
    }
    let s1 = server_sample(&c.server_pid);
    let mut rep = new_report(cli, "events", serde_json::to_value(&a)?);
    let s = &mut rep.summary;
    let mut all = new_hist();
    for (k, name) in KINDS.iter().enumerate() {
        s.insert(format!("{name}s_per_s"), json!((total.acks[k] as f64 / a.secs).round()));
        s.insert(format!("{name}_ack_latency"), serde_json::to_value(pct(&total.lat[k]))?);
        let _ = all.add(&total.lat[k]);
    }
    let events = total.acks.iter().sum::<u64>() as f64;
    s.insert("events_per_s".into(), json!((events / a.secs).round()));
    s.insert("edits_and_reactions_per_s".into(), json!(((total.acks[1] + total.acks[2]) as f64 / a.secs).round()));
    s.insert("errors".into(), json!(total.errors));
    if let (Some(x), Some(y)) = (s0, s1) {
        s.insert("server_cpu_s".into(), json!(round3(y.cpu_secs - x.cpu_secs)));
        s.insert("events_per_server_cpu_s".into(), json!((events / (y.cpu_secs - x.cpu_secs).max(1e-9)).round()));
    }
    rep.dist = Some(all);
    rep.dist_name = "ack latency, all kinds".into();
    finish(c, &rep)
}

/// The write mix of one connection.
#[derive(Clone, Copy)]
struct Mix {
    edit_pct: u64,
    react_pct: u64,
    window: usize,
}

/// One connection: closed loop until `end` (µs), then waits for what is in flight.
async fn one_conn(t: SocketAddr, i: usize, token: String, user: u64, room: u64, mix: Mix, end: u64) -> Result<Tally> {
    let mut cl = Client::open(t, i, &ws_path(&token)).await?;
    let mut tally = Tally::new();
    // Send times per kind: a room's writes of one kind commit in order, so acks come back in
    // send order.
    let mut sent: [VecDeque<u64>; 3] = [VecDeque::new(), VecDeque::new(), VecDeque::new()];
    let mut recent: VecDeque<u64> = VecDeque::new();
    let mut reacted: HashSet<(u64, usize)> = HashSet::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ (i as u64 + 1);
    let mut n = 0u64;
    loop {
        let in_flight: usize = sent.iter().map(VecDeque::len).sum();
        let now = now_us();
        if now < end && in_flight < mix.window {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (kind, text) = pick(x, n, room, &recent, &mut reacted, mix);
            cl.send_text(&text).await?;
            sent[kind].push_back(now);
            n += 1;
            continue;
        }
        if in_flight == 0 {
            return Ok(tally);
        }
        let f = match tokio::time::timeout(Duration::from_secs(10), cl.next()).await {
            Ok(r) => r?,
            Err(_) => bail!("events: no acknowledgement in 10 s"),
        };
        let Some(f) = f else { bail!("events: connection closed") };
        let kind = match ws::event_type(&f) {
            b"message" if ws::num_after(&f, b"\"sender_id\":") == Some(user) => {
                if let Some(id) = ws::num_after(&f, b"\"id\":") {
                    recent.push_back(id);
                    if recent.len() > RECENT {
                        recent.pop_front();
                    }
                }
                0
            }
            b"edit" => 1,
            b"reaction" => 2,
            b"error" => {
                tally.errors += 1;
                // Refused writes are acknowledged by their error; charge the oldest kind.
                (0..3).find(|&k| !sent[k].is_empty()).unwrap_or(0)
            }
            _ => continue,
        };
        if let Some(t0) = sent[kind].pop_front() {
            tally.acks[kind] += 1;
            let _ = tally.lat[kind].record((now_us() - t0).max(1));
        }
    }
}

/// The next write: (kind, JSON). Edits and reactions need a message to act on.
fn pick(
    x: u64,
    n: u64,
    room: u64,
    recent: &VecDeque<u64>,
    reacted: &mut HashSet<(u64, usize)>,
    mix: Mix,
) -> (usize, String) {
    let roll = x % 100;
    let target = (!recent.is_empty()).then(|| recent[(x >> 8) as usize % recent.len()]);
    match target {
        Some(id) if roll < mix.edit_pct => {
            (1, format!("{{\"type\":\"edit\",\"message_id\":{id},\"content\":\"edited t={} n={n}\"}}", now_us()))
        }
        Some(id) if roll < mix.edit_pct + mix.react_pct => {
            let e = (x >> 16) as usize % EMOJI.len();
            // Toggle: never a no-op, so every reaction is acknowledged by its event.
            let on = reacted.insert((id, e));
            if !on {
                reacted.remove(&(id, e));
            }
            (2, format!("{{\"type\":\"react\",\"message_id\":{id},\"emoji\":\"{}\",\"on\":{on}}}", EMOJI[e]))
        }
        _ => (0, message_json(room, &format!("t={};s=0;e{n}", now_us()), &format!("e{n}"))),
    }
}
