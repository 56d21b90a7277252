//! Percentiles of timed samples, shared by the benchmarks.

use std::time::Duration;

/// Nearest-rank percentile `p` (0–100) of `samples`; zero when there are none.
pub fn percentile(samples: &[Duration], p: u32) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (usize::try_from(p).unwrap_or(100) * sorted.len()).div_ceil(100);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = (1..=10).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 50), Duration::from_millis(5));
        assert_eq!(percentile(&s, 90), Duration::from_millis(9));
        assert_eq!(percentile(&s, 100), Duration::from_millis(10));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
        assert_eq!(ms(Duration::from_micros(12_340)), "12.3 ms");
    }
}
