//! Bounded waiting: the suite-wide time limits and the helpers that enforce them.

use std::future::Future;
use std::time::Duration;

use tokio::time::{timeout, Instant};

/// Upper bound for any single receive / request.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for the server to print `listening on ...`.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for a CLI run (a start-up failure may include a database connect timeout).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Run a future with [`RECV_TIMEOUT`], panicking with `what` if it does not finish.
pub async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match timeout(RECV_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {RECV_TIMEOUT:?}: {what}"),
    }
}

/// Polls `check` every 50 ms until it holds, for at most `t` (for state no event announces,
/// such as a row leaving a table).
pub async fn eventually<F, Fut>(what: &str, t: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + t;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {t:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `check` holds on every poll (every 100 ms) for `t` (a state that must not change, which no
/// event announces).
pub async fn stays<F, Fut>(what: &str, t: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        assert!(check().await, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
