//! A histogram with Istio's default buckets, recorded with atomic adds only: no lock, no
//! allocation, so every request can record three of them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Istio's default bucket boundaries (`istio_request_duration_milliseconds`,
/// `istio_request_bytes`, `istio_response_bytes`).
pub const ISTIO_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Values are kept in thousandths of the unit so that 0.5 ms is a whole number and a
/// duration in microseconds needs no floating point on the request path.
const MILLI: u64 = 1000;

/// The boundaries in thousandths, checked against [`ISTIO_BUCKETS`] by a test.
const BOUNDS_MILLI: [u64; 19] = [
    500,
    1_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    600_000_000,
    1_800_000_000,
    3_600_000_000,
];

#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket, not cumulative; the last one is `+Inf`.
    counts: [AtomicU64; 20],
    /// Sum of the observed values, in thousandths.
    sum_milli: AtomicU64,
}

impl Histogram {
    /// Records a whole number of units (bytes).
    pub fn observe(&self, value: u64) {
        self.observe_milli(value.saturating_mul(MILLI));
    }

    /// Records a value given in thousandths of the unit (microseconds for a histogram in
    /// milliseconds).
    pub fn observe_milli(&self, value: u64) {
        let bucket = BOUNDS_MILLI
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(BOUNDS_MILLI.len());
        if let Some(c) = self.counts.get(bucket) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_milli.fetch_add(value, Ordering::Relaxed);
    }

    /// `(sum, count, [(upper bound, count in that bucket)])`, as prometheus-client encodes
    /// a histogram (it accumulates the bucket counts itself).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = ISTIO_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_milli.load(Ordering::Relaxed) as f64 / MILLI as f64;
        (sum, count, buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_match_istios_buckets() {
        for (milli, bound) in BOUNDS_MILLI.iter().zip(ISTIO_BUCKETS) {
            assert_eq!(*milli as f64, bound * 1000.0);
        }
    }

    #[test]
    fn values_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.observe_milli(300); // 0.3 ms
        h.observe_milli(500); // 0.5 ms: le="0.5" is inclusive
        h.observe(7);
        h.observe(4_000_000);
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 4);
        assert_eq!(sum, 0.3 + 0.5 + 7.0 + 4_000_000.0);
        assert_eq!(buckets[0], (0.5, 2));
        assert_eq!(buckets[3], (10.0, 1));
        assert_eq!(buckets[19], (f64::INFINITY, 1));
        assert_eq!(buckets.len(), 20);
    }
}
