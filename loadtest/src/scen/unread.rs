//! `unread`: the cost of `GET /v1/rooms` with unread and mention counts (README "Room
//! events") for a user in many rooms. A writer creates `--rooms` rooms with the reader and
//! posts `--per-room` messages in each (every `--mention-every`-th mentions the reader); then
//! keep-alive clients list the reader's rooms for `--secs`. The server needs
//! `LIVECHAT_LIMITS__ROOMS_CREATED_PER_MINUTE` at least `--rooms` (scripts/bench.sh sets it).

use super::client::Client;
use super::output::{finish, new_report};
use super::setup::{api, make_tokens, make_users, run_prefix, target, ws_path};
use crate::clock::now_us;
use crate::hist::new_hist;
use crate::http::Conn;
use crate::report::pct;
use crate::ws;
use crate::Cli;
use anyhow::{bail, Result};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

/// Options of `unread`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct UnreadArgs {
    /// Rooms the reader is a member of
    #[arg(long, default_value_t = 1000)]
    pub rooms: usize,
    /// Messages from the writer in each room (all unread for the reader)
    #[arg(long, default_value_t = 5)]
    pub per_room: usize,
    /// Every this many messages mention the reader
    #[arg(long, default_value_t = 3)]
    pub mention_every: usize,
    /// Concurrent keep-alive HTTP clients listing the rooms
    #[arg(long, default_value_t = 4)]
    pub conns: usize,
    /// How long to list, seconds
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
}

/// Runs `unread`.
pub(super) async fn run(cli: &Cli, a: UnreadArgs) -> Result<()> {
    let c = &cli.common;
    if c.legacy {
        bail!("unread: the legacy app has no rooms listing");
    }
    let t = target(c)?;
    let users = make_users(c, 2).await?;
    let tokens = make_tokens(c, &users).await?;
    let (writer, reader) = (users[0], users[1]);
    let api = api(c)?;
    let pre = run_prefix();
    let t0 = std::time::Instant::now();
    let mut rooms = Vec::with_capacity(a.rooms);
    for i in 0..a.rooms {
        rooms.push(api.create_room(&format!("{pre}u{i}"), &tokens[0], &[reader], 1).await?);
    }
    let mut cl = Client::open(t, 0, &ws_path(&tokens[0])).await?;
    let sent = seed(&mut cl, writer, reader, &rooms, &a).await?;
    eprintln!("seeded {} rooms, {sent} messages in {:.1}s", a.rooms, t0.elapsed().as_secs_f64());
    let end = now_us() + (a.secs * 1e6) as u64;
    let tasks: Vec<_> =
        (0..a.conns).map(|w| tokio::task::spawn_local(list_until(t, w, tokens[1].clone(), end))).collect();
    let (mut h, mut ok, mut bad, mut wrong) = (new_hist(), 0u64, 0u64, 0u64);
    let want = (a.per_room, a.per_room.div_ceil(a.mention_every.max(1)));
    for tk in tasks {
        let (h1, ok1, bad1, counts) = tk.await?;
        let _ = h.add(&h1);
        (ok, bad) = (ok + ok1, bad + bad1);
        wrong += counts.iter().filter(|&&c| c != want).count() as u64;
    }
    let mut rep = new_report(cli, "unread", serde_json::to_value(&a)?);
    let s = &mut rep.summary;
    s.insert("listings_ok".into(), json!(ok));
    s.insert("listings_failed".into(), json!(bad));
    s.insert("rooms_with_wrong_counts".into(), json!(wrong));
    s.insert("listings_per_s".into(), json!((ok as f64 / a.secs).round()));
    s.insert("latency".into(), serde_json::to_value(pct(&h))?);
    rep.dist = Some(h);
    rep.dist_name = format!("GET /v1/rooms latency, {} rooms with unread counts", a.rooms);
    finish(c, &rep)
}

/// Posts `per_room` messages in every room (window 256), mentioning the reader in every
/// `mention_every`-th; returns how many were acknowledged.
async fn seed(cl: &mut Client, writer: u64, reader: u64, rooms: &[u64], a: &UnreadArgs) -> Result<usize> {
    let total = rooms.len() * a.per_room;
    let (mut sent, mut acked) = (0usize, 0usize);
    while acked < total {
        while sent < total && sent - acked < 256 {
            let room = rooms[sent / a.per_room];
            let mention = if (sent % a.per_room).is_multiple_of(a.mention_every.max(1)) {
                reader.to_string()
            } else {
                String::new()
            };
            let text =
                format!("{{\"type\":\"message\",\"room_id\":{room},\"content\":\"u{sent}\",\"mentions\":[{mention}]}}");
            cl.send_text(&text).await?;
            sent += 1;
        }
        let f = tokio::time::timeout(Duration::from_secs(10), cl.next()).await;
        let Ok(Ok(Some(f))) = f else { bail!("unread: seeding stalled") };
        match ws::event_type(&f) {
            b"message" if ws::num_after(&f, b"\"sender_id\":") == Some(writer) => acked += 1,
            b"error" => bail!("unread: seeding refused: {}", String::from_utf8_lossy(&f)),
            _ => {}
        }
    }
    Ok(acked)
}

/// One keep-alive client (number `w`) listing the reader's rooms until `end` (µs). Returns
/// the latency, successes, failures and the (unread, mentions) of each room in the last page.
async fn list_until(t: SocketAddr, w: usize, tok: String, end: u64) -> (Histogram<u64>, u64, u64, Vec<(usize, usize)>) {
    let mut conn = Conn::new(t, 1000 + w);
    let (mut h, mut ok, mut bad, mut counts) = (new_hist(), 0u64, 0u64, Vec::new());
    while now_us() < end {
        let s = now_us();
        match conn.request("GET", "/v1/rooms", Some(&tok), None).await {
            Ok(r) if r.status == 200 => {
                let _ = h.record((now_us() - s).max(1));
                ok += 1;
                if let Ok(serde_json::Value::Array(rooms)) = r.json() {
                    counts = rooms
                        .iter()
                        .filter(|r| r["id"] != 1)
                        .map(|r| {
                            (r["unread"].as_u64().unwrap_or(0) as usize, r["mentions"].as_u64().unwrap_or(0) as usize)
                        })
                        .collect();
                }
            }
            _ => bad += 1,
        }
    }
    (h, ok, bad, counts)
}
