//! Logging: the global tracing subscriber (stderr; human-readable or JSON lines), its filter
//! swappable at run time (SIGHUP).

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// Swaps the log filter of the installed subscriber (SIGHUP); set once by [`init_tracing`].
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

fn parse_filter(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(filter).map_err(|e| format!("log filter {filter:?} is invalid: {e}"))
}

/// Installs the global tracing subscriber (stderr; human or JSON lines). The filter sits behind
/// a reload layer so SIGHUP can change it without a restart ([`reload_filter`]).
pub fn init_tracing(filter: &str, format: &str) -> Result<(), String> {
    use std::io::IsTerminal;
    let (filter, handle) = reload::Layer::new(parse_filter(filter)?);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let fmt = if format == "json" { fmt.json().boxed() } else { fmt.boxed() };
    // Already installed (tests call this more than once): keep the first.
    if tracing_subscriber::registry().with(filter).with(fmt).try_init().is_ok() {
        let _ = FILTER.set(handle);
    }
    Ok(())
}

/// Replaces the log filter (`log.level` / `LIVECHAT_LOG` syntax) of the running subscriber.
pub fn reload_filter(filter: &str) -> Result<(), String> {
    let new = parse_filter(filter)?;
    match FILTER.get() {
        Some(handle) => handle.reload(new).map_err(|e| format!("cannot swap the log filter: {e}")),
        None => Err("no reloadable log subscriber is installed".into()),
    }
}
