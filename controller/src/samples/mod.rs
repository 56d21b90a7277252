//! Per-sample results (DESIGN.md "Samples", docs/samples.md): the protocol a run writes, the
//! statistics the trusted side computes from it, and the results store that keeps the bundle.

pub mod protocol;
pub mod spec;
pub mod stats;
pub mod store;
