//! Plans one reconcile of an EvaluationSuite: which children to create or update (within
//! `parallelism`, stopping at `maxFailures`), which to cancel or delete, and the aggregated
//! status. Pure.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource, ResourceExt};

use crate::crd::conditions::{self, Status};
use crate::crd::evaluation::{Evaluation, EvaluationSpec, EvaluationStatus, Phase, Source};
use crate::crd::suite::{CaseStatus, EvaluationSuite, EvaluationSuiteStatus, SuitePhase};
use crate::crd::{shown_estimate, shown_number};
use crate::events::{Note, Severity};
use crate::labels::{GO_AHEAD_ANNOTATION, RERUN_ANNOTATION, SUITE_LABEL, SUITE_RERUN_ANNOTATION};
use crate::run::state;
use crate::run::workspace::shared_inline_name;
use crate::samples::stats;
pub mod fanout;
pub mod given;

use fanout::DesiredCase;

/// Default `parallelism`.
pub const DEFAULT_PARALLELISM: i32 = 4;
/// Default `passThreshold` of a suite: every case must pass.
pub const DEFAULT_SUITE_PASS_THRESHOLD: f64 = 1.0;
/// Most rows in `status.cases`, to bound the object's size.
pub const MAX_CASE_ROWS: usize = 200;

/// Everything one suite reconcile does.
#[derive(Clone, Debug)]
pub struct SuitePlan {
    /// Children to server-side apply (create, update, or cancel).
    pub apply: Vec<Evaluation>,
    /// Children to delete (cases no longer in the suite).
    pub delete: Vec<String>,
    /// The status to write.
    pub status: EvaluationSuiteStatus,
    /// Events to publish (on a change of the problem the status reports).
    pub notes: Vec<Note>,
    /// After a spec change: the names of the shared workspace ConfigMaps the suite's children
    /// use now; the suite's others are of no use any more (the suite controller prunes them).
    pub keep_sources: Option<BTreeSet<String>>,
}

/// A Warning Event when the status reports a new problem (its message changed).
fn problem_note(
    suite: &EvaluationSuite,
    status: &EvaluationSuiteStatus,
    reason: &'static str,
) -> Vec<Note> {
    let before = suite.status.as_ref().and_then(|s| s.message.as_ref());
    match &status.message {
        Some(message) if before != Some(message) => vec![Note {
            severity: Severity::Warning,
            reason,
            message: message.clone(),
        }],
        _ => vec![],
    }
}

/// The plan after the API server refused to create children because Evaluations of those
/// names already exist and do not belong to the suite (they are never taken over): the
/// status says which, with a Warning Event.
pub fn with_name_conflicts(
    suite: &EvaluationSuite,
    mut plan: SuitePlan,
    names: &[String],
) -> SuitePlan {
    if names.is_empty() {
        return plan;
    }
    plan.status.message = Some(format!(
        "NameConflict: Evaluation {} already exists and does not belong to this suite; \
         rename the case or remove that Evaluation",
        names.join(", ")
    ));
    plan.notes
        .extend(problem_note(suite, &plan.status, "NameConflict"));
    plan
}

/// Name of the child Evaluation of `case`.
pub fn case_evaluation_name(suite: &str, case: &str) -> String {
    format!("{suite}-{case}")
}

/// The run part of a spec, for comparing a child with what the suite wants.
fn run_spec(spec: &EvaluationSpec) -> EvaluationSpec {
    EvaluationSpec {
        cancel: None,
        ..spec.clone()
    }
}

/// The `crucible.dev/rerun` value of a suite (which every child it re-runs carries) or a child.
fn rerun_of(object: &impl Resource) -> Option<&String> {
    annotation(object, RERUN_ANNOTATION)
}

fn annotation<'a>(object: &'a impl Resource, key: &str) -> Option<&'a String> {
    object.meta().annotations.as_ref()?.get(key)
}

/// The suite's rerun value `child` has answered: its record, or for a child written before the
/// record existed, its own rerun value.
fn suite_rerun_of(child: &Evaluation) -> Option<&String> {
    annotation(child, SUITE_RERUN_ANNOTATION).or_else(|| rerun_of(child))
}

