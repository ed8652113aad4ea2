//! A histogram of durations that costs two relaxed atomic additions per
//! observation (prometheus-client's own takes a lock), encoded through
//! prometheus-client like its built-in metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of request latencies, in seconds: from 100 µs (a cached
/// key check) to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Upper bounds of usage-flush lags, in seconds (the flush runs every second).
pub const LAG_BUCKETS: &[f64] = &[0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Upper bounds of usage-flush batch sizes (keys written by one flush).
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 10000.0,
];

/// Durations (observed in nanoseconds, shown in seconds) or plain sizes
/// (observed as units). Clones share the counts.
#[derive(Debug, Clone)]
pub struct AtomicHistogram(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Upper bounds in the unit of observation (nanoseconds or units).
    bounds: Box<[u64]>,
    /// The same bounds as shown (seconds or units).
    shown: Box<[f64]>,
    /// Per bucket (not cumulative), the last one for everything above the bounds.
    counts: Box<[AtomicU64]>,
    /// Sum of the observations, in the unit of observation.
    sum: AtomicU64,
    /// What one unit of observation is in the shown unit.
    scale: f64,
}

impl AtomicHistogram {
    /// A histogram of durations with `bounds` in seconds.
    pub fn seconds(bounds: &[f64]) -> Self {
        Self::with_scale(bounds, 1e9)
    }

    /// A histogram of plain sizes with `bounds` in units.
    pub fn units(bounds: &[f64]) -> Self {
        Self::with_scale(bounds, 1.0)
    }

    fn with_scale(bounds: &[f64], per_shown_unit: f64) -> Self {
        Self(Arc::new(Inner {
            bounds: bounds
                .iter()
                .map(|b| (b * per_shown_unit).round() as u64)
                .collect(),
            shown: bounds.into(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale: 1.0 / per_shown_unit,
        }))
    }

    /// Counts one duration (of a histogram made with [`AtomicHistogram::seconds`]).
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Counts one observation, in the unit of observation.
    pub fn observe(&self, value: u64) {
        let inner = &*self.0;
        let bucket = inner
            .bounds
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(inner.bounds.len());
        inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        inner.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// How many observations were made.
    pub fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Writes the histogram with `encoder`.
    pub(crate) fn encode_with(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &*self.0;
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(inner.counts.len());
        let mut count = 0;
        for (i, c) in inner.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            buckets.push((inner.shown.get(i).copied().unwrap_or(f64::MAX), n));
        }
        let sum = inner.sum.load(Ordering::Relaxed) as f64 * inner.scale;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.encode_with(encoder)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = AtomicHistogram::seconds(&[0.001, 0.01]);
        h.observe_duration(Duration::from_micros(500));
        h.observe_duration(Duration::from_millis(1));
        h.observe_duration(Duration::from_millis(5));
        h.observe_duration(Duration::from_secs(3));
        let counts: Vec<u64> =
            h.0.counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
        assert_eq!(counts, vec![2, 1, 1]);
        assert_eq!(h.count(), 4);
        assert_eq!(h.0.sum.load(Ordering::Relaxed), 3_006_500_000);
    }
}
