//! `history`: REST history pages per second, from keep-alive clients in this process.

use super::client::{seed_messages, Client};
use super::output::{finish, new_report, round3};
use super::setup::{api, make_tokens, make_users, run_prefix, target, ws_path};
use crate::clock::now_us;
use crate::hist::new_hist;
use crate::http::Conn;
use crate::report::pct;
use crate::stats::{self_cpu_secs, server_sample};
use crate::Cli;
use anyhow::{bail, Result};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use std::net::SocketAddr;

/// Options of `history`.
// Field doc comments are the `--help` text: fields that have none there are described with
// plain comments, so that `--help` stays as it is.
#[derive(Args, Debug, Clone, Serialize)]
pub struct HistoryArgs {
    /// Messages to seed the room with
    #[arg(long, default_value_t = 5000)]
    pub messages: usize,
    /// Concurrent keep-alive HTTP connections
    #[arg(long, default_value_t = 16)]
    pub conns: usize,
    // How long to page, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    // Rows per page.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// What the paging clients counted.
struct Pages {
    /// latency of the successful pages, µs
    h: Histogram<u64>,
    ok: u64,
    bad: u64,
    rows: u64,
    /// pages with other than `limit` rows
    short: u64,
}

impl Pages {
    fn new() -> Self {
        Pages { h: new_hist(), ok: 0, bad: 0, rows: 0, short: 0 }
    }

    fn add(&mut self, o: &Pages) {
        let _ = self.h.add(&o.h);
        self.ok += o.ok;
        self.bad += o.bad;
        self.rows += o.rows;
        self.short += o.short;
    }
}

/// Runs `history`: seeds one room, then pages it at random `before_seq` for `--secs`.
pub(super) async fn run(cli: &Cli, a: HistoryArgs) -> Result<()> {
    let c = &cli.common;
    if c.legacy {
        bail!("history: the legacy app has no comparable paged endpoint in this harness");
    }
    let t = target(c)?;
    let users = make_users(c, 1).await?;
    let tokens = make_tokens(c, &users).await?;
    let room = api(c)?.create_room(&format!("{}hist", run_prefix()), &tokens[0], &[], 1).await?;
    let mut cl = Client::open(t, 0, &ws_path(&tokens[0])).await?;
    let t0 = std::time::Instant::now();
    let last = seed_messages(&mut cl, room, users[0], a.messages, 256, "h").await?;
    eprintln!("seeded {} messages (last seq {last}) in {:.1}s", a.messages, t0.elapsed().as_secs_f64());
    let s0 = server_sample(&c.server_pid);
    let cpu0 = self_cpu_secs();
    let end = now_us() + (a.secs * 1e6) as u64;
    let tasks: Vec<_> = (0..a.conns)
        .map(|w| tokio::task::spawn_local(page_until(t, w, tokens[0].clone(), room, a.limit, last, end)))
        .collect();
    let mut p = Pages::new();
    for tk in tasks {
        p.add(&tk.await?);
    }
    let cpu = self_cpu_secs() - cpu0;
    let s1 = server_sample(&c.server_pid);
    let mut rep = new_report(cli, "history", serde_json::to_value(&a)?);
    let s = &mut rep.summary;
    s.insert("pages_ok".into(), json!(p.ok));
    s.insert("pages_failed".into(), json!(p.bad));
    s.insert("pages_with_wrong_length".into(), json!(p.short));
    s.insert("pages_per_s".into(), json!((p.ok as f64 / a.secs).round()));
    s.insert("rows_per_s".into(), json!((p.rows as f64 / a.secs).round()));
    s.insert("latency".into(), serde_json::to_value(pct(&p.h))?);
    s.insert("client_cpu_s".into(), json!(round3(cpu)));
    if let (Some(x), Some(y)) = (s0, s1) {
        s.insert("server_cpu_s".into(), json!(round3(y.cpu_secs - x.cpu_secs)));
        s.insert("server_runq_wait_s".into(), json!(round3(y.runq_wait_secs - x.runq_wait_secs)));
        let per_cpu = p.ok as f64 / (y.cpu_secs - x.cpu_secs).max(1e-9);
        s.insert("pages_per_server_cpu_s".into(), json!(per_cpu.round()));
    }
    rep.dist = Some(p.h);
    rep.dist_name = "history page latency".into();
    finish(c, &rep)
}

/// One keep-alive client (number `w`): requests pages of `limit` rows before a random seq
/// up to `last`, back to back, until `end` (µs).
async fn page_until(t: SocketAddr, w: usize, tok: String, room: u64, limit: usize, last: u64, end: u64) -> Pages {
    let mut conn = Conn::new(t, 1000 + w);
    let mut p = Pages::new();
    let mut x: u64 = 0x9E37_79B9 ^ (w as u64 + 1);
    while now_us() < end {
        // xorshift: cheap, reproducible per client
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let before = limit as u64 + 1 + x % (last.saturating_sub(limit as u64).max(1));
        let path = format!("/chat/history?room_id={room}&limit={limit}&before_seq={before}");
        let s = now_us();
        match conn.request("GET", &path, Some(&tok), None).await {
            Ok(r) if r.status == 200 => {
                let _ = p.h.record((now_us() - s).max(1));
                p.ok += 1;
                let n = memchr::memmem::find_iter(&r.body, b"\"seq\":").count() as u64;
                p.rows += n;
                if n != limit as u64 {
                    p.short += 1;
                }
            }
            _ => p.bad += 1,
        }
    }
    p
}
