//! Per-sample results (DESIGN.md "Samples", docs/samples.md): the samples fields of a spec, the
//! protocol a run writes and its streaming validator, and the statistics the trusted side
//! computes from it, and the frame the samples leave a pod in. Pure; the results store (`store/`) keeps the bundle.

pub mod protocol;
pub mod spec;
pub mod stats;
pub mod transport;

use crate::crd::samples::{ComparisonStatus, SamplesStatus};

/// What the trusted side learnt from a run's samples: their statistics and, for
/// `spec.compareTo`, the paired comparison with the baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct Collected {
    /// `status.samples`.
    pub samples: SamplesStatus,
    /// `status.comparison`.
    pub comparison: Option<ComparisonStatus>,
}
