//! Crucible: a Kubernetes operator that runs AI evaluations declaratively in gVisor sandboxes.
//!
//! Modules named for what they do, in layers (docs/development.md): leaves (`config`, `crd`,
//! `labels`, …); the pure model of one run ([`run`]); admission, git sources and caches; the
//! controllers ([`evaluation`], [`suite`], [`canary`]) and `crucible run` ([`local`]); and the
//! composition root ([`operator`], the binary).
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
pub mod files;
pub mod gateway;
pub mod http;
pub mod labels;
pub mod leader;
pub mod lifecycle;
pub mod local;
pub mod metrics;
pub mod model_endpoint;
pub mod network_gate;
pub mod operator;
pub mod ownership;
pub mod quantity;
pub mod reading;
pub mod requeue;
pub mod run;
pub mod runner;
pub mod samples;
pub mod selftest;
pub mod source;
pub mod ssa;
pub mod stop;
pub mod store;
pub mod suite;
pub mod system_namespace;
pub mod table;
pub mod telemetry;
pub mod transfer;
pub mod watches;

#[cfg(test)]
pub mod fixtures;

pub use error::{Error, Result};
