//! The command line's subcommands and what only a process needs: the composition root
//! ([`serve`]), the worker process ([`worker`]), logging, SIGHUP reload, systemd notifications
//! and signals. The top of the layer table: nothing imports it.

pub mod logging;
pub mod reload;
pub mod serve;
pub mod systemd;
pub mod worker;

/// Waits for SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("Cannot install signal handlers; stop with SIGKILL.");
            std::future::pending::<()>().await
        }
    }
}
