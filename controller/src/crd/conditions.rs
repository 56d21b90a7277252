//! Condition types, reasons and the pure `set_condition` used to write them.
//!
//! kstatus (Argo CD, Flux) reads `Reconciling`, `Ready` and `Stalled`; `Admitted`, `Running` and
//! `Passed` are Crucible's own. No API server access.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// kstatus: the controller is still working towards the desired state.
pub const RECONCILING: &str = "Reconciling";
/// kstatus: finished and passed.
pub const READY: &str = "Ready";
/// kstatus: finished without passing, or cannot make progress without a change.
pub const STALLED: &str = "Stalled";
/// The run got past the admission queue.
pub const ADMITTED: &str = "Admitted";
/// The evaluation container is running.
pub const RUNNING: &str = "Running";
/// The result passed.
pub const PASSED: &str = "Passed";
/// The one name of an outcome that did not pass (a run's valid result below its threshold, a
/// suite's pass rate below its threshold): status reason, `Ready`/`Stalled`/`Passed` reason and
/// Warning Event reason alike.
pub const NOT_PASSED: &str = "NotPassed";

/// Status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// "True".
    True,
    /// "False".
    False,
    /// "Unknown".
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(b: bool) -> Self {
        if b { Status::True } else { Status::False }
    }
}

/// Sets condition `type_` in `conditions`, keeping `lastTransitionTime` when the status did not
/// change so that repeated identical writes are no-ops on the API server.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Status,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: &Time,
) {
    let status = status.as_str();
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match previous.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation,
        last_transition_time,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn unchanged_status_keeps_the_transition_time() {
        let mut c = Vec::new();
        set_condition(
            &mut c,
            READY,
            Status::False,
            "Running",
            "a",
            Some(1),
            &t(10),
        );
        set_condition(
            &mut c,
            READY,
            Status::False,
            "Running",
            "b",
            Some(2),
            &t(20),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, t(10));
        assert_eq!(c[0].message, "b");
        assert_eq!(c[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_moves_the_transition_time() {
        let mut c = Vec::new();
        set_condition(&mut c, READY, Status::False, "Running", "", None, &t(10));
        set_condition(&mut c, READY, Status::True, "Passed", "", None, &t(20));
        assert_eq!(c[0].last_transition_time, t(20));
        assert_eq!(find(&c, READY).map(|c| c.status.as_str()), Some("True"));
    }
}
