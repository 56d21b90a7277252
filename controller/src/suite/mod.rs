//! The EvaluationSuite controller: expands a suite into child Evaluations, keeps at most
//! `parallelism` of them unfinished, and aggregates their results, as decided by the pure
//! [`lifecycle::suite`](crate::lifecycle::suite) (`plan` and `fanout`, which `crucible run` uses
//! too). A reconcile has the Evaluation controller's shape: `observe` → plan (pure) → `apply` →
//! `report`; `reconcile` is the thin shell that calls them, `controller` the watch wiring.

pub mod apply;
pub mod context;
pub mod controller;
pub mod observe;
pub mod reconcile;
pub mod report;
pub mod sources;

pub use context::Context;
pub use controller::run;
