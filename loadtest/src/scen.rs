//! Scenarios: setup over REST, worker orchestration, aggregation.

use crate::http::{Api, Conn};
use crate::report::{self, pct, Report, StepRow};
use crate::stats::{now_us, self_cpu_secs, server_sample, ServerSample};
use crate::worker::{self, hist_add, new_hist, ConnSpec, Mode, Plan, WorkerOut};
use crate::{ws, Cli, Cmd, Common};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn parse_rates(s: &str) -> Vec<f64> {
    s.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

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
    #[arg(long, default_value_t = 10.0)]
    pub step_secs: f64,
    /// Content bytes per message
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,
}

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
    #[arg(long, default_value_t = 10.0)]
    pub step_secs: f64,
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct IdleArgs {
    #[arg(long, default_value_t = 19000)]
    pub conns: usize,
    /// Distinct users (default: one per connection)
    #[arg(long, default_value_t = 0)]
    pub users: usize,
    #[arg(long, default_value_t = 20.0)]
    pub hold_secs: f64,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct StormArgs {
    #[arg(long, default_value_t = 10000)]
    pub conns: usize,
    #[arg(long, default_value_t = 0)]
    pub users: usize,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct HistoryArgs {
    /// Messages to seed the room with
    #[arg(long, default_value_t = 5000)]
    pub messages: usize,
    /// Concurrent keep-alive HTTP connections
    #[arg(long, default_value_t = 16)]
    pub conns: usize,
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

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

fn target(c: &Common) -> Result<SocketAddr> {
    let a: SocketAddr = c
        .url
        .trim_start_matches("http://")
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .context("--url host:port")?;
    if !a.ip().is_loopback() {
        bail!("refusing non-loopback target {a}: this harness only targets 127.0.0.0/8");
    }
    Ok(a)
}

fn run_prefix() -> String {
    format!("lt{}_{}_", now_us() % 100_000_000, std::process::id())
}

async fn make_users(c: &Common, n: usize) -> Result<Vec<u64>> {
    if c.legacy && !c.legacy_auth {
        return Ok((1..=n as u64).collect());
    }
    let api = Api { target: target(c)?, admin_token: c.admin_token.clone() };
    let t = std::time::Instant::now();
    let v = api.create_users(&run_prefix(), n, c.setup_concurrency).await?;
    eprintln!("setup: {n} users in {:.1}s", t.elapsed().as_secs_f64());
    Ok(v)
}

#[derive(Serialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: u64,
}

async fn make_tokens(c: &Common, users: &[u64]) -> Result<Vec<String>> {
    if c.legacy && !c.legacy_auth {
        return Ok(vec![String::new(); users.len()]);
    }
    let now = now_us() / 1_000_000;
    if let Some(sec) = &c.jwt_secret {
        let key = jsonwebtoken::EncodingKey::from_secret(sec.as_bytes());
        let h = jsonwebtoken::Header::default();
        return users
            .iter()
            .map(|u| Ok(jsonwebtoken::encode(&h, &Claims { sub: u.to_string(), exp: now + 86400, iat: now }, &key)?))
            .collect();
    }
    let api = Api { target: target(c)?, admin_token: c.admin_token.clone() };
    api.tokens(users, 86400, c.setup_concurrency).await
}

fn procs_for(c: &Common, conns: usize) -> usize {
    if c.procs > 0 {
        c.procs
    } else {
        conns.div_ceil(18_000).max(1)
    }
}

struct Orch {
    outs: Vec<WorkerOut>,
    base: Option<ServerSample>,
    marks: Vec<Option<ServerSample>>,
    end_sample: Option<ServerSample>,
    go_us: u64,
}

/// Spawns the workers, waits for `ready`, sends `go`, samples the server, collects results.
async fn orchestrate(c: &Common, plan: &Plan, hold_secs: f64) -> Result<Orch> {
    let procs = procs_for(c, plan.conns.len());
    let path = std::env::temp_dir().join(format!("livechat-lt-plan-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec(plan)?)?;
    let base = server_sample(&c.server_pid);
    let exe = std::env::current_exe()?;
    let mut kids = Vec::new();
    for i in 0..procs {
        let mut ch = tokio::process::Command::new(&exe)
            .arg("--worker-plan")
            .arg(&path)
            .arg("--worker-index")
            .arg(i.to_string())
            .arg("--worker-count")
            .arg(procs.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let lines = BufReader::new(ch.stdout.take().unwrap()).lines();
        let stdin = ch.stdin.take().unwrap();
        kids.push((ch, lines, stdin));
    }
    eprintln!("{procs} worker process(es): connecting {} connections ...", plan.conns.len());
    for (_, lines, _) in kids.iter_mut() {
        loop {
            let l = tokio::time::timeout(Duration::from_secs(900), lines.next_line())
                .await??
                .ok_or_else(|| anyhow!("worker died before ready"))?;
            if l == "ready" {
                break;
            }
        }
    }
    let lead_ms = if matches!(plan.mode, Mode::Traffic) { c.warmup_ms.max(300) } else { 300 };
    let go_us = now_us() + lead_ms * 1000;
    let nsteps = plan.steps.len().max(1) as u64;
    let step_us = (plan.step_secs * 1e6) as u64;
    let end_us = go_us + (hold_secs * 1e6) as u64;
    for (_, _, stdin) in kids.iter_mut() {
        stdin.write_all(format!("go {go_us} {end_us}\n").as_bytes()).await?;
        stdin.flush().await?;
    }
    let mut marks = Vec::new();
    match plan.mode {
        Mode::Traffic => {
            for k in 0..=nsteps {
                let at = go_us + k * step_us;
                let now = now_us();
                if at > now {
                    tokio::time::sleep(Duration::from_micros(at - now)).await;
                }
                marks.push(server_sample(&c.server_pid));
            }
        }
        Mode::Idle => {
            let now = now_us();
            if go_us > now {
                tokio::time::sleep(Duration::from_micros(go_us - now)).await;
            }
            marks.push(server_sample(&c.server_pid));
        }
        Mode::Storm => marks.push(server_sample(&c.server_pid)),
    }
    let mut outs = Vec::new();
    for (mut ch, mut lines, _) in kids {
        loop {
            let l = tokio::time::timeout(Duration::from_secs(3600), lines.next_line())
                .await??
                .ok_or_else(|| anyhow!("worker died without a result"))?;
            if let Some(j) = l.strip_prefix("RESULT ") {
                outs.push(serde_json::from_str::<WorkerOut>(j)?);
                break;
            }
        }
        let _ = ch.wait().await;
    }
    let end_sample = server_sample(&c.server_pid);
    let _ = std::fs::remove_file(&path);
    Ok(Orch { outs, base, marks, end_sample, go_us })
}

fn new_report(cli: &Cli, scenario: &str, params: serde_json::Value) -> Report {
    Report {
        scenario: scenario.into(),
        label: cli.common.label.clone(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        date_utc: report::date_utc(),
        machine: report::machine(),
        params,
        ..Default::default()
    }
}

/// Aggregates worker outputs into step rows.
fn aggregate(rep: &mut Report, plan: &Plan, o: &Orch, deliv_per_msg: f64) {
    let nsteps = plan.steps.len().max(1);
    let mut all = new_hist();
    for k in 0..nsteps {
        let mut row = StepRow {
            offered_msgs_per_s: plan.steps.get(k).copied().unwrap_or(0.0),
            offered_deliveries_per_s: plan.steps.get(k).copied().unwrap_or(0.0) * deliv_per_msg,
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
        let _ = all.add(&lat);
        row.loss = row.expected - (row.received - row.duplicates) as i64;
        row.deliveries_per_s = row.received as f64 / plan.step_secs;
        row.acks_per_s = row.acks as f64 / plan.step_secs;
        row.latency = pct(&lat);
        row.ack_latency = pct(&ack);
        row.client_cpu_s = ccpu;
        if let (Some(Some(a)), Some(Some(b))) = (o.marks.get(k), o.marks.get(k + 1)) {
            row.server_cpu_s = b.cpu_secs - a.cpu_secs;
            row.server_runq_wait_s = b.runq_wait_secs - a.runq_wait_secs;
            row.server_rss_kib = b.rss_kib;
            row.server_fds = b.fds;
            if row.server_cpu_s > 0.0 {
                row.deliveries_per_server_cpu_s = row.received as f64 / row.server_cpu_s;
            }
        }
        rep.steps.push(row);
    }
    rep.dist = Some(all);
    rep.dist_name = "delivery latency".into();
    for w in &o.outs {
        for (k, v) in &w.errors {
            *rep.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &w.other {
            *rep.other_events.entry(k.clone()).or_default() += v;
        }
    }
    let connected: u64 = o.outs.iter().map(|w| w.connected).sum();
    let fails: u64 = o.outs.iter().map(|w| w.conn_fail).sum();
    let closed: u64 = o.outs.iter().map(|w| w.closed).sum();
    let ccpu: f64 = o.outs.iter().map(|w| w.cpu_total).sum();
    rep.summary.insert("connections".into(), json!(connected));
    rep.summary.insert("connect_failures".into(), json!(fails));
    rep.summary.insert("closed_by_server".into(), json!(closed));
    rep.summary.insert("client_cpu_s_total".into(), json!(round3(ccpu)));
    rep.summary
        .insert("client_runq_wait_s_total".into(), json!(round3(o.outs.iter().map(|w| w.runq_wait).sum::<f64>())));
    let mut ce: BTreeMap<String, u64> = BTreeMap::new();
    for w in &o.outs {
        for (k, v) in &w.conn_errors {
            *ce.entry(k.clone()).or_default() += v;
        }
    }
    if !ce.is_empty() {
        rep.summary.insert("connect_errors".into(), json!(ce));
    }
    let tot_loss: i64 = rep.steps.iter().map(|s| s.loss).sum();
    let tot_dup: u64 = rep.steps.iter().map(|s| s.duplicates).sum();
    rep.summary.insert("loss_total".into(), json!(tot_loss));
    rep.summary.insert("duplicates_total".into(), json!(tot_dup));
    if let (Some(a), Some(b)) = (o.marks.first().copied().flatten(), o.end_sample) {
        rep.summary.insert("server_cpu_s_total".into(), json!(round3(b.cpu_secs - a.cpu_secs)));
        rep.summary.insert("server_runq_wait_s_total".into(), json!(round3(b.runq_wait_secs - a.runq_wait_secs)));
    }
    let _ = o.go_us;
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn finish(c: &Common, rep: &Report) -> Result<()> {
    let mut rep = rep.clone();
    if let Some(h) = &rep.dist {
        rep.dist_points = report::dist_points(h);
    }
    let rep = &rep;
    report::print_table(rep);
    if let Some(p) = &c.json {
        std::fs::write(p, serde_json::to_string_pretty(rep)?)?;
        eprintln!("wrote {p}");
    }
    if let Some(p) = &c.svg {
        std::fs::write(p, report::svg(rep))?;
        eprintln!("wrote {p}");
    }
    Ok(())
}

pub async fn run(cli: Cli) -> Result<()> {
    let Some(cmd) = cli.cmd.clone() else {
        bail!("no scenario given; see --help");
    };
    let c = &cli.common;
    if !matches!(cmd, Cmd::Render { .. }) {
        target(c)?;
    }
    match cmd {
        Cmd::Fanout(a) => fanout(&cli, a).await,
        Cmd::Durable(a) => durable(&cli, a).await,
        Cmd::Idle(a) => idle(&cli, a).await,
        Cmd::ConnectStorm(a) => storm(&cli, a).await,
        Cmd::History(a) => history(&cli, a).await,
        Cmd::Resume(a) => resume(&cli, a).await,
        Cmd::Render { from } => {
            let rep: Report = serde_json::from_slice(&std::fs::read(&from)?)?;
            report::print_table(&rep);
            if let Some(p) = &c.svg {
                std::fs::write(p, report::svg(&rep))?;
                eprintln!("wrote {p}");
            }
            Ok(())
        }
    }
}

fn base_plan(c: &Common, mode: Mode) -> Result<Plan> {
    Ok(Plan {
        mode,
        target: target(c)?.to_string(),
        legacy: c.legacy,
        legacy_auth: c.legacy_auth,
        conns: vec![],
        steps: vec![],
        step_secs: 0.0,
        size: 64,
        window: 0,
        drain_secs: 5.0,
        concurrency: c.connect_concurrency,
        n_senders: 0,
    })
}

async fn fanout(cli: &Cli, a: FanoutArgs) -> Result<()> {
    let c = &cli.common;
    let rooms = if c.legacy { 1 } else { a.rooms };
    let n = rooms * a.members;
    let users = make_users(c, n).await?;
    let tokens = make_tokens(c, &users).await?;
    let api = Api { target: target(c)?, admin_token: c.admin_token.clone() };
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

async fn durable(cli: &Cli, a: DurableArgs) -> Result<()> {
    let c = &cli.common;
    let users = make_users(c, a.conns).await?;
    let tokens = make_tokens(c, &users).await?;
    let api = Api { target: target(c)?, admin_token: c.admin_token.clone() };
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

/// `conns` connections that only listen, spread over `users` users (0 = one user each).
async fn listen_only_plan(c: &Common, mode: Mode, conns: usize, users: usize) -> Result<Plan> {
    let nu = if users == 0 { conns } else { users.min(conns) };
    let users = make_users(c, nu).await?;
    let tokens = make_tokens(c, &users).await?;
    let mut plan = base_plan(c, mode)?;
    for i in 0..conns {
        plan.conns.push(ConnSpec { token: tokens[i % nu].clone(), user: users[i % nu], send_room: 0, fanout: 0 });
    }
    plan.steps = vec![0.0];
    Ok(plan)
}

async fn idle(cli: &Cli, a: IdleArgs) -> Result<()> {
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
    if let (Some(b), Some(Some(m)), Some(e)) = (o.base, o.marks.first(), o.end_sample) {
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
    let mut h = new_hist();
    for w in &o.outs {
        hist_add(&mut h, &w.connect_lat);
        for (k, v) in &w.errors {
            *rep.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &w.other {
            *rep.other_events.entry(k.clone()).or_default() += v;
        }
    }
    rep.summary.insert("connect_latency".into(), serde_json::to_value(pct(&h))?);
    rep.dist = Some(h);
    rep.dist_name = "connect+upgrade latency".into();
    finish(c, &rep)
}

async fn storm(cli: &Cli, a: StormArgs) -> Result<()> {
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
        for (k, v) in &w.conn_errors {
            *ce.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &w.retried {
            *retried.entry(k.clone()).or_default() += v;
        }
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

// ---------------------------------------------------------------------------------------
// history and resume run in this process (single-threaded; pin with taskset)

/// A connected in-process client for resume/history seeding.
struct Client {
    rd: tokio::net::tcp::OwnedReadHalf,
    wr: tokio::net::tcp::OwnedWriteHalf,
    buf: bytes::BytesMut,
    mask: [u8; 4],
}

impl Client {
    async fn open(t: SocketAddr, i: usize, path: &str) -> Result<Client> {
        let (s, buf) = ws::connect(t, i, path).await?;
        let (rd, wr) = s.into_split();
        Ok(Client { rd, wr, buf, mask: ws::mask_for(i as u64) })
    }
    async fn send_text(&mut self, txt: &str) -> Result<()> {
        let mut out = Vec::with_capacity(txt.len() + 16);
        ws::encode_frame(&mut out, ws::OP_TEXT, txt.as_bytes(), self.mask);
        self.wr.write_all(&out).await?;
        Ok(())
    }
    /// Next text frame (answers pings), None on close.
    async fn next(&mut self) -> Result<Option<Vec<u8>>> {
        use bytes::Buf;
        use tokio::io::AsyncReadExt;
        loop {
            while let Some(h) = ws::parse(&self.buf) {
                let end = h.hlen + h.plen;
                let p = self.buf[h.hlen..end].to_vec();
                self.buf.advance(end);
                match h.op {
                    ws::OP_TEXT => return Ok(Some(p)),
                    ws::OP_PING => {
                        let mut out = Vec::new();
                        ws::encode_frame(&mut out, ws::OP_PONG, &p, self.mask);
                        self.wr.write_all(&out).await?;
                    }
                    ws::OP_CLOSE => return Ok(None),
                    _ => {}
                }
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

/// Opens a client, retrying refused upgrades (e.g. 503 during a reconnect wave) with backoff
/// as a real client would. Returns the client and the number of retries.
async fn open_retry(t: SocketAddr, i: usize, path: &str) -> Result<(Client, u64)> {
    let mut delay = 100u64;
    for attempt in 0..8u64 {
        match Client::open(t, i, path).await {
            Ok(c) => return Ok((c, attempt)),
            Err(e) if attempt == 7 => return Err(e),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                delay = (delay * 2).min(2000);
            }
        }
    }
    unreachable!()
}

/// Sends `n` messages to `room` with `window` in flight, waiting for every echo. Returns the
/// last seq acked.
async fn seed_messages(cl: &mut Client, room: u64, user: u64, n: usize, window: usize, tag: &str) -> Result<u64> {
    let mut sent = 0;
    let mut acked = 0;
    let mut last_seq = 0;
    let deadline = now_us() + 120_000_000;
    while acked < n {
        while sent < n && sent - acked < window {
            let content = format!("t={};s=0;{tag}", now_us());
            cl.send_text(&format!(
                "{{\"type\":\"message\",\"room_id\":{room},\"content\":\"{content}\",\"client_msg_id\":\"{tag}{sent}\"}}"
            ))
            .await?;
            sent += 1;
        }
        let f = tokio::time::timeout(Duration::from_secs(10), cl.next())
            .await
            .map_err(|_| anyhow!("seed: no echo in 10 s"))??;
        let Some(f) = f else { bail!("seed: closed") };
        let ty = ws::event_type(&f);
        if ty == b"message" && ws::num_after(&f, b"\"sender_id\":") == Some(user) {
            acked += 1;
            last_seq = last_seq.max(ws::num_after(&f, b"\"seq\":").unwrap_or(0));
        } else if ty == b"error" {
            bail!("seed: error {}", String::from_utf8_lossy(&f));
        }
        if now_us() > deadline {
            bail!("seed: timeout");
        }
    }
    Ok(last_seq)
}

async fn history(cli: &Cli, a: HistoryArgs) -> Result<()> {
    let c = &cli.common;
    if c.legacy {
        bail!("history: the legacy app has no comparable paged endpoint in this harness");
    }
    let t = target(c)?;
    let users = make_users(c, 1).await?;
    let tokens = make_tokens(c, &users).await?;
    let api = Api { target: t, admin_token: c.admin_token.clone() };
    let room = api.create_room(&format!("{}hist", run_prefix()), &tokens[0], &[], 1).await?;
    let mut cl = Client::open(t, 0, &format!("/ws/chat?token={}", tokens[0])).await?;
    let t0 = std::time::Instant::now();
    let last = seed_messages(&mut cl, room, users[0], a.messages, 256, "h").await?;
    eprintln!("seeded {} messages (last seq {last}) in {:.1}s", a.messages, t0.elapsed().as_secs_f64());
    let s0 = server_sample(&c.server_pid);
    let cpu0 = self_cpu_secs();
    let end = now_us() + (a.secs * 1e6) as u64;
    let mut tasks = Vec::new();
    for w in 0..a.conns {
        let tok = tokens[0].clone();
        let limit = a.limit;
        tasks.push(tokio::task::spawn_local(async move {
            let mut conn = Conn::new(t, 1000 + w);
            let mut h = new_hist();
            let (mut ok, mut bad, mut rows, mut short) = (0u64, 0u64, 0u64, 0u64);
            let mut x: u64 = 0x9E37_79B9 ^ (w as u64 + 1);
            while now_us() < end {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let before = limit as u64 + 1 + x % (last.saturating_sub(limit as u64).max(1));
                let path = format!("/chat/history?room_id={room}&limit={limit}&before_seq={before}");
                let s = now_us();
                match conn.request("GET", &path, Some(&tok), None).await {
                    Ok(r) if r.status == 200 => {
                        let _ = h.record((now_us() - s).max(1));
                        ok += 1;
                        let n = memchr::memmem::find_iter(&r.body, b"\"seq\":").count() as u64;
                        rows += n;
                        if n != limit as u64 {
                            short += 1;
                        }
                    }
                    _ => bad += 1,
                }
            }
            (h, ok, bad, rows, short)
        }));
    }
    let mut h = new_hist();
    let (mut ok, mut bad, mut rows, mut short) = (0, 0, 0, 0);
    for tk in tasks {
        let (hh, o, b, r, sh) = tk.await?;
        let _ = h.add(&hh);
        ok += o;
        bad += b;
        rows += r;
        short += sh;
    }
    let cpu = self_cpu_secs() - cpu0;
    let s1 = server_sample(&c.server_pid);
    let mut rep = new_report(cli, "history", serde_json::to_value(&a)?);
    let s = &mut rep.summary;
    s.insert("pages_ok".into(), json!(ok));
    s.insert("pages_failed".into(), json!(bad));
    s.insert("pages_with_wrong_length".into(), json!(short));
    s.insert("pages_per_s".into(), json!((ok as f64 / a.secs).round()));
    s.insert("rows_per_s".into(), json!((rows as f64 / a.secs).round()));
    s.insert("latency".into(), serde_json::to_value(pct(&h))?);
    s.insert("client_cpu_s".into(), json!(round3(cpu)));
    if let (Some(x), Some(y)) = (s0, s1) {
        s.insert("server_cpu_s".into(), json!(round3(y.cpu_secs - x.cpu_secs)));
        s.insert("server_runq_wait_s".into(), json!(round3(y.runq_wait_secs - x.runq_wait_secs)));
        s.insert("pages_per_server_cpu_s".into(), json!((ok as f64 / (y.cpu_secs - x.cpu_secs).max(1e-9)).round()));
    }
    rep.dist = Some(h);
    rep.dist_name = "history page latency".into();
    finish(c, &rep)
}

async fn resume(cli: &Cli, a: ResumeArgs) -> Result<()> {
    use std::cell::RefCell;
    use std::rc::Rc;
    let c = &cli.common;
    if c.legacy {
        bail!("resume: the legacy app has no sync/seq");
    }
    let t = target(c)?;
    let m = a.members.max(2);
    let users = make_users(c, m).await?;
    let tokens = make_tokens(c, &users).await?;
    let api = Api { target: t, admin_token: c.admin_token.clone() };
    let room =
        api.create_room(&format!("{}resume", run_prefix()), &tokens[0], &users[1..], c.setup_concurrency).await?;
    let mut sender = Client::open(t, 0, &format!("/ws/chat?token={}", tokens[0])).await?;
    // phase 1: everybody online; receivers track the highest seq they saw
    let seen: Rc<RefCell<Vec<u64>>> = Rc::new(RefCell::new(vec![0; m]));
    let sem = Rc::new(tokio::sync::Semaphore::new(c.connect_concurrency));
    let online = Rc::new(std::cell::Cell::new(0usize));
    let mut handles = Vec::new();
    for i in 1..m {
        let (tok, seen, sem, online) = (tokens[i].clone(), seen.clone(), sem.clone(), online.clone());
        handles.push(tokio::task::spawn_local(async move {
            let mut cl = {
                let _p = sem.acquire().await.unwrap();
                open_retry(t, i, &format!("/ws/chat?token={tok}")).await?.0
            };
            online.set(online.get() + 1);
            // read until told to stop (task is aborted)
            loop {
                let Some(f) = cl.next().await? else { return Ok::<_, anyhow::Error>(()) };
                if ws::event_type(&f) == b"message" && ws::num_after(&f, b"\"room_id\":") == Some(room) {
                    let sq = ws::num_after(&f, b"\"seq\":").unwrap_or(0);
                    let mut s = seen.borrow_mut();
                    if sq > s[i] {
                        s[i] = sq;
                    }
                }
            }
        }));
    }
    // wait until they are connected: seed, then wait for all to see the last seq
    let dl = now_us() + 60_000_000;
    while online.get() < m - 1 && now_us() < dl && handles.iter().any(|h| !h.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the server subscribes a connection after the upgrade; give the last ones a moment
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_last = seed_messages(&mut sender, room, users[0], a.before, 64, "b").await?;
    let dl = now_us() + 30_000_000;
    while now_us() < dl && seen.borrow()[1..].iter().any(|&s| s < before_last) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // disconnect everybody but the sender
    for h in &handles {
        h.abort();
    }
    for h in handles {
        let _ = h.await;
    }
    let pre_seen = seen.borrow().clone();
    let behind = pre_seen[1..].iter().filter(|&&s| s < before_last).count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // phase 2: messages while they are offline
    let gap_last = seed_messages(&mut sender, room, users[0], a.gap, 64, "g").await?;
    eprintln!(
        "resume: {} before (last seq {before_last}), {} while offline (last seq {gap_last}); reconnecting {} clients",
        a.before,
        a.gap,
        m - 1
    );
    // phase 3: reconnect wave with sync while live messages keep flowing
    let s0 = server_sample(&c.server_pid);
    let cpu0 = self_cpu_secs();
    let wave0 = now_us();
    let live_stop = Rc::new(std::cell::Cell::new(false));
    let live_last = Rc::new(std::cell::Cell::new(gap_last));
    let live = {
        let (live_stop, live_last) = (live_stop.clone(), live_last.clone());
        let (rate, uid) = (a.live_rate, users[0]);
        tokio::task::spawn_local(async move {
            let mut n = 0u64;
            let iv = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut tick = tokio::time::interval(iv);
            let mut pending = 0u64;
            while !live_stop.get() || pending > 0 {
                tokio::select! {
                    _ = tick.tick(), if !live_stop.get() && rate > 0.0 => {
                        let content = format!("t={};s=0;live", now_us());
                        sender.send_text(&format!("{{\"type\":\"message\",\"room_id\":{room},\"content\":\"{content}\",\"client_msg_id\":\"l{n}\"}}")).await?;
                        n += 1;
                        pending += 1;
                    }
                    f = tokio::time::timeout(Duration::from_millis(50), sender.next()) => {
                        if let Ok(f) = f {
                            let Some(f) = f? else { bail!("sender closed") };
                            if ws::event_type(&f) == b"message" && ws::num_after(&f, b"\"sender_id\":") == Some(uid) {
                                pending = pending.saturating_sub(1);
                                live_last.set(live_last.get().max(ws::num_after(&f, b"\"seq\":").unwrap_or(0)));
                            }
                        }
                    }
                }
            }
            Ok::<_, anyhow::Error>(n)
        })
    };
    // each reconnecting client: set of seqs seen (bitmap), time to `synced` with more=false
    let final_target = Rc::new(std::cell::Cell::new(u64::MAX));
    let mut handles = Vec::new();
    for i in 1..m {
        let (tok, sem, from, ft) = (tokens[i].clone(), sem.clone(), pre_seen[i], final_target.clone());
        handles.push(tokio::task::spawn_local(async move {
            let start = now_us();
            let (mut cl, retries) = {
                let _p = sem.acquire().await.unwrap();
                open_retry(t, i, &format!("/ws/chat?token={tok}")).await?
            };
            cl.send_text(&format!("{{\"type\":\"sync\",\"rooms\":{{\"{room}\":{from}}}}}")).await?;
            let mut out_of_order = 0u64;
            let mut sync_retries = 0u64;
            let mut got: Vec<u8> = Vec::new(); // count per seq above `from`
            let mut max_seen = from;
            let mut synced_at = 0u64;
            let mut replayed = 0u64;
            let mut other_err: Vec<String> = Vec::new();
            loop {
                if synced_at != 0 && max_seen >= ft.get() {
                    break;
                }
                let f = match tokio::time::timeout(Duration::from_millis(300), cl.next()).await {
                    Err(_) => {
                        if now_us() > start + 90_000_000 {
                            break;
                        }
                        continue;
                    }
                    Ok(f) => f?,
                };
                let Some(f) = f else { break };
                let ty = ws::event_type(&f);
                if ty == b"message" && ws::num_after(&f, b"\"room_id\":") == Some(room) {
                    let sq = ws::num_after(&f, b"\"seq\":").unwrap_or(0);
                    if sq < max_seen {
                        out_of_order += 1;
                    }
                    if sq > from {
                        let k = (sq - from - 1) as usize;
                        if got.len() <= k {
                            got.resize(k + 1, 0);
                        }
                        got[k] = got[k].saturating_add(1);
                        max_seen = max_seen.max(sq);
                    }
                    if synced_at == 0 {
                        replayed += 1;
                    }
                } else if ty == b"synced" {
                    if memchr::memmem::find(&f, b"\"more\":true").is_some() {
                        // continue from what the server says it sent for this room (contiguous),
                        // not from the highest seq seen (live messages may have overtaken)
                        let rooms = ws::find_after(&f, b"\"rooms\":").unwrap_or(b"");
                        let key = format!("\"{room}\":");
                        let upto = ws::num_after(rooms, key.as_bytes()).unwrap_or(from);
                        cl.send_text(&format!("{{\"type\":\"sync\",\"rooms\":{{\"{room}\":{upto}}}}}")).await?;
                    } else if synced_at == 0 {
                        synced_at = now_us();
                    }
                } else if ty == b"error" {
                    let code = ws::str_after(&f, b"\"code\":\"").unwrap_or(b"");
                    if code == b"unavailable" && synced_at == 0 && sync_retries < 20 {
                        // as a real client would: back off, then sync again from the contiguous point
                        sync_retries += 1;
                        let ra = ws::num_after(&f, b"\"retry_after_ms\":").unwrap_or(200).clamp(10, 5000);
                        tokio::time::sleep(Duration::from_millis(ra)).await;
                        let contig = from + got.iter().take_while(|&&n| n > 0).count() as u64;
                        cl.send_text(&format!("{{\"type\":\"sync\",\"rooms\":{{\"{room}\":{contig}}}}}")).await?;
                    }
                    other_err.push(String::from_utf8_lossy(&f).into_owned());
                }
            }
            Ok::<_, anyhow::Error>((
                from,
                got,
                synced_at.saturating_sub(start),
                synced_at != 0,
                replayed,
                other_err,
                retries,
                out_of_order,
                sync_retries,
            ))
        }));
    }
    // let the wave run; stop live traffic once every client has had time to sync
    let mut results = Vec::new();
    // stop live sending after the wave is connected: wait for handles in order while live runs
    let mut remaining = handles;
    // give the wave up to 60 s before stopping live traffic
    let wave_deadline = now_us() + 60_000_000;
    while now_us() < wave_deadline && remaining.iter().any(|h| !h.is_finished()) {
        // clients finish only after the final target is known; stop live after 3 s of wave
        if now_us() > wave0 + 3_000_000 && !live_stop.get() {
            live_stop.set(true);
        }
        if live_stop.get() && live.is_finished() && final_target.get() == u64::MAX {
            final_target.set(live_last.get());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    live_stop.set(true);
    let live_sent = match live.await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => bail!("live sender: {e}"),
        Err(e) => bail!("live sender: {e}"),
    };
    let final_seq = live_last.get();
    final_target.set(final_seq);
    for h in remaining.drain(..) {
        results.push(h.await);
    }
    let wave_secs = (now_us() - wave0) as f64 / 1e6;
    let cpu = self_cpu_secs() - cpu0;
    let s1 = server_sample(&c.server_pid);
    let mut h = new_hist();
    let (mut gaps, mut dups, mut not_synced, mut failed, mut replayed, mut clients_with_gap) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut errs: BTreeMap<String, u64> = BTreeMap::new();
    let (mut upgrade_retries, mut out_of_order, mut sync_retries) = (0u64, 0u64, 0u64);
    for r in results {
        match r {
            Ok(Ok((from, got, dt, synced, rep, oe, rt, ooo, sr))) => {
                upgrade_retries += rt;
                out_of_order += ooo;
                sync_retries += sr;
                if synced {
                    let _ = h.record(dt.max(1));
                } else {
                    not_synced += 1;
                }
                replayed += rep;
                let need = final_seq.saturating_sub(from) as usize;
                let mut g = 0;
                for k in 0..need {
                    let n = got.get(k).copied().unwrap_or(0);
                    if n == 0 {
                        g += 1;
                    } else if n > 1 {
                        dups += (n - 1) as u64;
                    }
                }
                gaps += g;
                if g > 0 {
                    clients_with_gap += 1;
                }
                for e in oe {
                    let code = ws::str_after(e.as_bytes(), b"\"code\":\"")
                        .map(|x| String::from_utf8_lossy(x).into_owned())
                        .unwrap_or_default();
                    *errs.entry(code).or_default() += 1;
                }
            }
            Ok(Err(e)) => {
                failed += 1;
                let k = e.to_string();
                *errs.entry(format!("client: {}", &k[..k.len().min(60)])).or_default() += 1;
            }
            Err(_) => failed += 1,
        }
    }
    let mut rep = new_report(cli, "resume", serde_json::to_value(&a)?);
    rep.errors = errs;
    let s = &mut rep.summary;
    s.insert("reconnected_clients".into(), json!(m - 1));
    s.insert("clients_behind_before_disconnect".into(), json!(behind));
    s.insert("clients_failed".into(), json!(failed));
    s.insert("clients_not_synced".into(), json!(not_synced));
    s.insert("missing_seqs_total (gap)".into(), json!(gaps));
    s.insert("clients_with_gap".into(), json!(clients_with_gap));
    s.insert("duplicate_deliveries".into(), json!(dups));
    s.insert("final_seq".into(), json!(final_seq));
    s.insert("upgrade_retries (503 etc.)".into(), json!(upgrade_retries));
    s.insert("sync_retries (unavailable)".into(), json!(sync_retries));
    s.insert("out_of_order_deliveries".into(), json!(out_of_order));
    s.insert("live_messages_during_wave".into(), json!(live_sent));
    s.insert("replayed_before_synced".into(), json!(replayed));
    s.insert("wave_secs".into(), json!(round3(wave_secs)));
    s.insert("replayed_msgs_per_s".into(), json!((replayed as f64 / wave_secs.max(1e-9)).round()));
    s.insert("time_to_synced".into(), serde_json::to_value(pct(&h))?);
    s.insert("client_cpu_s".into(), json!(round3(cpu)));
    if let (Some(x), Some(y)) = (s0, s1) {
        s.insert("server_cpu_s".into(), json!(round3(y.cpu_secs - x.cpu_secs)));
    }
    rep.dist = Some(h);
    rep.dist_name = "reconnect → synced".into();
    let verdict = if gaps == 0 && failed == 0 && not_synced == 0 { "PASS: no gap" } else { "FAIL" };
    rep.summary.insert("verdict".into(), json!(verdict));
    finish(c, &rep)
}

#[allow(dead_code)]
fn _unused(_: worker::Plan) {}
