//! Summary statistics over timing samples. Each sample is the mean time of one
//! iteration within a batch of back-to-back iterations.

use serde::{Deserialize, Serialize};

/// Statistics of per-iteration times, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub samples: usize,
    /// Iterations inside each timed sample.
    pub iters_per_sample: u32,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    /// 99th percentile (nearest rank; with fewer than 100 samples this is the maximum).
    pub p99_s: f64,
    pub mean_s: f64,
    /// Coefficient of variation: standard deviation / mean.
    pub cov: f64,
}

impl Stats {
    /// Summarises `samples` (seconds per iteration). Returns `None` for no samples or
    /// for samples that are not finite and positive.
    pub fn from_samples(samples: &[f64], iters_per_sample: u32) -> Option<Stats> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
        };
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Some(Stats {
            samples: n,
            iters_per_sample,
            median_s: median,
            min_s: sorted[0],
            max_s: sorted[n - 1],
            p99_s: percentile_nearest_rank(&sorted, 99.0),
            mean_s: mean,
            cov: var.sqrt() / mean,
        })
    }
}

/// Nearest-rank percentile of sorted data (as nccl-tests -I reports p99).
pub fn percentile_nearest_rank(sorted: &[f64], pct: f64) -> f64 {
    let n = sorted.len();
    let rank = ((pct / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_summary() {
        let s = Stats::from_samples(&[4.0, 1.0, 3.0, 2.0, 5.0], 10).unwrap();
        assert_eq!(s.median_s, 3.0);
        assert_eq!(s.min_s, 1.0);
        assert_eq!(s.max_s, 5.0);
        assert_eq!(s.mean_s, 3.0);
        assert_eq!(s.p99_s, 5.0);
        // sample std dev of 1..5 = sqrt(2.5)
        assert!((s.cov - 2.5f64.sqrt() / 3.0).abs() < 1e-12);
        assert_eq!(s.iters_per_sample, 10);
    }

    #[test]
    fn even_count_median_and_p99() {
        let data: Vec<f64> = (1..=200).map(f64::from).collect();
        let s = Stats::from_samples(&data, 1).unwrap();
        assert_eq!(s.median_s, 100.5);
        assert_eq!(s.p99_s, 198.0);
        let sorted: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile_nearest_rank(&sorted, 50.0), 5.0);
        assert_eq!(percentile_nearest_rank(&sorted, 99.0), 10.0);
    }

    #[test]
    fn rejects_empty_and_invalid() {
        assert!(Stats::from_samples(&[], 1).is_none());
        assert!(Stats::from_samples(&[1.0, f64::NAN], 1).is_none());
        assert!(Stats::from_samples(&[1.0, 0.0], 1).is_none());
        let one = Stats::from_samples(&[2.0], 1).unwrap();
        assert_eq!(one.cov, 0.0);
    }
}
