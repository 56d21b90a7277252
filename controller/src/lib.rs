//! Crucible: a Kubernetes operator that runs AI evaluations declaratively in gVisor sandboxes.
//!
//! Modules named for what they do; the pure planning lives in [`evaluation::plan`],
//! [`evaluation::phase`], [`evaluation::pod`], [`evaluation::results`] and
//! [`evaluation::validate`]; I/O only in `observe`, `apply`, `report` and the binary.
#![deny(rust_2018_idioms)]

pub mod admission;
pub mod apiref;
pub mod cache;
pub mod canary;
pub mod cli;
pub mod config;
pub mod crd;
pub mod digest;
pub mod duration;
pub mod error;
pub mod evaluation;
pub mod events;
pub mod http;
pub mod labels;
pub mod leader;
pub mod liveness;
pub mod local;
pub mod metrics;
pub mod operator;
pub mod ownership;
pub mod quantity;
pub mod requeue;
pub mod runner;
pub mod selftest;
pub mod source;
pub mod ssa;
pub mod stop;
pub mod suite;
pub mod system_namespace;
pub mod telemetry;
pub mod watches;

#[cfg(test)]
pub mod fixtures;

pub use error::{Error, Result};
