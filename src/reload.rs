//! SIGHUP: re-reads the configuration (the `--config` file and the environment, validated as
//! at start-up) and applies what can change without a restart:
//!
//! - the log filter (`log.level`; `LIVECHAT_LOG`, if set, still wins over the file), and
//! - the `[limits]` section, for connections opened after the reload (open ones keep theirs).
//!
//! Everything else (listen address, database, Redis, secrets, `log.format`, storage, and
//! `limits.header_timeout_secs`, which the accept loop fixed at start-up) needs a restart;
//! a reload that changes only those is logged and otherwise ignored. An invalid file is
//! refused as a whole: the running configuration stays.

use std::sync::Arc;

use crate::app::App;
use crate::config::Config;
use crate::error::ConfigError;

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file or the environment does not make a valid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The new log filter does not parse.
    #[error("{0}")]
    LogFilter(String),
}

/// Applies a reload now: the configuration is re-read from where it came from at start-up.
pub fn apply(app: &App) -> Result<(), ReloadError> {
    let new = Config::load(app.config.source.as_deref())?;
    crate::telemetry::reload_filter(&new.log.level).map_err(ReloadError::LogFilter)?;
    let limits = &new.limits;
    tracing::info!(
        log_level = %new.log.level,
        messages_per_sec = limits.messages_per_sec,
        messages_burst = limits.messages_burst,
        connections_per_user = limits.connections_per_user,
        outbound_queue_frames = limits.outbound_queue_frames,
        "Reloaded configuration."
    );
    app.set_limits(new.limits);
    Ok(())
}

/// Reloads on every SIGHUP for the life of the process.
pub fn spawn(app: Arc<App>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot install the SIGHUP handler; reload needs a restart.");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            crate::systemd::reloading();
            let result = match apply(&app) {
                Ok(()) => "ok",
                Err(e) => {
                    tracing::warn!(error = %e, "Reload refused; the running configuration stays.");
                    "error"
                }
            };
            metrics::counter!("livechat_config_reloads_total", "result" => result).increment(1);
            crate::systemd::ready();
        }
    });
}
