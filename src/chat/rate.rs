//! Token buckets for per-connection rate limits.

use std::time::Instant;

/// Token bucket: `rate` tokens per second up to `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self { tokens: burst as f64, rate: rate as f64, burst: burst as f64, last: Instant::now() }
    }

    /// `per_minute` tokens a minute, bursting to as many.
    pub fn per_minute(per_minute: u32) -> Self {
        let n = per_minute.max(1) as f64;
        Self { tokens: n, rate: n / 60.0, burst: n, last: Instant::now() }
    }

    /// Takes a token, or says how many milliseconds until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), u64> {
        self.take_n(now, 1)
    }

    /// Takes `n` tokens at once (a `sync` costs one per room), or says how many milliseconds
    /// until they are available. More than the burst is never available: it waits a full burst.
    pub fn take_n(&mut self, now: Instant, n: u32) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        let need = f64::from(n.max(1)).min(self.burst.max(1.0));
        if self.tokens >= need {
            self.tokens -= need;
            Ok(())
        } else {
            Err((((need - self.tokens) / self.rate) * 1000.0).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 2);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).unwrap_err();
        assert!(wait > 0 && wait <= 500, "{wait}");
        assert!(b.take(t0 + Duration::from_millis(600)).is_ok());
    }

    #[test]
    fn several_tokens_at_once() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 20);
        assert!(b.take_n(t0, 15).is_ok());
        let wait = b.take_n(t0, 10).unwrap_err();
        assert!((500..=600).contains(&wait), "5 left, 5 more at 10/s: {wait}");
        assert!(b.take_n(t0 + Duration::from_secs(10), 500).is_ok(), "capped at the burst");
    }
}
