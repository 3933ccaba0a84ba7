//! Worker processes: hold connections, send on schedule, record every delivery.
//!
//! A worker reads the plan file, opens its share of the connections (every `count`-th one),
//! prints `ready`, waits for `go <t0_us> <end_us>` on stdin, runs, and prints one
//! `RESULT <json>` line for the parent.

mod connect;
mod out;
mod plan;
mod recv;
mod traffic;

pub use out::WorkerOut;
pub use plan::{ConnSpec, Mode, Plan};

use crate::clock::sleep_until_us;
use crate::stats::{runq_wait_secs, self_cpu_secs};
use anyhow::{Context, Result};
use out::WStats;
use recv::{ConnCtx, Wr};
use std::cell::RefCell;
use std::io::{BufRead, Write};
use std::rc::Rc;
use std::time::Duration;

/// An open connection, as the send side sees it.
struct Live {
    ctx: Rc<ConnCtx>,
    wr: Wr,
    /// index into `Plan::conns`
    spec_idx: usize,
}

/// Entry point of a worker process: runs worker `index` of `count` on the plan file and
/// prints the result; never returns on success.
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

/// Prints one line to the parent.
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

async fn run_worker(plan: Plan, index: usize, count: usize) -> Result<WorkerOut> {
    let mine: Vec<usize> = (0..plan.conns.len()).filter(|i| i % count == index).collect();
    let st = Rc::new(RefCell::new(WStats::with_steps(plan.steps.len().max(1))));
    let out = Rc::new(RefCell::new(WorkerOut { conns: mine.len() as u64, ..Default::default() }));
    let lives = if plan.mode == Mode::Storm {
        // connect only after `go`: the connecting is what is measured
        say("ready");
        let _ = wait_go().await;
        let l = connect::connect_all(&plan, &mine, &st, &out).await;
        out.borrow_mut().cpu_total = self_cpu_secs();
        l
    } else {
        let l = connect::connect_all(&plan, &mine, &st, &out).await;
        say("ready");
        let (t0, end) = wait_go().await;
        hold_or_send(&plan, &l, t0, end, &st, &out).await;
        l
    };
    let o = out.borrow().clone().with_stats(&st.borrow());
    drop(lives);
    Ok(o)
}

/// After `go`: an idle run holds the connections until `end`, a traffic run sends. Records
/// this worker's CPU and run-queue wait from here on.
async fn hold_or_send(
    plan: &Plan,
    lives: &[Live],
    t0: u64,
    end: u64,
    st: &Rc<RefCell<WStats>>,
    out: &Rc<RefCell<WorkerOut>>,
) {
    let cpu0 = self_cpu_secs();
    let w0 = runq_wait_secs(std::process::id());
    if plan.mode == Mode::Idle {
        sleep_until_us(end).await;
        // let readers notice closes
        tokio::time::sleep(Duration::from_millis(100)).await;
        out.borrow_mut().cpu_total = self_cpu_secs() - cpu0;
    } else {
        traffic::run_traffic(plan, lives, t0, st, out, cpu0).await;
    }
    out.borrow_mut().runq_wait = runq_wait_secs(std::process::id()) - w0;
}
