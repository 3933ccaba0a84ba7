//! systemd integration (`Type=notify`): READY=1 once listening, STOPPING=1 when the drain
//! starts, RELOADING=1 around a SIGHUP reload, and WATCHDOG=1 keep-alives at half of
//! `WatchdogSec=`. Every call is a no-op outside systemd (no `NOTIFY_SOCKET`), so `serve` and
//! `worker` call them unconditionally.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState]) {
    // A failed notification must not stop the server; systemd notices a missing READY or
    // watchdog ping on its own and acts on it.
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "Cannot notify systemd.");
    }
}

/// The service is up: the listener is bound and accepting.
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// The graceful drain started.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// A configuration reload starts (systemd expects READY=1 again when it is done).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Pings the systemd watchdog at half its interval until `stop`, when `WatchdogSec=` is set.
///
/// The pings come from a task on the same runtime as the connections: a wedged runtime
/// stops them and systemd restarts the service.
pub fn spawn_watchdog(stop: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else { return };
    let period = (interval / 2).max(Duration::from_millis(100));
    tracing::info!(interval_ms = interval.as_millis() as u64, "systemd watchdog enabled.");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
                _ = stop.cancelled() => return,
            }
        }
    });
}
