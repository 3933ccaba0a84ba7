//! livechat-loadtest: load-test harness for livechat (and the original FastAPI app via
//! `--legacy`). See BENCHMARKS.md at the repository root for the commands behind every figure.
//!
//! Architecture: the parent process parses the scenario, does the setup over REST (users,
//! rooms, tokens — or mints JWTs itself with `--jwt-secret`), writes a plan file and re-execs
//! itself `--procs` times as workers. Each worker is a single-threaded tokio runtime (pin the
//! harness with `taskset`) holding its share of the connections, one reader task per
//! connection. Workers print `ready`, wait for `go <t0>` on stdin, run, and print one JSON
//! result line; the parent samples the server's /proc at step boundaries and merges.

mod backoff;
mod clock;
mod hist;
mod http;
mod report;
mod scen;
mod stats;
mod worker;
mod ws;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

/// The command line: global options and a scenario (or, internally, a worker's role).
#[derive(Parser, Debug, Clone)]
#[command(name = "livechat-loadtest", about = "Load-test harness for livechat", version)]
pub struct Cli {
    /// options shared by all scenarios
    #[command(flatten)]
    pub common: Common,
    /// the scenario to run
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    /// (internal) run as a worker process with this plan file
    #[arg(long, hide = true)]
    pub worker_plan: Option<String>,
    /// (internal) this worker's index, 0..worker_count
    #[arg(long, hide = true, default_value_t = 0)]
    pub worker_index: usize,
    /// (internal) number of worker processes
    #[arg(long, hide = true, default_value_t = 1)]
    pub worker_count: usize,
}

/// Options shared by all scenarios (global: accepted before or after the scenario name).
#[derive(Args, Debug, Clone, serde::Serialize)]
pub struct Common {
    /// Server address (host:port, loopback only)
    #[arg(long, global = true, default_value = "127.0.0.1:8100")]
    pub url: String,
    /// Admin bearer token (LIVECHAT_ADMIN_TOKEN of the server)
    #[arg(long, global = true, default_value = "adm", env = "LIVECHAT_ADMIN_TOKEN")]
    pub admin_token: String,
    /// Mint user JWTs locally with this HS256 secret instead of POST /v1/tokens
    #[arg(long, global = true, env = "LIVECHAT_JWT_SECRET")]
    pub jwt_secret: Option<String>,
    /// Server pid, for CPU seconds, RSS and fds from /proc/<pid>; a comma-separated list for
    /// several server processes sharing the port (their figures are summed)
    #[arg(long, global = true, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Worker processes (0 = one per 18,000 connections)
    #[arg(long, global = true, default_value_t = 0)]
    pub procs: usize,
    /// Write the full report as JSON here
    #[arg(long, global = true)]
    pub json: Option<String>,
    /// Write an SVG latency plot here
    #[arg(long, global = true)]
    pub svg: Option<String>,
    /// Speak the original FastAPI app's token-less format (ws://host/ws/chat, one shared chat)
    #[arg(long, global = true)]
    pub legacy: bool,
    /// With --legacy: still authenticate (token on the upgrade URL), to run the legacy event
    /// format against livechat itself (room 1, no room_id, sender_id in the event)
    #[arg(long, global = true)]
    pub legacy_auth: bool,
    /// Free-text label stored in the report
    #[arg(long, global = true, default_value = "")]
    pub label: String,
    /// Upgrade handshakes in flight while connecting
    #[arg(long, global = true, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Concurrent REST requests during setup
    #[arg(long, global = true, default_value_t = 64)]
    pub setup_concurrency: usize,
    /// Pause between the last connection and the first traffic step (the server holds no live
    /// events of a listen-only connection: this is only a margin for the connect burst to settle)
    #[arg(long, global = true, default_value_t = 300)]
    pub warmup_ms: u64,
}

/// The scenarios.
#[derive(Subcommand, Debug, Clone, serde::Serialize)]
pub enum Cmd {
    /// Rooms × members × senders, open-loop message rate stepped to the knee
    Fanout(scen::FanoutArgs),
    /// Max committed messages/s (closed loop, --window) or ack latency at open-loop rates
    Durable(scen::DurableArgs),
    /// Hold N authenticated idle connections; report server RSS and fds per connection
    Idle(scen::IdleArgs),
    /// Authenticated WebSocket upgrades per second
    ConnectStorm(scen::StormArgs),
    /// REST history pages per second
    History(scen::HistoryArgs),
    /// Mass reconnect with `sync`, verifying no gap
    Resume(scen::ResumeArgs),
    /// Mixed traffic for minutes: RSS, fds and latency over time, nothing lost or repeated
    Soak(scen::SoakArgs),
    /// Room-event mix: messages with edits and reactions; committed events/s by kind
    Events(scen::EventsArgs),
    /// GET /v1/rooms with unread and mention counts for a user in many rooms
    Unread(scen::UnreadArgs),
    /// GET /v1/search latency by query class in a room of a million Zipf-worded messages
    Search(scen::SearchArgs),
    /// Re-print a saved --json report and (with --svg) redraw its plot
    Render {
        /// report JSON written by --json
        #[arg(long)]
        from: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    stats::raise_nofile();
    if let Some(plan) = &cli.worker_plan {
        return worker::worker_main(plan, cli.worker_index, cli.worker_count);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, scen::run(cli))
}
