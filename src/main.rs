//! `livechat` command line: serve | worker | migrate | token.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use livechat::config::Config;

// jemalloc: smaller and flatter RSS per idle connection than the system allocator (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "livechat", version, about = "Self-hosted real-time chat backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP + WebSocket server (applies pending migrations first).
    Serve {
        /// TOML configuration file (see config/livechat.toml).
        #[arg(long, env = "LIVECHAT_CONFIG")]
        config: Option<PathBuf>,
        /// Local development: generated secrets, printed with a sample token; loopback only.
        #[arg(long)]
        dev: bool,
    },
    /// Run notification workers only (no HTTP): they share the Redis job queue with the
    /// relays of `serve` (set `notify.in_process = false` there to leave delivery to these).
    Worker {
        /// TOML configuration file.
        #[arg(long, env = "LIVECHAT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Apply pending migrations and exit.
    Migrate {
        /// TOML configuration file.
        #[arg(long, env = "LIVECHAT_CONFIG")]
        config: Option<PathBuf>,
        /// Apply migrations up to this version only (`V<N>__...`); default: all.
        #[arg(long)]
        target: Option<u32>,
    },
    /// Print a signed client token for a user.
    Token {
        /// User id (the token's `sub`).
        #[arg(long)]
        user: i64,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// TOML configuration file.
        #[arg(long, env = "LIVECHAT_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("livechat: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn load(config: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let cfg = Config::load(config)?;
    livechat::cmd::logging::init_tracing(&cfg.log.level, &cfg.log.format).map_err(anyhow::Error::msg)?;
    Ok(cfg)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, dev } => {
            let cfg = load(config.as_deref())?;
            runtime()?.block_on(livechat::cmd::serve::serve(cfg, dev))?;
        }
        Command::Worker { config } => {
            let cfg = load(config.as_deref())?;
            runtime()?.block_on(livechat::cmd::worker::run_worker(cfg))?;
        }
        Command::Migrate { config, target } => {
            let cfg = load(config.as_deref())?;
            let url = cfg.database.url.clone().ok_or_else(|| anyhow::anyhow!("DATABASE_URL is not set"))?;
            let applied = runtime()?
                .block_on(livechat::store::migrate::run_to(&url, cfg.database.ca_file.as_deref(), target))
                .map_err(|e| anyhow::anyhow!("cannot migrate ({e}); is PostgreSQL running and DATABASE_URL right?"))?;
            println!("applied {applied} migration(s)");
        }
        Command::Token { user, ttl, config } => {
            let cfg = load(config.as_deref())?;
            let secret = cfg
                .auth
                .jwt_secret
                .clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| anyhow::anyhow!("LIVECHAT_JWT_SECRET is not set"))?;
            anyhow::ensure!(user > 0, "--user must be a positive user id");
            let auth = livechat::auth::Auth::new(&secret, "", cfg.auth.leeway_secs);
            let (token, _) = auth.issue(user, ttl).map_err(|e| anyhow::anyhow!(e.message))?;
            println!("{token}");
        }
    }
    Ok(())
}
