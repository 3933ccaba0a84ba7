//! Exponential backoff for retry loops (reconnects, failed commits, accept errors).

use std::time::Duration;

/// Doubling pause between attempts, from `base` up to `max`; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `base`, never above `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, current: base.min(max) }
    }

    /// The pause to take now; the next one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        d
    }

    /// The pause [`Backoff::next_delay`] would return, without advancing.
    pub fn peek(&self) -> Duration {
        self.current
    }

    /// Back to `base` (the operation succeeded).
    pub fn reset(&mut self) {
        self.current = self.base.min(self.max);
    }

    /// Sleeps for the next pause.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let got: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, vec![50, 100, 200, 300, 300]);
        b.reset();
        assert_eq!(b.peek(), Duration::from_millis(50));
    }
}
