//! The real-cluster tier: Crucible against the local Kubernetes + gVisor cluster.
//!
//! Run with `scripts/test.sh` (which starts the cluster and the controller), or by hand:
//! `KUBECONFIG=... cargo test -p crucible-e2e --features e2e` with a controller running.

mod battery;
mod dashboard;
mod examples;
mod fairness;
mod git;
mod hostile;
mod lifecycle;
mod ownership;
mod quota;
mod samples;
mod sandbox;
mod suite_fanout;
