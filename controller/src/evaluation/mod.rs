//! The Evaluation controller: watches Evaluations and the pods they own, and runs each
//! reconcile through observe → (admission gate) → plan → apply → report.

pub mod apply;
pub mod context;
pub mod controller;
pub mod credentials;
pub mod observe;
pub mod orphans;
pub mod reconcile;
pub mod report;
pub mod sandbox_policy;
pub mod workspace;

pub use context::Context;
pub use controller::run;

#[cfg(test)]
#[path = "canary_hold_tests.rs"]
mod canary_hold_tests;
