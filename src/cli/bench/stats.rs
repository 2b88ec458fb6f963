//! Percentiles over every sample (a sorted `Vec`, exact: no histogram
//! bucketing).

/// Latency percentiles, milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    /// From sorted nanoseconds; `None` without samples.
    pub fn of_sorted(nanos: &[u64]) -> Option<Self> {
        let n = nanos.len();
        if n == 0 {
            return None;
        }
        // Nearest rank: the smallest sample with at least q·n samples at or
        // below it.
        let rank = |q: f64| {
            let r = (q * n as f64).ceil() as usize;
            nanos[r.clamp(1, n) - 1] as f64 / 1e6
        };
        let sum: u128 = nanos.iter().map(|&x| u128::from(x)).sum();
        Some(Self {
            samples: n as u64,
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            p999_ms: rank(0.999),
            max_ms: nanos[n - 1] as f64 / 1e6,
            mean_ms: sum as f64 / n as f64 / 1e6,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=1000).map(|ms| ms * 1_000_000).collect();
        let l = Latency::of_sorted(&v).expect("samples");
        assert_eq!(l.samples, 1000);
        assert_eq!(l.p50_ms, 500.0);
        assert_eq!(l.p99_ms, 990.0);
        assert_eq!(l.p999_ms, 999.0);
        assert_eq!(l.max_ms, 1000.0);
        assert_eq!(l.mean_ms, 500.5);
        assert_eq!(Latency::of_sorted(&[]), None);
        let one = Latency::of_sorted(&[2_000_000]).expect("one");
        assert_eq!((one.p50_ms, one.p999_ms), (2.0, 2.0));
    }
}
