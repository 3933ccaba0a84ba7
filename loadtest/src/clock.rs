//! Wall-clock helpers. Every timestamp the harness exchanges between processes (the `go`
//! time, the send time inside message content, deadlines) is µs since the Unix epoch, so the
//! parent and all workers agree on it.

use std::time::Duration;

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64
}

/// Whole seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    now_us() / 1_000_000
}

/// Sleeps until the wall-clock time `t` (µs since the epoch); returns at once if it has passed.
pub async fn sleep_until_us(t: u64) {
    let now = now_us();
    if t > now {
        tokio::time::sleep(Duration::from_micros(t - now)).await;
    }
}
