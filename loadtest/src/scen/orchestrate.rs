//! Running a plan in worker processes: spawn them, wait for `ready`, send `go`, sample the
//! server at step boundaries, collect their results.

use crate::clock::{now_us, sleep_until_us};
use crate::stats::{server_sample, ServerSample};
use crate::worker::{Mode, Plan, WorkerOut};
use crate::Common;
use anyhow::{anyhow, Result};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Connections per worker process when `--procs` is 0.
const CONNS_PER_PROC: usize = 18_000;

/// What a run of the workers produced.
pub(super) struct Orch {
    /// one result per worker
    pub outs: Vec<WorkerOut>,
    /// server before the workers connected
    pub base: Option<ServerSample>,
    /// server at `go` and, for traffic, at every step boundary
    pub marks: Vec<Option<ServerSample>>,
    /// server after the last worker finished
    pub end_sample: Option<ServerSample>,
}

fn procs_for(c: &Common, conns: usize) -> usize {
    if c.procs > 0 {
        c.procs
    } else {
        conns.div_ceil(CONNS_PER_PROC).max(1)
    }
}

/// A worker process and its pipes.
struct Worker {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stdin: ChildStdin,
}

impl Worker {
    fn spawn(exe: &Path, plan_path: &Path, index: usize, count: usize) -> Result<Worker> {
        let mut child = Command::new(exe)
            .arg("--worker-plan")
            .arg(plan_path)
            .arg("--worker-index")
            .arg(index.to_string())
            .arg("--worker-count")
            .arg(count.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stdin = child.stdin.take().unwrap();
        Ok(Worker { child, lines, stdin })
    }

    /// The next line the worker prints; `died` is the error if it exits instead.
    async fn next_line(&mut self, timeout: Duration, died: &str) -> Result<String> {
        tokio::time::timeout(timeout, self.lines.next_line()).await??.ok_or_else(|| anyhow!("{died}"))
    }

    /// Waits until the worker has connected everything and prints `ready`.
    async fn wait_ready(&mut self) -> Result<()> {
        while self.next_line(Duration::from_secs(900), "worker died before ready").await? != "ready" {}
        Ok(())
    }

    /// Tells the worker to start at `go_us` and (idle) hold until `end_us`.
    async fn go(&mut self, go_us: u64, end_us: u64) -> Result<()> {
        self.stdin.write_all(format!("go {go_us} {end_us}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Waits for the worker's `RESULT` line and its exit.
    async fn result(mut self) -> Result<WorkerOut> {
        loop {
            let l = self.next_line(Duration::from_secs(3600), "worker died without a result").await?;
            if let Some(j) = l.strip_prefix("RESULT ") {
                let out = serde_json::from_str::<WorkerOut>(j)?;
                let _ = self.child.wait().await;
                return Ok(out);
            }
        }
    }
}

/// Spawns the workers, waits for `ready`, sends `go`, samples the server, collects results.
/// `hold_secs` is how long an idle run holds its connections after `go`.
pub(super) async fn orchestrate(c: &Common, plan: &Plan, hold_secs: f64) -> Result<Orch> {
    let procs = procs_for(c, plan.conns.len());
    let path = std::env::temp_dir().join(format!("livechat-lt-plan-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec(plan)?)?;
    let base = server_sample(&c.server_pid);
    let exe = std::env::current_exe()?;
    let mut workers = (0..procs).map(|i| Worker::spawn(&exe, &path, i, procs)).collect::<Result<Vec<_>>>()?;
    eprintln!("{procs} worker process(es): connecting {} connections ...", plan.conns.len());
    for w in workers.iter_mut() {
        w.wait_ready().await?;
    }
    let lead_ms = if matches!(plan.mode, Mode::Traffic) { c.warmup_ms.max(300) } else { 300 };
    let go_us = now_us() + lead_ms * 1000;
    let end_us = go_us + (hold_secs * 1e6) as u64;
    for w in workers.iter_mut() {
        w.go(go_us, end_us).await?;
    }
    let marks = sample_marks(c, plan, go_us).await;
    let mut outs = Vec::new();
    for w in workers {
        outs.push(w.result().await?);
    }
    let end_sample = server_sample(&c.server_pid);
    let _ = std::fs::remove_file(&path);
    Ok(Orch { outs, base, marks, end_sample })
}

/// Server samples: at every step boundary of a traffic run, at `go` of an idle run, and
/// right away for a storm (whose workers start connecting at `go`).
async fn sample_marks(c: &Common, plan: &Plan, go_us: u64) -> Vec<Option<ServerSample>> {
    let mut marks = Vec::new();
    match plan.mode {
        Mode::Traffic => {
            let nsteps = plan.steps.len().max(1) as u64;
            let step_us = (plan.step_secs * 1e6) as u64;
            for k in 0..=nsteps {
                sleep_until_us(go_us + k * step_us).await;
                marks.push(server_sample(&c.server_pid));
            }
        }
        Mode::Idle => {
            sleep_until_us(go_us).await;
            marks.push(server_sample(&c.server_pid));
        }
        Mode::Storm => marks.push(server_sample(&c.server_pid)),
    }
    marks
}
