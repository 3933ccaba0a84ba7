//! Worker processes: hold connections, send on schedule, record every delivery.

use crate::stats::{now_us, self_cpu_secs};
use crate::ws;
use anyhow::{Context, Result};
use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnSpec {
    pub token: String,
    pub user: u64,
    /// room this connection sends to (0 = receive only)
    pub send_room: u64,
    /// deliveries expected per message sent by this connection (members of send_room)
    pub fanout: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Mode {
    Traffic,
    Idle,
    Storm,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub mode: Mode,
    pub target: String,
    pub legacy: bool,
    /// legacy format but with `?token=` (livechat's seed-compatible path)
    #[serde(default)]
    pub legacy_auth: bool,
    pub conns: Vec<ConnSpec>,
    /// offered messages/s (all senders together) per step
    pub steps: Vec<f64>,
    pub step_secs: f64,
    pub size: usize,
    /// closed loop: messages in flight per sender (0 = open loop)
    pub window: usize,
    pub drain_secs: f64,
    pub concurrency: usize,
    pub n_senders: usize,
}

pub fn ws_path(plan: &Plan, token: &str) -> String {
    if plan.legacy && !plan.legacy_auth {
        "/ws/chat".to_string()
    } else {
        format!("/ws/chat?token={token}")
    }
}

/// Histogram in µs, 1 µs .. 100 s, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).unwrap()
}

pub fn hist_to_vec(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
}

pub fn hist_add(h: &mut Histogram<u64>, v: &[(u64, u64)]) {
    for &(val, n) in v {
        let _ = h.record_n(val.clamp(1, 100_000_000), n);
    }
}

