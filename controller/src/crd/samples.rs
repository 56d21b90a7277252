//! Samples fields of the `Evaluation` kind (DESIGN.md "Samples"): epochs, seed, a paired
//! comparison, and the statistics the trusted side computes from a run's samples. Pure types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::bounds::MAX_NAME_LEN;
use crate::crd::shown_estimate;

/// Most epochs (`spec.epochs`): each sample runs this many times.
pub const MAX_EPOCHS: i32 = 100;
/// Largest `spec.seed`: 2^32 - 1, the range every common RNG seeding API accepts (NumPy's
/// legacy `np.random.seed` refuses larger values).
pub const MAX_SEED: i64 = u32::MAX as i64;

/// A paired comparison: exactly one of `evaluation` or `previous: true`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompareTo {
    /// Another Evaluation in the namespace; its latest finished run is the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAME_LEN))]
    pub evaluation: Option<String>,
    /// True: this Evaluation's previous run (the newest history entry) is the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<bool>,
}

/// A 95% confidence interval.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, JsonSchema)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

impl Interval {
    /// `mean ± half`: the symmetric interval every t interval is.
    pub fn around(mean: f64, half: f64) -> Self {
        Interval {
            low: mean - half,
            high: mean + half,
        }
    }
}

/// Statistics of a run's samples, computed by the trusted side from the validated file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SamplesStatus {
    /// Records (samples × epochs).
    pub count: i64,
    /// Distinct sample ids.
    pub ids: i64,
    /// Records with `passed: true`.
    pub passed: i64,
    /// Mean over ids of each id's mean score over its epochs.
    pub mean: f64,
    /// Standard error of `mean` over ids (clustered by id); absent with fewer than two ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<f64>,
    /// 95% interval of `mean` (Student's t over ids); absent with fewer than two ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci95: Option<Interval>,
    /// `sha256:<hex>` of the stored (compressed) bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Where the bundle is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

impl SamplesStatus {
    /// `0.81 ±0.02 (400 ids)`: the mean over ids and the half-width of its 95% interval, as
    /// tables show them.
    pub fn shown(&self) -> String {
        format!(
            "{} ({} ids)",
            shown_estimate(self.mean, self.ci95.as_ref()),
            self.ids
        )
    }
}

/// The run a comparison is against.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaselineRef {
    /// The baseline Evaluation (this one for `previous: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<String>,
    /// Run id of the baseline run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Digest of the baseline's samples bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A paired comparison of this run with its baseline, sample id by sample id.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComparisonStatus {
    /// The baseline run.
    pub baseline: BaselineRef,
    /// Sample ids present in both runs.
    pub pairs: i64,
    /// Mean over paired ids of this run's id mean minus the baseline's.
    pub delta: f64,
    /// Standard error of `delta`; absent with fewer than two pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<f64>,
    /// 95% interval of `delta` (paired t); absent with fewer than two pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci95: Option<Interval>,
}

/// What a history entry keeps of a run's samples, so `compareTo.previous` finds the bundle
/// after the spec changed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistorySamples {
    /// `status.samples.mean` of the run.
    pub mean: f64,
    /// `status.samples.ci95` of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci95: Option<Interval>,
    /// `status.samples.digest` of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `status.samples.uri` of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

impl From<&SamplesStatus> for HistorySamples {
    fn from(s: &SamplesStatus) -> Self {
        HistorySamples {
            mean: s.mean,
            ci95: s.ci95,
            digest: s.digest.clone(),
            uri: s.uri.clone(),
        }
    }
}