/// Whether `child` runs what the suite wants now: its spec, and, once the suite was re-run, the
/// suite's rerun value (a suite without one leaves the children's own reruns alone).
fn is_current(suite: &EvaluationSuite, child: &Evaluation, case: &DesiredCase) -> bool {
    let rerun = rerun_of(suite);
    run_spec(&child.spec) == case.spec && (rerun.is_none() || suite_rerun_of(child) == rerun)
}

/// Whether the child's run is over. A finished status that answers another rerun value than
/// the child's annotation is the old run's: the new one has not been started yet.
fn finished(ev: &Evaluation) -> bool {
    ev.status.as_ref().is_some_and(|s| {
        s.phase.is_some_and(Phase::is_finished) && s.rerun.as_ref() == rerun_of(ev)
    })
}

/// Whether the child was re-run by hand and waits for a free slot: its controller holds the
/// run until the suite's go-ahead names it ([`state::awaits_suite`]).
fn awaits_go_ahead(ev: &Evaluation) -> bool {
    state::awaits_suite(ev).is_some()
}

fn passed(ev: &Evaluation) -> bool {
    ev.status.as_ref().is_some_and(EvaluationStatus::passed)
}

/// Plans the suite given its current children (owned by it, any order).
pub fn plan(suite: &EvaluationSuite, children: &[Evaluation], now: &Time) -> SuitePlan {
    let name = suite.name_any();
    let generation = suite.meta().generation;
    let existing: BTreeMap<String, &Evaluation> =
        children.iter().map(|c| (c.name_any(), c)).collect();
    let desired = match fanout::check_suite_name(&name)
        .map_err(|problem| vec![problem])
        .and_then(|()| fanout::desired_cases(&suite.spec))
    {
        Ok(d) => d,
        Err(problems) => {
            let mut status = EvaluationSuiteStatus {
                phase: Some(SuitePhase::Failed),
                message: Some(format!("InvalidSpec: {}", problems.join("; "))),
                conditions: suite.status.clone().unwrap_or_default().conditions,
                ..Default::default()
            };
            set_conditions(&mut status, "InvalidSpec", generation, now);
            status.observed_generation = generation;
            let notes = problem_note(suite, &status, "InvalidSpec");
            return SuitePlan {
                apply: vec![],
                delete: vec![],
                status,
                notes,
                keep_sources: None,
            };
        }
    };
    let cancel = suite.spec.cancel == Some(true);
    let parallelism =
        usize::try_from(suite.spec.parallelism.unwrap_or(DEFAULT_PARALLELISM).max(1)).unwrap_or(1);
    // Children whose spec is what the suite wants now.
    let current = |case: &DesiredCase| {
        existing
            .get(&case_evaluation_name(&name, &case.name))
            .copied()
            .filter(|c| is_current(suite, c, case))
    };
    let failures = desired
        .iter()
        .filter_map(current)
        .filter(|c| finished(c) && !passed(c))
        .count();
    let max_failures = suite
        .spec
        .max_failures
        .and_then(|m| usize::try_from(m).ok());
    let stop_new = cancel || max_failures.is_some_and(|m| failures >= m);
    let mut apply = Vec::new();
    // Unfinished children hold a slot whether or not they are up to date; one re-run by hand
    // holds none until the suite lets it start.
    let mut busy = children
        .iter()
        .filter(|c| !finished(c) && !awaits_go_ahead(c))
        .count();
    for case in &desired {
        let child = existing
            .get(&case_evaluation_name(&name, &case.name))
            .copied();
        match child {
            Some(c) if cancel && !finished(c) && c.spec.cancel != Some(true) => {
                apply.push(child_object(suite, case, child, true));
            }
            Some(_) if cancel => {}
            // Re-run by hand: started (with what the suite wants now) when a slot is free.
            Some(c) if awaits_go_ahead(c) && !stop_new && busy < parallelism => {
                busy += 1;
                apply.push(child_object(suite, case, child, false));
            }
            // Re-run by hand, no slot: it waits (its controller holds it).
            Some(c) if awaits_go_ahead(c) => {}
            // Up to date: nothing to do.
            Some(c) if is_current(suite, c, case) => {}
            // Outdated and still running: update now (it keeps its slot; the old run stops).
            Some(c) if !finished(c) => apply.push(child_object(suite, case, child, false)),
            // Missing, or outdated and finished: needs a free slot.
            _ if !stop_new && busy < parallelism => {
                busy += 1;
                apply.push(child_object(suite, case, child, false));
            }
            _ => {}
        }
    }
    let wanted: std::collections::BTreeSet<String> = desired
        .iter()
        .map(|c| case_evaluation_name(&name, &c.name))
        .collect();
    let delete = existing
        .keys()
        .filter(|n| !wanted.contains(*n))
        .cloned()
        .collect();
    let status = aggregate(
        suite,
        &desired,
        &existing,
        cancel,
        max_failures.filter(|m| failures >= *m),
        now,
    );
    SuitePlan {
        apply,
        delete,
        status,
        notes: vec![],
        keep_sources: keep_sources(suite, &desired),
    }
}

