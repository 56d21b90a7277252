//! The EvaluationSuite controller: expands a suite into child Evaluations (`fanout`), keeps at
//! most `parallelism` of them unfinished, and aggregates their results (`plan`); `reconcile`
//! is the thin I/O shell, `controller` the watch wiring.

pub mod context;
pub mod controller;
pub mod fanout;
pub mod plan;
pub mod reconcile;
pub mod sources;

pub use context::Context;
pub use controller::run;
