//! Conditions (kstatus and the domain conditions) and the Event of each phase, from the
//! status. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::conditions::{self, NOT_PASSED, Status};
use crate::crd::evaluation::{EvaluationStatus, Phase};

use super::*;

/// Writes every condition from the status (kstatus + domain conditions).
///
/// NB: every message is non-empty: a 1.20 API server turns `""` into `null` under server-side
/// apply, and `message` is a required string of `metav1.Condition`.
pub(crate) fn set_conditions(status: &mut EvaluationStatus, generation: Option<i64>, now: &Time) {
    use conditions::{ADMITTED, PASSED, READY, RECONCILING, RUNNING, STALLED};
    let phase = status.phase.unwrap_or(Phase::Queued);
    let reason = status
        .reason
        .clone()
        .unwrap_or_else(|| phase.as_str().to_string());
    let outcome = status
        .message
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("the run is {}", phase.as_str()));
    let passed = status.result.as_ref().map(|r| r.passed);
    let finished = phase.is_finished();
    // A run that passed but ended otherwise (BudgetExceeded keeps its result) is not Ready.
    let ready = phase == Phase::Succeeded && passed == Some(true);
    let stalled = finished && !ready;
    // Admitted only if an attempt was started: a run that ended while queued (queueTimeout,
    // cancelled, emergency stop, over a controller-wide limit) never was.
    let admitted = phase != Phase::Queued
        && status.attempts.is_some()
        && !matches!(reason.as_str(), "InvalidSpec" | "SandboxUnavailable");
    let queue_message = status
        .queue
        .as_ref()
        .and_then(|q| q.reason.clone())
        .unwrap_or_else(|| format!("not admitted: {reason}"));
    let in_phase = format!("the run is {}", phase.as_str());
    let c = &mut status.conditions;
    let mut set = |t: &str, s: Status, r: &str, m: &str| {
        conditions::set_condition(c, t, s, r, m, generation, now)
    };
    set(RECONCILING, (!finished).into(), phase.as_str(), &in_phase);
    let ready_reason = if ready {
        "Passed"
    } else {
        stalled_reason(phase, &reason)
    };
    set(READY, ready.into(), ready_reason, &outcome);
    let stalled_why = if stalled {
        stalled_reason(phase, &reason)
    } else {
        phase.as_str()
    };
    set(STALLED, stalled.into(), stalled_why, &outcome);
    if admitted {
        set(ADMITTED, Status::True, "Admitted", "admitted to run");
    } else {
        set(
            ADMITTED,
            Status::False,
            queue_reason(&reason, phase),
            &queue_message,
        );
    }
    set(
        RUNNING,
        (phase == Phase::Running).into(),
        phase.as_str(),
        &in_phase,
    );
    let (passed_status, passed_reason) = match passed {
        Some(true) => (Status::True, "Passed"),
        Some(false) => (Status::False, NOT_PASSED),
        None if finished => (Status::False, "NoResult"),
        None => (Status::Unknown, "NotFinished"),
    };
    set(PASSED, passed_status, passed_reason, &outcome);
}

/// Reason of `Stalled`/`Ready=False` for a finished run that did not pass.
fn stalled_reason(phase: Phase, reason: &str) -> &str {
    match phase {
        Phase::Succeeded => NOT_PASSED,
        Phase::Failed | Phase::TimedOut | Phase::Cancelled => reason,
        _ => phase.as_str(),
    }
}

fn queue_reason(reason: &str, phase: Phase) -> &str {
    if phase == Phase::Queued {
        "Queued"
    } else {
        reason
    }
}

/// The Event of the phase the run just entered.
pub(super) fn transition_note(status: &EvaluationStatus) -> Option<Note> {
    let message = status.message.clone().unwrap_or_default();
    let (severity, reason, message) = match status.phase? {
        Phase::Queued => (
            Severity::Normal,
            "Queued",
            status
                .queue
                .as_ref()
                .and_then(|q| q.reason.clone())
                .unwrap_or_default(),
        ),
        // A retry's attempt is announced by its Retrying Event.
        Phase::Pending if status.attempts.unwrap_or(1) > 1 => return None,
        Phase::Pending => {
            let pod = status.pod_name.as_deref().unwrap_or("");
            match &status.sandbox {
                Some(sandbox) if !sandbox.sandboxed => (
                    Severity::Warning,
                    "Admitted",
                    format!(
                        "created pod {pod} WITHOUT gVisor: the RuntimeClass is missing and the \
                         controller allows unsandboxed runs"
                    ),
                ),
                _ => (Severity::Normal, "Admitted", format!("created pod {pod}")),
            }
        }
        Phase::Running => (
            Severity::Normal,
            "Started",
            format!(
                "pod {} is running",
                status.pod_name.as_deref().unwrap_or("")
            ),
        ),
        // A run that did not pass is a Warning under the name its status gives it, so
        // `--field-selector type=Warning` lists it.
        Phase::Succeeded if !status.passed() => (Severity::Warning, NOT_PASSED, message),
        Phase::Succeeded => (Severity::Normal, "Succeeded", message),
        Phase::Failed => match status.reason.as_deref() {
            Some("InvalidSpec") => (Severity::Warning, "InvalidSpec", message),
            Some("SandboxUnavailable") => (Severity::Warning, "SandboxUnavailable", message),
            _ => (Severity::Warning, "Failed", message),
        },
        Phase::TimedOut => (Severity::Warning, "TimedOut", message),
        Phase::Cancelled => (Severity::Normal, "Cancelled", message),
    };
    Some(Note {
        severity,
        reason,
        message,
    })
}
