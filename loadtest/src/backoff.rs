//! Retrying a connection attempt with a pause between failures.

use std::future::Future;
use std::time::Duration;

/// Pauses between retries: starts at `first` and doubles after each pause, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Doubling pauses from `first` up to `max`.
    pub fn exponential(first: Duration, max: Duration) -> Self {
        Backoff { next: first, max }
    }

    /// The same pause every time.
    pub fn fixed(pause: Duration) -> Self {
        Backoff { next: pause, max: pause }
    }

    /// The pause to take now; the following one is twice as long (at most `max`).
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }
}

/// Runs `attempt` up to `attempts` times (at least once), pausing per `backoff` after each
/// failure but the last; `on_retry` sees every failure that is followed by another attempt.
/// Returns the first success with the number of failures before it, or the last failure.
pub async fn retry<T, E, Fut>(
    attempts: u64,
    mut backoff: Backoff,
    mut attempt: impl FnMut() -> Fut,
    mut on_retry: impl FnMut(&E),
) -> Result<(T, u64), E>
where
    Fut: Future<Output = Result<T, E>>,
{
    let mut failures = 0;
    loop {
        match attempt().await {
            Ok(v) => return Ok((v, failures)),
            Err(e) if failures + 1 >= attempts => return Err(e),
            Err(e) => {
                on_retry(&e);
                tokio::time::sleep(backoff.next_pause()).await;
                failures += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap() {
        let mut b = Backoff::exponential(Duration::from_millis(100), Duration::from_millis(2000));
        let ms: Vec<u128> = (0..7).map(|_| b.next_pause().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000]);
        let mut f = Backoff::fixed(Duration::from_millis(200));
        assert_eq!((f.next_pause(), f.next_pause()), (Duration::from_millis(200), Duration::from_millis(200)));
    }

    #[tokio::test]
    async fn retry_counts_failures_and_gives_up() {
        let b = Backoff::fixed(Duration::from_millis(1));
        let mut calls = 0;
        let mut seen = 0;
        let r: Result<(u32, u64), &str> = retry(
            3,
            b.clone(),
            || {
                calls += 1;
                let ok = calls == 2;
                async move {
                    if ok {
                        Ok(7)
                    } else {
                        Err("no")
                    }
                }
            },
            |_| seen += 1,
        )
        .await;
        assert_eq!((r, seen), (Ok((7, 1)), 1));
        let r: Result<(u32, u64), &str> = retry(3, b, || async { Err("no") }, |_| seen += 1).await;
        assert_eq!((r, seen), (Err("no"), 3));
    }
}