/// The shared workspaces of `desired`, when the spec changed since the status was last
/// written (a new suite has none to remove).
fn keep_sources(suite: &EvaluationSuite, desired: &[DesiredCase]) -> Option<BTreeSet<String>> {
    let seen = suite.status.as_ref()?.observed_generation;
    let uid = suite.uid()?;
    if seen == suite.meta().generation {
        return None;
    }
    let name = suite.name_any();
    Some(
        desired
            .iter()
            .filter_map(|case| match &case.spec.source {
                Some(Source::Inline(inline)) => {
                    Some(shared_inline_name(&name, &uid, &inline.files))
                }
                _ => None,
            })
            .collect(),
    )
}

fn aggregate(
    suite: &EvaluationSuite,
    desired: &[DesiredCase],
    existing: &BTreeMap<String, &Evaluation>,
    cancel: bool,
    failed_out: Option<usize>,
    now: &Time,
) -> EvaluationSuiteStatus {
    let name = suite.name_any();
    let mut status = EvaluationSuiteStatus {
        conditions: suite.status.clone().unwrap_or_default().conditions,
        total: i32::try_from(desired.len()).unwrap_or(i32::MAX),
        ..Default::default()
    };
    let (mut scores, mut rows) = (Vec::new(), Vec::new());
    for case in desired {
        let evaluation = case_evaluation_name(&name, &case.name);
        let child = existing
            .get(&evaluation)
            .copied()
            .filter(|c| is_current(suite, c, case));
        let child_status = child.and_then(|c| c.status.clone()).unwrap_or_default();
        // A finished phase of an older run (a re-run not started yet) is not this case's end.
        let phase = child_status
            .phase
            .filter(|p| !p.is_finished() || child.is_some_and(finished));
        match phase {
            Some(p) if p.is_finished() && child_status.passed() => status.succeeded += 1,
            Some(p) if p.is_finished() => status.failed += 1,
            Some(Phase::Pending | Phase::Running) => status.running += 1,
            _ => status.queued += 1,
        }
        if let Some(r) = &child_status.result {
            scores.push(r.score);
        }
        rows.push(CaseStatus {
            name: case.name.clone(),
            evaluation,
            phase: phase.map_or("Waiting", Phase::as_str).to_string(),
            score: child_status.result.as_ref().map(|r| r.score),
            passed: child_status.result.as_ref().map(|r| r.passed),
        });
    }
    if rows.len() > MAX_CASE_ROWS {
        status.cases_omitted = i32::try_from(rows.len() - MAX_CASE_ROWS).ok();
        rows.truncate(MAX_CASE_ROWS);
    }
    status.cases = rows;
    // Empty, not 0, until a case has finished: nothing has failed yet.
    if status.succeeded + status.failed > 0 {
        status.pass_rate = Some(f64::from(status.succeeded) / f64::from(status.total));
    }
    if let Some(estimate) = stats::over_cases(&scores) {
        status.mean_score = Some(estimate.mean);
        status.ci95 = estimate.ci95;
        status.shown_mean_score = Some(shown_estimate(estimate.mean, estimate.ci95.as_ref()));
    }
    status.shown_pass_rate = status.pass_rate.map(shown_number);
    let threshold = suite
        .spec
        .pass_threshold
        .unwrap_or(DEFAULT_SUITE_PASS_THRESHOLD);
    let all_done = status.succeeded + status.failed == status.total;
    let (phase, reason, message) = if cancel {
        (
            SuitePhase::Cancelled,
            "Cancelled",
            "cancelled by spec.cancel".to_string(),
        )
    } else if let Some(m) = failed_out {
        (
            SuitePhase::Failed,
            "MaxFailuresReached",
            format!("{m} cases failed (maxFailures); no new case starts"),
        )
    } else if all_done {
        let rate = status.pass_rate.unwrap_or(0.0);
        if rate >= threshold {
            (
                SuitePhase::Succeeded,
                "Passed",
                format!("pass rate {rate:.3} reached the threshold {threshold}"),
            )
        } else {
            (
                SuitePhase::Failed,
                conditions::NOT_PASSED,
                format!("pass rate {rate:.3} is below the threshold {threshold}"),
            )
        }
    } else {
        (
            SuitePhase::Running,
            "Running",
            format!(
                "{} of {} cases finished",
                status.succeeded + status.failed,
                status.total
            ),
        )
    };
    status.phase = Some(phase);
    status.message = Some(message);
    status.observed_generation = suite.meta().generation;
    set_conditions(&mut status, reason, suite.meta().generation, now);
    status
}

