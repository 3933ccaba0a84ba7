//! Scenarios: setup over REST, worker orchestration, aggregation.
//!
//! `fanout`, `durable`, `idle` and `connect-storm` run their connections in worker
//! processes (see `orchestrate`); `history`, `resume`, `soak`, `events`, `unread` and `search` run in
//! this process.

mod aggregate;
mod client;
mod connect_storm;
mod durable;
mod events;
mod fanout;
mod history;
mod idle;
mod orchestrate;
mod output;
mod resume;
mod search;
mod setup;
mod soak;
mod unread;

pub use connect_storm::StormArgs;
pub use durable::DurableArgs;
pub use events::EventsArgs;
pub use fanout::FanoutArgs;
pub use history::HistoryArgs;
pub use idle::IdleArgs;
pub use resume::ResumeArgs;
pub use search::SearchArgs;
pub use soak::SoakArgs;
pub use unread::UnreadArgs;

use crate::{Cli, Cmd};
use anyhow::{bail, Result};

/// Runs the scenario given on the command line, or re-renders a saved report.
pub async fn run(cli: Cli) -> Result<()> {
    let Some(cmd) = cli.cmd.clone() else {
        bail!("no scenario given; see --help");
    };
    let c = &cli.common;
    if !matches!(cmd, Cmd::Render { .. }) {
        setup::target(c)?;
    }
    match cmd {
        Cmd::Fanout(a) => fanout::run(&cli, a).await,
        Cmd::Durable(a) => durable::run(&cli, a).await,
        Cmd::Idle(a) => idle::run(&cli, a).await,
        Cmd::ConnectStorm(a) => connect_storm::run(&cli, a).await,
        Cmd::History(a) => history::run(&cli, a).await,
        Cmd::Resume(a) => resume::run(&cli, a).await,
        Cmd::Soak(a) => soak::run(&cli, a).await,
        Cmd::Events(a) => events::run(&cli, a).await,
        Cmd::Unread(a) => unread::run(&cli, a).await,
        Cmd::Search(a) => search::run(&cli, a).await,
        Cmd::Render { from } => output::render(c, &from),
    }
}
