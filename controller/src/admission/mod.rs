//! Admission: whether a run may start now, decided in one place.
//!
//! - [`ledger`]: the pure ledger of admitted runs and the per-namespace queues, and the one
//!   [`Decision`] type.
//! - [`candidate`]: what an Evaluation asks for and the limits that apply to it. Pure.
//! - [`gate`]: the ledger behind a mutex, shared by every reconcile: the only caller of
//!   [`Ledger::decide`].
//! - [`holds`]: what holds a run its quota would admit (emergency stop, unverified sandbox),
//!   in order.
//! - [`restore`]: rebuilds the ledger from the cluster before the controller acts.
//! - [`quota_status`]: writes `EvaluationQuota.status` from the ledger.
//! - [`ranked`]: the queues' ordered set, with positions in O(log n).

pub mod candidate;
pub mod gate;
pub mod holds;
pub mod ledger;
pub mod quota_status;
pub mod ranked;
pub mod restore;

pub use gate::Gate;
pub use ledger::{Candidate, Decision, Ledger, QueueKey, Usage};
