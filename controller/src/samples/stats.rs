//! Statistics of samples (docs/samples.md "Statistics"). Pure.
//!
//! - A run's score is the mean over sample ids of each id's mean over its epochs. Reducing the
//!   epochs of an id first and then treating the ids as the independent units is the
//!   cluster-robust standard error with ids as clusters (Miller, "Adding Error Bars to Evals",
//!   2024): repeated epochs of one item are correlated and must not count as more data.
//! - Intervals are Student's t intervals, mean ± t(0.975, n−1) · stderr, over n ids. They assume
//!   the ids are a random sample of a larger population of items and n is large enough for the
//!   mean to be roughly normal (scores bounded in [0, 1] get there at a few dozen ids); with
//!   fewer than two ids there is no interval.
//! - A comparison is the paired t interval of the per-id differences (this run minus the
//!   baseline) over the ids both runs have: the items' own difficulty cancels, so it finds
//!   differences an unpaired interval misses. It assumes the ids mean the same items in both
//!   runs and the differences are independent across ids.
//! - Sums are taken over sorted values, so the same samples give the same bits whatever order
//!   they were read in.

use std::collections::HashMap;

use crate::crd::samples::{Interval, SamplesStatus};
use crate::samples::protocol::{Aggregates, IdKey};

/// Mean, standard error and 95% interval of a set of values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Number of values.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Standard error of the mean; `None` with fewer than two values.
    pub stderr: Option<f64>,
    /// Student's t 95% interval of the mean; `None` with fewer than two values.
    pub ci95: Option<Interval>,
}

/// t(0.975, df) for df 1 to 30 (computed by numerical integration of the t density, matching
/// published tables to 9 digits).
const T975: [f64; 30] = [
    12.706204736,
    4.302652730,
    3.182446305,
    2.776445105,
    2.570581836,
    2.446911851,
    2.364624252,
    2.306004135,
    2.262157163,
    2.228138852,
    2.200985160,
    2.178812830,
    2.160368656,
    2.144786688,
    2.131449546,
    2.119905299,
    2.109815578,
    2.100922040,
    2.093024054,
    2.085963447,
    2.079613845,
    2.073873068,
    2.068657610,
    2.063898562,
    2.059538553,
    2.055529439,
    2.051830516,
    2.048407142,
    2.045229642,
    2.042272456,
];

/// The 0.975 quantile of Student's t with `df` degrees of freedom (`df` ≥ 1): a table up to
/// 30, beyond it the Cornish-Fisher expansion of Abramowitz & Stegun 26.7.5, whose error there
/// is below 1e-7.
pub fn t975(df: usize) -> f64 {
    if let Some(t) = df.checked_sub(1).and_then(|i| T975.get(i)) {
        return *t;
    }
    const Z: f64 = 1.959_963_984_540_054;
    let v = df as f64;
    let z2 = Z * Z;
    let g1 = (z2 + 1.0) * Z / 4.0;
    let g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * Z / 96.0;
    let g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * Z / 384.0;
    let g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * Z / 92160.0;
    Z + g1 / v + g2 / (v * v) + g3 / (v * v * v) + g4 / (v * v * v * v)
}

/// Mean, standard error (sample standard deviation / √n) and t interval of `values`; `None`
/// when empty.
pub fn estimate(mut values: Vec<f64>) -> Option<Estimate> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Some(Estimate {
            n,
            mean,
            stderr: None,
            ci95: None,
        });
    }
    let mut squares: Vec<f64> = values.iter().map(|x| (x - mean) * (x - mean)).collect();
    squares.sort_by(f64::total_cmp);
    let variance = squares.iter().sum::<f64>() / (n - 1) as f64;
    let stderr = (variance / n as f64).sqrt();
    let half = t975(n - 1) * stderr;
    Some(Estimate {
        n,
        mean,
        stderr: Some(stderr),
        ci95: Some(Interval::around(mean, half)),
    })
}

/// `status.samples` of a validated file (without digest and uri, which the store gives);
/// `None` when it had no samples.
pub fn summarize(aggregates: &Aggregates) -> Option<SamplesStatus> {
    let e = estimate(aggregates.ids.values().map(|a| a.mean()).collect())?;
    Some(SamplesStatus {
        count: i64::try_from(aggregates.records).unwrap_or(i64::MAX),
        ids: i64::try_from(e.n).unwrap_or(i64::MAX),
        passed: i64::try_from(aggregates.passed).unwrap_or(i64::MAX),
        mean: e.mean,
        stderr: e.stderr,
        ci95: e.ci95,
        digest: None,
        uri: None,
    })
}

/// Each id's mean over its epochs, the input of [`paired`].
pub fn id_means(aggregates: &Aggregates) -> HashMap<IdKey, f64> {
    aggregates.ids.iter().map(|(k, a)| (*k, a.mean())).collect()
}

/// The paired comparison of `this` with `baseline` over the ids both have: the estimate of
/// the mean difference (this minus baseline); `None` when no id is in both.
pub fn paired(this: &HashMap<IdKey, f64>, baseline: &HashMap<IdKey, f64>) -> Option<Estimate> {
    estimate(
        this.iter()
            .filter_map(|(id, x)| baseline.get(id).map(|b| x - b))
            .collect(),
    )
}

/// The unpaired difference of two runs' estimates (`this` minus `baseline`), for contrast with
/// [`paired`]: the difference of the means, stderr √(se₁² + se₂²), and Welch's t interval
/// (Welch–Satterthwaite degrees of freedom, rounded down). It ignores that the runs share
/// items, so it is wider than the paired interval whenever items differ in difficulty. `None`
/// when either estimate has no stderr (fewer than two ids).
pub fn unpaired(this: &Estimate, baseline: &Estimate) -> Option<Estimate> {
    let (va, vb) = (this.stderr?.powi(2), baseline.stderr?.powi(2));
    let (na, nb) = (this.n as f64 - 1.0, baseline.n as f64 - 1.0);
    let spread = va * va / na + vb * vb / nb;
    let df = if spread > 0.0 {
        (va + vb).powi(2) / spread
    } else {
        // Both runs constant: no spread to weigh; the pooled degrees of freedom.
        na + nb
    };
    let stderr = (va + vb).sqrt();
    let delta = this.mean - baseline.mean;
    // Truncation is the rounding down wanted; df is at least 1 (each run has two ids).
    let half = t975((df as usize).max(1)) * stderr;
    Some(Estimate {
        n: this.n + baseline.n,
        mean: delta,
        stderr: Some(stderr),
        ci95: Some(Interval::around(delta, half)),
    })
}

/// A suite's mean over its cases' scores, with its t interval (cases as the units).
pub fn over_cases(scores: &[f64]) -> Option<Estimate> {
    estimate(scores.to_vec())
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