fn set_conditions(
    status: &mut EvaluationSuiteStatus,
    reason: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let phase = status.phase.unwrap_or(SuitePhase::Running);
    let message = status
        .message
        .clone()
        .unwrap_or_else(|| phase.as_str().to_string());
    let c = &mut status.conditions;
    let running = phase == SuitePhase::Running;
    let ready = phase == SuitePhase::Succeeded;
    let stalled = matches!(phase, SuitePhase::Failed | SuitePhase::Cancelled);
    conditions::set_condition(
        c,
        conditions::RECONCILING,
        Status::from(running),
        phase.as_str(),
        &message,
        generation,
        now,
    );
    conditions::set_condition(
        c,
        conditions::READY,
        Status::from(ready),
        reason,
        &message,
        generation,
        now,
    );
    conditions::set_condition(
        c,
        conditions::STALLED,
        Status::from(stalled),
        reason,
        &message,
        generation,
        now,
    );
}

/// The child Evaluation of `case`, owned by the suite; `existing` is the child as it is now.
/// Its annotations: `crucible.dev/rerun`, the suite's rerun value until the child answered it,
/// then the child's own (a re-run by hand is kept, not undone); `crucible.dev/go-ahead`, that
/// same value (the suite applies a child only to let it run), except when it cancels;
/// `crucible.dev/suite-rerun`, the suite's rerun value it answers.
fn child_object(
    suite: &EvaluationSuite,
    case: &DesiredCase,
    existing: Option<&Evaluation>,
    cancel: bool,
) -> Evaluation {
    let name = suite.name_any();
    let mut spec = case.spec.clone();
    let wanted = rerun_of(suite);
    let (rerun, go_ahead, answers) = if cancel {
        spec.cancel = Some(true);
        let kept = |key| existing.and_then(|c| annotation(c, key));
        (
            kept(RERUN_ANNOTATION),
            kept(GO_AHEAD_ANNOTATION),
            kept(SUITE_RERUN_ANNOTATION),
        )
    } else {
        let answered = existing.is_some_and(|c| suite_rerun_of(c) == wanted);
        let rerun = match existing {
            Some(c) if wanted.is_none() || answered => rerun_of(c),
            _ => wanted,
        };
        (rerun, rerun, wanted)
    };
    let annotations: BTreeMap<String, String> = [
        (RERUN_ANNOTATION, rerun),
        (GO_AHEAD_ANNOTATION, go_ahead),
        (SUITE_RERUN_ANNOTATION, answers),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.to_string(), value?.clone())))
    .collect();
    let mut child = Evaluation::new(&case_evaluation_name(&name, &case.name), spec);
    child.metadata = ObjectMeta {
        name: Some(case_evaluation_name(&name, &case.name)),
        namespace: suite.namespace(),
        labels: Some(BTreeMap::from([
            (SUITE_LABEL.to_string(), name.clone()),
            (
                "app.kubernetes.io/part-of".to_string(),
                "crucible".to_string(),
            ),
            (
                "app.kubernetes.io/managed-by".to_string(),
                "crucible".to_string(),
            ),
        ])),
        annotations: (!annotations.is_empty()).then_some(annotations),
        owner_references: suite.controller_owner_ref(&()).map(|r| vec![r]),
        ..Default::default()
    };
    child
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
