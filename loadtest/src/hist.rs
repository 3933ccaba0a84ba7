//! Latency histograms (µs) and their wire form between worker and parent.

use hdrhistogram::Histogram;

/// Largest recordable value: 100 s in µs.
pub const MAX_US: u64 = 100_000_000;

/// Histogram in µs, 1 µs .. 100 s, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).unwrap()
}

/// The recorded (value, count) pairs of `h`, for the worker's JSON result line.
pub fn hist_to_vec(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
}

/// Adds (value, count) pairs from [`hist_to_vec`] to `h`.
pub fn hist_add(h: &mut Histogram<u64>, v: &[(u64, u64)]) {
    for &(val, n) in v {
        let _ = h.record_n(val.clamp(1, MAX_US), n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_through_pairs() {
        let mut h = new_hist();
        h.record(5).unwrap();
        h.record_n(1_000, 3).unwrap();
        let mut back = new_hist();
        hist_add(&mut back, &hist_to_vec(&h));
        assert_eq!((back.len(), back.max(), back.min()), (4, h.max(), 5));
    }
}
