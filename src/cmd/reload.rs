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

use std::path::PathBuf;
use std::sync::Arc;

use crate::chat::Chat;
use crate::config::Config;
use crate::error::ConfigError;
use crate::telemetry::names;

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
pub fn apply(chat: &Chat, source: Option<&std::path::Path>) -> Result<(), ReloadError> {
    let new = Config::load(source)?;
    super::logging::reload_filter(&new.log.level).map_err(ReloadError::LogFilter)?;
    let limits = &new.limits;
    tracing::info!(
        log_level = %new.log.level,
        messages_per_sec = limits.messages_per_sec,
        messages_burst = limits.messages_burst,
        connections_per_user = limits.connections_per_user,
        outbound_queue_frames = limits.outbound_queue_frames,
        "Reloaded configuration."
    );
    chat.set_limits(new.limits);
    Ok(())
}

/// Reloads on every SIGHUP for the life of the process.
pub fn spawn(chat: Arc<Chat>, source: Option<PathBuf>) {
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
            super::systemd::reloading();
            let result = match apply(&chat, source.as_deref()) {
                Ok(()) => "ok",
                Err(e) => {
                    tracing::warn!(error = %e, "Reload refused; the running configuration stays.");
                    "error"
                }
            };
            metrics::counter!(names::CONFIG_RELOADS_TOTAL, "result" => result).increment(1);
            super::systemd::ready();
        }
    });
}
