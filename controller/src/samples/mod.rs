//! Per-sample results (DESIGN.md "Samples", docs/samples.md): the samples fields of a spec, the
//! protocol a run writes and its streaming validator, and the statistics the trusted side
//! computes from it. Pure; the results store (`store/`) keeps the bundle.

pub mod protocol;
pub mod spec;
pub mod stats;
