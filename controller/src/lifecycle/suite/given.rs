//! Go-aheads the suite controller wrote that its cache may not show yet. A plan made from a
//! cache that has not seen the last reconcile's go-ahead would count that child as still
//! waiting (holding no slot) and let another start: with children re-run by hand appearing
//! in any order, two reconciles in a row could start more than `parallelism` (the Job
//! controller's "expectations" guard the same race). Pure.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::crd::evaluation::Evaluation;
use crate::labels::{GO_AHEAD_ANNOTATION, RERUN_ANNOTATION};

/// One suite's go-aheads not yet seen in the cache: child name → the rerun value let start.
pub type GoAheads = BTreeMap<String, String>;

/// The go-ahead `child` carries when the suite applies it (none when cancelling).
pub fn go_ahead_of(child: &Evaluation) -> Option<(String, String)> {
    let value = child.annotations().get(GO_AHEAD_ANNOTATION)?;
    Some((child.name_any(), value.clone()))
}

/// The children as the plan must see them: a child the cache still shows waiting for a
/// go-ahead already given for its current rerun value carries it. Returns the go-aheads still
/// unseen: one the cache shows, one for a rerun value the child no longer asks for (re-run
/// again by hand) and one of a child gone are dropped.
pub fn with_given(mut children: Vec<Evaluation>, given: &GoAheads) -> (Vec<Evaluation>, GoAheads) {
    let mut unseen = GoAheads::new();
    for child in &mut children {
        let Some(value) = given.get(&child.name_any()) else {
            continue;
        };
        let annotations = child.annotations_mut();
        if annotations.get(RERUN_ANNOTATION) == Some(value)
            && annotations.get(GO_AHEAD_ANNOTATION) != Some(value)
        {
            annotations.insert(GO_AHEAD_ANNOTATION.to_string(), value.clone());
            unseen.insert(child.name_any(), value.clone());
        }
    }
    (children, unseen)
}

#[cfg(test)]
#[path = "given_tests.rs"]
mod tests;