#[derive(Default)]
pub struct StepStats {
    pub sent: u64,
    pub send_err: u64,
    pub expected: i64,
    pub recv: u64,
    pub dups: u64,
    pub gaps: u64,
    pub acks: u64,
    pub lat: Option<Histogram<u64>>,
    pub ack: Option<Histogram<u64>>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StepOut {
    pub sent: u64,
    pub send_err: u64,
    pub expected: i64,
    pub recv: u64,
    pub dups: u64,
    pub gaps: u64,
    pub acks: u64,
    pub lat: Vec<(u64, u64)>,
    pub ack: Vec<(u64, u64)>,
}

#[derive(Default)]
pub struct WStats {
    pub steps: Vec<StepStats>,
    pub errors: BTreeMap<String, u64>,
    pub other: BTreeMap<String, u64>,
    pub closed: u64,
    pub total_recv: u64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct WorkerOut {
    pub conns: u64,
    pub connected: u64,
    pub conn_fail: u64,
    pub conn_errors: BTreeMap<String, u64>,
    /// failed attempts that a retry then fixed (200 ms pause each), by error
    pub retried: BTreeMap<String, u64>,
    pub closed: u64,
    pub steps: Vec<StepOut>,
    pub errors: BTreeMap<String, u64>,
    pub other: BTreeMap<String, u64>,
    /// self CPU seconds at each step boundary (steps+1 samples), from `go`
    pub cpu_marks: Vec<f64>,
    pub cpu_total: f64,
    /// this worker's run-queue wait (CPU contention) from `go` to the end, seconds
    pub runq_wait: f64,
    /// connect (TCP + upgrade) latency, µs
    pub connect_lat: Vec<(u64, u64)>,
    pub connect_secs: f64,
}

pub struct ConnCtx {
    pub user: u64,
    pub fanout: u64,
    pub inflight: Cell<u32>,
    pub notify: Notify,
    pub last: RefCell<Vec<(u64, u64)>>,
}

pub type Wr = Rc<tokio::sync::Mutex<OwnedWriteHalf>>;

fn parse_ref_step(r: &[u8]) -> Option<usize> {
    let end = memchr::memchr(b'.', r)?;
    std::str::from_utf8(&r[..end]).ok()?.parse().ok()
}

/// Handles one text frame of a traffic connection.
#[inline]
fn on_text(p: &[u8], now: u64, ctx: &ConnCtx, st: &RefCell<WStats>) {
    let ty = ws::event_type(p);
    if ty == b"message" {
        let Some(content) = ws::str_after(p, b"\"content\":\"") else {
            *st.borrow_mut().other.entry("message_unparsed".into()).or_default() += 1;
            return;
        };
        let Some((t, step)) = ws::content_marker(content) else {
            *st.borrow_mut().other.entry("message_foreign".into()).or_default() += 1;
            return;
        };
        let mut s = st.borrow_mut();
        s.total_recv += 1;
        let step = step as usize;
        if step >= s.steps.len() {
            return;
        }
        let lat = now.saturating_sub(t).max(1);
        let ss = &mut s.steps[step];
        ss.recv += 1;
        let _ = ss.lat.as_mut().unwrap().record(lat.min(100_000_000));
        if let Some(seq) = ws::num_after(p, b"\"seq\":") {
            let room = ws::num_after(p, b"\"room_id\":").unwrap_or(0);
            let mut last = ctx.last.borrow_mut();
            let slot = match last.iter_mut().position(|e| e.0 == room) {
                Some(i) => &mut last[i].1,
                None => {
                    last.push((room, 0));
                    &mut last.last_mut().unwrap().1
                }
            };
            if seq <= *slot {
                ss.dups += 1;
            } else {
                if seq > *slot + 1 {
                    ss.gaps += seq - *slot - 1;
                }
                *slot = seq;
            }
        }
        if ws::num_after(p, b"\"sender_id\":") == Some(ctx.user) {
            ss.acks += 1;
            let _ = ss.ack.as_mut().unwrap().record(lat.min(100_000_000));
            drop(s);
            let f = ctx.inflight.get();
            if f > 0 {
                ctx.inflight.set(f - 1);
                ctx.notify.notify_one();
            }
        }
    } else if ty == b"error" {
        let code = ws::str_after(p, b"\"code\":\"").unwrap_or(b"?");
        let mut s = st.borrow_mut();
        *s.errors.entry(String::from_utf8_lossy(code).into_owned()).or_default() += 1;
        if let Some(r) = ws::str_after(p, b"\"ref\":\"") {
            if let Some(step) = parse_ref_step(r) {
                if let Some(ss) = s.steps.get_mut(step) {
                    ss.send_err += 1;
                    ss.expected -= ctx.fanout as i64;
                }
                drop(s);
                let f = ctx.inflight.get();
                if f > 0 {
                    ctx.inflight.set(f - 1);
                    ctx.notify.notify_one();
                }
            }
        }
    } else {
        let mut s = st.borrow_mut();
        let k = String::from_utf8_lossy(ty).into_owned();
        *s.other.entry(k).or_default() += 1;
    }
}

/// Reads frames until the connection closes. `f` gets each complete text frame.
pub async fn read_loop<F: FnMut(&[u8], u64)>(
    mut rd: OwnedReadHalf,
    mut buf: BytesMut,
    wr: Wr,
    mask: [u8; 4],
    mut f: F,
) {
    loop {
        let now = now_us();
        while let Some(h) = ws::parse(&buf) {
            let end = h.hlen + h.plen;
            match h.op {
                ws::OP_TEXT | ws::OP_CONT => f(&buf[h.hlen..end], now),
                ws::OP_PING => {
                    let mut out = Vec::with_capacity(h.plen + 8);
                    ws::encode_frame(&mut out, ws::OP_PONG, &buf[h.hlen..end], mask);
                    let _ = wr.lock().await.write_all(&out).await;
                }
                ws::OP_CLOSE => return,
                _ => {}
            }
            buf.advance(end);
        }
        if buf.capacity() - buf.len() < 8192 {
            buf.reserve(32768);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

pub fn message_frame(
    out: &mut Vec<u8>,
    legacy: bool,
    room: u64,
    user: u64,
    t: u64,
    step: usize,
    cid: &str,
    size: usize,
    mask: [u8; 4],
) {
    let mut content = format!("t={t};s={step};");
    while content.len() < size {
        content.push('x');
    }
    let json = if legacy {
        format!("{{\"type\":\"message\",\"content\":\"{content}\",\"sender_id\":{user}}}")
    } else {
        format!("{{\"type\":\"message\",\"room_id\":{room},\"content\":\"{content}\",\"client_msg_id\":\"{cid}\"}}")
    };
    ws::encode_frame(out, ws::OP_TEXT, json.as_bytes(), mask);
}

struct Live {
    ctx: Rc<ConnCtx>,
    wr: Wr,
    spec_idx: usize,
}

pub fn worker_main(plan_path: &str, index: usize, count: usize) -> Result<()> {
    let plan: Plan = serde_json::from_slice(&std::fs::read(plan_path).context("plan")?)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let out = local.block_on(&rt, run_worker(plan, index, count))?;
    let mut so = std::io::stdout().lock();
    writeln!(so, "RESULT {}", serde_json::to_string(&out)?)?;
    so.flush()?;
    // exit without tearing down thousands of sockets politely
    std::process::exit(0);
}

fn say(line: &str) {
    let mut so = std::io::stdout().lock();
    let _ = writeln!(so, "{line}");
    let _ = so.flush();
}

/// Blocks (on a thread) for the parent's `go <t0_us> <end_us>` line.
async fn wait_go() -> (u64, u64) {
    tokio::task::spawn_blocking(|| {
        let mut l = String::new();
        let _ = std::io::stdin().lock().read_line(&mut l);
        let mut it = l.split_whitespace().skip(1).map(|x| x.parse::<u64>().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    })
    .await
    .unwrap()
}

async fn sleep_until_us(t: u64) {
    let now = now_us();
    if t > now {
        tokio::time::sleep(Duration::from_micros(t - now)).await;
    }
}

/// An error's text, cut to a map key.
fn error_key(e: &std::io::Error) -> String {
    let mut k = e.to_string();
    if k.len() > 60 {
        let mut cut = 60;
        while !k.is_char_boundary(cut) {
            cut -= 1;
        }
        k.truncate(cut);
    }
    k
}

async fn connect_all(plan: &Plan, mine: &[usize], st: &Rc<RefCell<WStats>>, out: &Rc<RefCell<WorkerOut>>) -> Vec<Live> {
    let target: SocketAddr = plan.target.parse().expect("target host:port");
    let sem = Rc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1)));
    let lives = Rc::new(RefCell::new(Vec::with_capacity(mine.len())));
    let mut hist = new_hist();
    let hist_cell = Rc::new(RefCell::new(std::mem::replace(&mut hist, new_hist())));
    let t0 = std::time::Instant::now();
    let mut handles = Vec::with_capacity(mine.len());
    for &i in mine {
        let spec = plan.conns[i].clone();
        let path = ws_path(plan, &spec.token);
        let (sem, lives, st, out, hist_cell) = (sem.clone(), lives.clone(), st.clone(), out.clone(), hist_cell.clone());
        let mode = plan.mode.clone();
        handles.push(tokio::task::spawn_local(async move {
            let _permit = sem.acquire().await.unwrap();
            let mut res = Err(std::io::Error::other("not tried"));
            for attempt in 0..3 {
                let s = now_us();
                res = ws::connect(target, i, &path).await;
                if res.is_ok() {
                    let _ = hist_cell.borrow_mut().record((now_us() - s).max(1));
                    break;
                }
                if attempt < 2 {
                    if let Err(e) = &res {
                        *out.borrow_mut().retried.entry(error_key(e)).or_default() += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            drop(_permit);
            match res {
                Err(e) => {
                    let mut o = out.borrow_mut();
                    o.conn_fail += 1;
                    *o.conn_errors.entry(error_key(&e)).or_default() += 1;
                }
                Ok((s, buf)) => {
                    out.borrow_mut().connected += 1;
                    let (rd, wr) = s.into_split();
                    let wr: Wr = Rc::new(tokio::sync::Mutex::new(wr));
                    let ctx = Rc::new(ConnCtx {
                        user: spec.user,
                        fanout: spec.fanout,
                        inflight: Cell::new(0),
                        notify: Notify::new(),
                        last: RefCell::new(Vec::new()),
                    });
                    let mask = ws::mask_for(i as u64);
                    let (ctx2, wr2, st2) = (ctx.clone(), wr.clone(), st.clone());
                    tokio::task::spawn_local(async move {
                        if mode == Mode::Traffic {
                            read_loop(rd, buf, wr2, mask, |p, now| on_text(p, now, &ctx2, &st2)).await;
                        } else {
                            read_loop(rd, buf, wr2, mask, |p, _| {
                                let ty = ws::event_type(p);
                                let mut s = st2.borrow_mut();
                                if ty == b"error" {
                                    let code = ws::str_after(p, b"\"code\":\"").unwrap_or(b"?");
                                    *s.errors.entry(String::from_utf8_lossy(code).into_owned()).or_default() += 1;
                                } else {
                                    *s.other.entry(String::from_utf8_lossy(ty).into_owned()).or_default() += 1;
                                }
                            })
                            .await;
                        }
                        st2.borrow_mut().closed += 1;
                    });
                    lives.borrow_mut().push(Live { ctx, wr, spec_idx: i });
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let mut o = out.borrow_mut();
    o.connect_secs = t0.elapsed().as_secs_f64();
    o.connect_lat = hist_to_vec(&hist_cell.borrow());
    drop(o);
    Rc::try_unwrap(lives).ok().map(|c| c.into_inner()).unwrap_or_default()
}

async fn run_worker(plan: Plan, index: usize, count: usize) -> Result<WorkerOut> {
    let mine: Vec<usize> = (0..plan.conns.len()).filter(|i| i % count == index).collect();
    let st = Rc::new(RefCell::new(WStats::default()));
    {
        let mut s = st.borrow_mut();
        for _ in 0..plan.steps.len().max(1) {
            s.steps.push(StepStats { lat: Some(new_hist()), ack: Some(new_hist()), ..Default::default() });
        }
    }
    let out = Rc::new(RefCell::new(WorkerOut { conns: mine.len() as u64, ..Default::default() }));

    let lives = if plan.mode == Mode::Storm {
        say("ready");
        let _ = wait_go().await;
        let l = connect_all(&plan, &mine, &st, &out).await;
        out.borrow_mut().cpu_total = self_cpu_secs();
        l
    } else {
        let l = connect_all(&plan, &mine, &st, &out).await;
        say("ready");
        let (t0, end) = wait_go().await;
        let cpu0 = self_cpu_secs();
        let w0 = crate::stats::runq_wait_secs(std::process::id());
        if plan.mode == Mode::Idle {
            sleep_until_us(end).await;
            // let readers notice closes
            tokio::time::sleep(Duration::from_millis(100)).await;
            out.borrow_mut().cpu_total = self_cpu_secs() - cpu0;
        } else {
            run_traffic(&plan, &l, t0, &st, &out, cpu0).await;
        }
        out.borrow_mut().runq_wait = crate::stats::runq_wait_secs(std::process::id()) - w0;
        l
    };

    let s = st.borrow();
    let mut o = out.borrow_mut().clone();
    o.closed = s.closed;
    o.errors = s.errors.clone();
    o.other = s.other.clone();
    o.steps = s
        .steps
        .iter()
        .map(|x| StepOut {
            sent: x.sent,
            send_err: x.send_err,
            expected: x.expected,
            recv: x.recv,
            dups: x.dups,
            gaps: x.gaps,
            acks: x.acks,
            lat: hist_to_vec(x.lat.as_ref().unwrap()),
            ack: hist_to_vec(x.ack.as_ref().unwrap()),
        })
        .collect();
    drop(lives);
    Ok(o)
}

async fn run_traffic(
    plan: &Plan,
    lives: &[Live],
    t0: u64,
    st: &Rc<RefCell<WStats>>,
    out: &Rc<RefCell<WorkerOut>>,
    cpu0: f64,
) {
    let nsteps = plan.steps.len().max(1);
    let step_us = (plan.step_secs * 1e6) as u64;
    let end = t0 + step_us * nsteps as u64;
    // CPU marks at step boundaries
    let marks = Rc::new(RefCell::new(vec![0.0f64]));
    {
        let marks = marks.clone();
        tokio::task::spawn_local(async move {
            for k in 1..=nsteps as u64 {
                sleep_until_us(t0 + k * step_us).await;
                marks.borrow_mut().push(self_cpu_secs() - cpu0);
            }
        });
    }
    let n_senders = plan.n_senders.max(1) as f64;
    let mut senders = Vec::new();
    for (k, l) in lives.iter().enumerate() {
        let spec = &plan.conns[l.spec_idx];
        if spec.send_room == 0 {
            continue;
        }
        let (ctx, wr, st) = (l.ctx.clone(), l.wr.clone(), st.clone());
        let plan = plan.clone();
        let idx = l.spec_idx;
        let phase = (k as f64 / n_senders).fract();
        senders.push(tokio::task::spawn_local(async move {
            let room = plan.conns[idx].send_room;
            let user = plan.conns[idx].user;
            let fanout = plan.conns[idx].fanout as i64;
            let mask = ws::mask_for(idx as u64 ^ 0xabcdef);
            let mut buf = Vec::with_capacity(4096);
            let mut n: u64 = 0;
            if plan.window > 0 {
                // closed loop: keep `window` messages in flight until the end
                sleep_until_us(t0).await;
                loop {
                    let now = now_us();
                    if now >= end {
                        break;
                    }
                    let step = (((now - t0) / step_us) as usize).min(nsteps - 1);
                    buf.clear();
                    let mut added = 0;
                    while ctx.inflight.get() < plan.window as u32 {
                        let cid = format!("{step}.{idx}.{n}");
                        message_frame(&mut buf, plan.legacy, room, user, now, step, &cid, plan.size, mask);
                        ctx.inflight.set(ctx.inflight.get() + 1);
                        n += 1;
                        added += 1;
                    }
                    if added > 0 {
                        {
                            let mut s = st.borrow_mut();
                            s.steps[step].sent += added;
                            s.steps[step].expected += fanout * added as i64;
                        }
                        if wr.lock().await.write_all(&buf).await.is_err() {
                            break;
                        }
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(100), ctx.notify.notified()).await;
                }
                return;
            }
            for (si, &rate) in plan.steps.iter().enumerate() {
                let per = rate / n_senders;
                if per <= 0.0 {
                    continue;
                }
                let interval = 1e6 / per; // µs
                let s0 = t0 + si as u64 * step_us;
                let s1 = s0 + step_us;
                let mut i: u64 = 0;
                loop {
                    let due = s0 + ((i as f64 + phase) * interval) as u64;
                    if due >= s1 {
                        break;
                    }
                    sleep_until_us(due).await;
                    let now = now_us();
                    buf.clear();
                    let mut added = 0u64;
                    loop {
                        let due = s0 + ((i as f64 + phase) * interval) as u64;
                        if due > now || due >= s1 {
                            break;
                        }
                        let cid = format!("{si}.{idx}.{n}");
                        // embed the scheduled time: open-loop latency without coordinated omission
                        message_frame(&mut buf, plan.legacy, room, user, due, si, &cid, plan.size, mask);
                        i += 1;
                        n += 1;
                        added += 1;
                    }
                    if added > 0 {
                        {
                            let mut s = st.borrow_mut();
                            s.steps[si].sent += added;
                            s.steps[si].expected += fanout * added as i64;
                        }
                        if wr.lock().await.write_all(&buf).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }));
    }
    sleep_until_us(end).await;
    for s in senders {
        let _ = s.await;
    }
    // drain: stop when deliveries stop for 1 s, or after drain_secs
    let dl = now_us() + (plan.drain_secs * 1e6) as u64;
    let mut last = st.borrow().total_recv;
    let mut quiet_since = now_us();
    while now_us() < dl {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = st.borrow().total_recv;
        if r != last {
            last = r;
            quiet_since = now_us();
        } else if now_us() - quiet_since > 1_000_000 {
            break;
        }
    }
    let mut o = out.borrow_mut();
    o.cpu_marks = marks.borrow().clone();
    o.cpu_total = self_cpu_secs() - cpu0;
}
