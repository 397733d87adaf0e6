//! Latency recording: HdrHistograms in microseconds, sharded so that subscriber tasks on
//! several threads rarely meet on a lock, one set per target so a cluster run shows each node.
//!
//! Latency is always measured from the *scheduled* send time carried in the payload, never from
//! when the publisher actually got to send: a stalled server then shows its stall in every event
//! that should have gone out meanwhile (coordinated omission corrected).

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency tracked: one hour, in microseconds (larger values count as one hour).
pub const MAX_US: u64 = 3_600_000_000;

const SHARDS: usize = 8;

/// A histogram that covers 1 µs to an hour with three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("fixed histogram bounds are valid")
}

/// Shared latency recorder for one run.
pub struct Recorder {
    /// `targets × SHARDS` histograms.
    shards: Vec<Mutex<Histogram<u64>>>,
    targets: usize,
}

impl Recorder {
    /// A recorder with one set of histograms per target.
    pub fn new(targets: usize) -> Recorder {
        let targets = targets.max(1);
        Recorder {
            shards: (0..targets * SHARDS)
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
            targets,
        }
    }

    /// Records one latency for `target`; `key` (a subscriber number) picks the shard.
    pub fn record(&self, target: usize, key: usize, latency_us: u64) {
        let index = (target % self.targets) * SHARDS + key % SHARDS;
        if let Ok(mut histogram) = self.shards[index].lock() {
            histogram.saturating_record(latency_us.clamp(1, MAX_US));
        }
    }

    /// All histograms of `target` merged.
    pub fn target(&self, target: usize) -> Histogram<u64> {
        let mut merged = new_histogram();
        for shard in &self.shards[target * SHARDS..(target + 1) * SHARDS] {
            if let Ok(histogram) = shard.lock() {
                let _ = merged.add(&*histogram);
            }
        }
        merged
    }

    /// Every target's histograms merged.
    pub fn total(&self) -> Histogram<u64> {
        let mut merged = new_histogram();
        for target in 0..self.targets {
            let _ = merged.add(self.target(target));
        }
        merged
    }

    /// Forgets everything recorded so far (after a warm-up).
    pub fn reset(&self) {
        for shard in &self.shards {
            if let Ok(mut histogram) = shard.lock() {
                histogram.reset();
            }
        }
    }
}

/// The percentiles a report shows, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// How many latencies were recorded.
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Summary {
    /// The percentiles of `histogram` (microseconds) in milliseconds; all zero when empty.
    pub fn of(histogram: &Histogram<u64>) -> Summary {
        if histogram.is_empty() {
            return Summary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Summary {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_across_shards_and_targets() {
        let recorder = Recorder::new(2);
        for i in 1..=1000u64 {
            recorder.record((i % 2) as usize, i as usize, i * 1000);
        }
        let total = Summary::of(&recorder.total());
        assert_eq!(total.count, 1000);
        assert!((total.p50_ms - 500.0).abs() <= 1.0, "{total:?}");
        assert!((total.p99_ms - 990.0).abs() <= 1.0, "{total:?}");
        assert!((total.max_ms - 1000.0).abs() <= 1.0, "{total:?}");
        assert_eq!(Summary::of(&recorder.target(1)).count, 500);
    }

    #[test]
    fn out_of_range_values_are_clamped_and_reset_clears() {
        let recorder = Recorder::new(1);
        recorder.record(0, 0, 0);
        recorder.record(0, 1, u64::MAX);
        let summary = Summary::of(&recorder.total());
        assert_eq!(summary.count, 2);
        assert!(summary.max_ms >= (MAX_US / 1000) as f64 * 0.99);
        recorder.reset();
        assert_eq!(Summary::of(&recorder.total()), Summary::default());
    }
}
