//! Per-sample results (DESIGN.md "Samples", docs/samples.md): the samples fields of a spec, the
//! protocol a run writes and its streaming validator, and the statistics the trusted side
//! computes from it, and the frame the samples leave a pod in. Pure; the results store (`store/`) keeps the bundle.

pub mod protocol;
pub mod spec;
pub mod stats;
pub mod transport;
