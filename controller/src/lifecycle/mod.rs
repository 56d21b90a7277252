//! The pure lifecycle of one Evaluation, the heart of its controller: from the Evaluation and
//! what was observed, compute the next status, the children to create and delete, the Events
//! and the requeue. It sits above admission (it consumes its `Decision`) and below the two
//! drivers of a run: the Evaluation controller (`evaluation/`) and `crucible run` (`local/`),
//! which plays API server and kubelet around the same function.
//!
//! # Guarantees
//! - A run is identified by [`RunKey`] (spec hash + rerun annotation): a finished run is never
//!   started again, whatever restarts; a new key starts a new run and moves the old one to
//!   `history`.
//! - Invalid specs and missing sandboxes create no children.
//! - The log tail of a run is in the status written before its pod is deleted: `reconcile`
//!   patches status first and deletes afterwards.
//!
//! Split by capability: [`observed`] (what `observe` read), [`predicates`] (questions about a
//! run that `observe` and `reconcile` also ask), [`steps`] (advancing a run), [`conditions`]
//! (conditions and Events from the status).

mod conditions;
mod observed;
mod predicates;
pub mod samples;
mod start;
mod steps;
pub mod suite;
pub mod usage;

use crate::lifecycle::predicates::elapsed;
use crate::run::liveness;
use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};

use crate::admission::Decision;
use crate::config::Config;
use crate::crd::evaluation::{
    Evaluation, EvaluationStatus, HistoryEntry, Phase, Provenance, QueueStatus,
};
use crate::error::Result;
pub use crate::events::{Note, Severity};
use crate::requeue::Requeue;
use crate::run::identity::RunKey;
use crate::run::owner::Owner;

pub use observed::{Observed, RuntimeClassCheck};
pub use predicates::{
    LogsNeeded, SamplesNeeded, logs_needed, queue_wait, samples_needed, source_reference,
    started_run_needs_source,
};

use crate::run::fetched::SourceProblem;
use crate::run::owner::owner;
use crate::run::results::DEFAULT_PASS_THRESHOLD;
use crate::run::state::{
    admission_run_id, awaits_admission, follows, head_moved, is_current_run, run_is_over,
};
pub(crate) use conditions::set_conditions;
use conditions::transition_note;
use steps::Planner;

/// Runs kept in `status.history`.
pub const HISTORY_LIMIT: usize = 10;
/// Slack after `activeDeadlineSeconds` before the controller stops a pod itself: the kubelet
/// normally ends it first, this catches pods stuck unscheduled or on a lost node.
pub const DEADLINE_GRACE: Duration = Duration::from_secs(15);
/// Longest wait between two looks at a running Evaluation when no watch event arrives.
pub const MAX_RESYNC: Duration = Duration::from_secs(300);
/// How long after its pod finished a run waits for a log that cannot be read (the reconcile
/// retries with backoff meanwhile) before it ends without it, saying so in `status.message`.
/// Long enough for a kubelet restart or a passing API server hiccup; a lost node does not come
/// back sooner.
pub const LOG_WAIT: Duration = Duration::from_secs(120);
/// Suffix of the name of an `Allowlist` run's NetworkPolicy.
pub const POLICY_SUFFIX: &str = "sandbox";

/// How long a run waits before retrying a git source that could not be reached.
pub const SOURCE_RETRY: Duration = Duration::from_secs(30);
/// How long a run waits before trying again to put its namespace's deny-all NetworkPolicy in
/// place after a passing failure.
pub const SANDBOX_RETRY: Duration = Duration::from_secs(10);

/// A child object to put in place before the pod, and the pod.
#[derive(Clone, Debug)]
pub enum Child {
    /// The namespace's deny-all NetworkPolicy (kept by the Evaluation controller's `sandbox_policy`) of a
    /// `network: None` run: applied unless known to be in place; always before the pod.
    SandboxPolicy,
    /// The NetworkPolicy of an `Allowlist` run (server-side apply); always before the pod.
    NetworkPolicy(Box<NetworkPolicy>),
    /// The workspace ConfigMap ([`crate::run::workspace`]): created once, never
    /// updated, shared when a suite owns it.
    ConfigMap(Box<ConfigMap>),
    /// The sandbox pod.
    Pod(Box<Pod>),
}

/// Kind of a child to delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildKind {
    /// Pod.
    Pod,
    /// NetworkPolicy.
    NetworkPolicy,
    /// ConfigMap.
    ConfigMap,
}

/// Everything one reconcile does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The complete status to write.
    pub status: EvaluationStatus,
    /// Children to put in place, in order (NetworkPolicy and ConfigMap before the pod).
    pub create: Vec<Child>,
    /// Children to delete after the status is written.
    pub delete: Vec<(ChildKind, String)>,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// Next look.
    pub requeue: Requeue,
    /// Runs of this Evaluation whose pods still hold capacity ([`crate::run::liveness`]).
    pub live_runs: BTreeSet<String>,
    /// Whether the run keeps its place in the admission queue.
    pub in_queue: bool,
}

/// A run with models that this plan ends (finished, or replaced by a new run while it was
/// pending or running): its id and when its token expires by itself (its start, timeout and
/// [`DEADLINE_GRACE`]), so the gateway can refuse the token from now on.
pub fn ended_model_run(ev: &Evaluation, plan: &Plan, config: &Config) -> Option<(String, i64)> {
    let before = ev.status.as_ref()?;
    if !matches!(before.phase, Some(Phase::Pending | Phase::Running))
        || crate::run::models::models(&ev.spec).is_empty()
    {
        return None;
    }
    let run = before.run_id.clone()?;
    let ended = plan.status.phase.is_some_and(Phase::is_finished)
        || plan.status.run_id.as_deref() != Some(run.as_str());
    if !ended {
        return None;
    }
    Some((run, token_expiry(ev, before, config)?))
}

/// When the token of `status`'s run expires by itself: its start, timeout and
/// [`DEADLINE_GRACE`].
fn token_expiry(ev: &Evaluation, status: &EvaluationStatus, config: &Config) -> Option<i64> {
    let start = status.start_time.as_ref()?.0.as_second();
    let lifetime = predicates::timeout(ev, config).saturating_add(DEADLINE_GRACE);
    Some(start.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)))
}

/// The run with models whose usage `observe` asks the gateway for: the current run while it is
/// pending or running, on every look at it (its pod's changes, and at least every
/// [`MAX_RESYNC`]); so also in the reconcile that ends it. Its id and token expiry.
pub fn usage_needed(ev: &Evaluation, config: &Config) -> Option<(String, i64)> {
    let status = ev.status.as_ref()?;
    if !matches!(status.phase, Some(Phase::Pending | Phase::Running))
        || !is_current_run(status, &RunKey::of(ev))
        || crate::run::models::models(&ev.spec).is_empty()
    {
        return None;
    }
    Some((status.run_id.clone()?, token_expiry(ev, status, config)?))
}

/// Whether the current run's pod has ended (the plan reads it as finished): a question for
/// its usage asked from then on counts every call it made, and the run's end waits for one.
pub fn pod_ended(ev: &Evaluation, pods: &[Pod]) -> bool {
    let Some(pod) = ev
        .status
        .as_ref()
        .and_then(|s| s.pod_name.as_ref())
        .and_then(|name| pods.iter().find(|p| &p.name_any() == name))
    else {
        return false;
    };
    matches!(
        crate::run::phase::examine(
            pod,
            &ev.spec,
            &std::collections::BTreeMap::new(),
            DEFAULT_PASS_THRESHOLD
        ),
        crate::run::phase::PodState::Finished(_)
    )
}

impl Plan {
    /// The runs whose admissions this Evaluation holds after the plan: those with a live pod,
    /// and the current run once its pod is being created or runs.
    pub fn holds(&self) -> BTreeSet<String> {
        let mut runs = self.live_runs.clone();
        if matches!(self.status.phase, Some(Phase::Pending | Phase::Running))
            && let Some(run) = &self.status.run_id
        {
            runs.insert(run.clone());
        }
        runs
    }
}

/// Computes the plan for one reconcile.
///
/// # Errors
/// Only [`Error::MissingObjectKey`] for objects that did not come from the API server.
pub fn plan(
    ev: &Evaluation,
    obs: &Observed,
    admission: &Decision,
    config: &Config,
) -> Result<Plan> {
    let owner = owner(ev)?;
    let key = RunKey::of(ev);
    let old = ev.status.clone().unwrap_or_default();
    let same_run = is_current_run(&old, &key) && !head_moved(&old, obs.head.as_deref());
    let mut p = Planner {
        ev,
        obs,
        admission,
        config,
        owner,
        key,
        status: if same_run {
            old.clone()
        } else {
            fresh_status(&old, &obs.now)
        },
        plan_create: Vec::new(),
        plan_delete: Vec::new(),
        notes: Vec::new(),
        requeue: Requeue::AwaitChange,
        in_queue: false,
    };
    p.status
        .provenance
        .get_or_insert_with(Provenance::default)
        .spec_hash = Some(p.key.spec_hash.clone());
    p.status.rerun = p.key.rerun.clone();
    p.status.run_id = Some(admission_run_id(ev, obs.head.as_deref()));
    if !same_run {
        p.status.run_generation = ev.meta().generation;
    }
    match p.status.phase {
        Some(phase) if phase.is_finished() => p.finished(),
        _ => p.step(),
    }
    // Pods of other runs or attempts are superseded. Decided after the step, so that the pod
    // of the attempt just (re)planned is adopted, never deleted: after a crash between creating
    // a pod and writing status, the same deterministic name comes out again.
    for pod in &obs.pods {
        let name = pod.name_any();
        let stale = Some(&name) != p.status.pod_name.as_ref();
        let planned = p.plan_delete.iter().any(|(_, n)| n == &name);
        if stale && !planned && pod.meta().deletion_timestamp.is_none() {
            p.plan_delete.push((ChildKind::Pod, name));
        }
    }
    let generation = ev.meta().generation;
    p.status.observed_generation = generation;
    set_conditions(&mut p.status, generation, &obs.now);
    if (!same_run || old.phase != p.status.phase)
        && let Some(note) = transition_note(&p.status)
    {
        p.notes.push(note);
    }
    // A pod being deleted frees its share when it is gone or overdue (a lost node never
    // confirms): look again then, even if no event comes.
    let now = &obs.now;
    let live: Vec<&Pod> = obs
        .pods
        .iter()
        .filter(|pod| liveness::holds_capacity(pod, now))
        .collect();
    if let Some(at) = live
        .iter()
        .filter_map(|pod| liveness::release_at(pod))
        .min_by_key(|t| t.0)
    {
        p.requeue = p.requeue.within(elapsed(now, &at) + Duration::from_secs(1));
    }
    Ok(Plan {
        live_runs: live
            .iter()
            .filter_map(|pod| liveness::run_of(pod))
            .collect(),
        in_queue: p.in_queue,
        status: p.status,
        create: p.plan_create,
        delete: p.plan_delete,
        notes: p.notes,
        requeue: p.requeue,
    })
}

/// A status for a new run: empty but for the history, which gains the previous run.
fn fresh_status(old: &EvaluationStatus, now: &Time) -> EvaluationStatus {
    let mut history = old.history.clone();
    if let Some(phase) = old.phase {
        history.insert(
            0,
            HistoryEntry {
                generation: old.run_generation,
                commit: old.provenance.as_ref().and_then(|p| p.commit.clone()),
                // A run replaced before it finished counts as cancelled.
                phase: Some(if phase.is_finished() {
                    phase
                } else {
                    Phase::Cancelled
                }),
                score: old.result.as_ref().map(|r| r.score),
                passed: old.result.as_ref().map(|r| r.passed),
                completion_time: old.completion_time.clone().or_else(|| Some(now.clone())),
                samples: old.samples.as_ref().map(Into::into),
            },
        );
        history.truncate(HISTORY_LIMIT);
    }
    EvaluationStatus {
        history,
        conditions: old.conditions.clone(),
        ..Default::default()
    }
}

/// The short reason of a queued run (status `reason`, the Reason column): the code that opens
/// its queue sentence (`QuotaExceeded: maxRunning 5 reached` → `QuotaExceeded`).
fn queued_reason(sentence: &str) -> &str {
    match sentence.split_once(':') {
        Some((code, _)) if !code.is_empty() && !code.contains(' ') => code,
        _ => "Queued",
    }
}

/// A child that could not be put in place, so the pod was not created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `SandboxUnavailable` (NetworkPolicy or RuntimeClass refused) or `PodRejected`.
    pub reason: &'static str,
    /// What the API server said.
    pub message: String,
    /// Whether trying again may work (the namespace's deny-all policy failed to apply for a
    /// passing reason): the run waits instead of failing.
    pub retry: bool,
}

/// Turns a plan whose children could not be put in place into a fail-closed status: no pod;
/// the run Failed with the refusal's reason, or, for a refusal worth retrying, back in the
/// queue (not holding a slot) with the reason, looked at again after [`SANDBOX_RETRY`].
pub fn refused(ev: &Evaluation, mut plan: Plan, refusal: Refusal, now: &Time) -> Plan {
    plan.create.clear();
    plan.in_queue = false;
    if refusal.retry {
        let old = ev.status.as_ref();
        let was_queued = old.and_then(|s| s.phase) == Some(Phase::Queued);
        plan.status.phase = Some(Phase::Queued);
        plan.status.reason = Some(refusal.reason.to_string());
        plan.status.queue = Some(QueueStatus {
            position: Some(0),
            reason: Some(format!(
                "{}: {} (retrying)",
                refusal.reason, refusal.message
            )),
            since: old
                .and_then(|s| s.queue.as_ref())
                .and_then(|q| q.since.clone())
                .or_else(|| Some(now.clone())),
        });
        plan.status.pod_name = None;
        plan.status.attempts = None;
        plan.status.start_time = None;
        plan.status.sandbox = None;
        // From the conditions before this reconcile: a retry that fails alike changes nothing.
        plan.status.conditions = old.map(|s| s.conditions.clone()).unwrap_or_default();
        set_conditions(&mut plan.status, ev.meta().generation, now);
        plan.notes.retain(|n| n.reason != "Admitted");
        if !was_queued {
            plan.notes.extend(transition_note(&plan.status));
        }
        plan.requeue = Requeue::After(SANDBOX_RETRY);
        return plan;
    }
    plan.status.phase = Some(Phase::Failed);
    plan.status.reason = Some(refusal.reason.to_string());
    plan.status.message = Some(format!("no pod was started: {}", refusal.message));
    plan.status.completion_time = Some(now.clone());
    plan.status.pod_name = None;
    set_conditions(&mut plan.status, ev.meta().generation, now);
    plan.notes.retain(|n| n.reason != "Admitted");
    plan.notes.extend(transition_note(&plan.status));
    plan.requeue = Requeue::AwaitChange;
    plan
}

#[cfg(test)]
#[path = "conditions_tests.rs"]
mod conditions_tests;
#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod lifecycle_tests;
#[cfg(test)]
#[path = "queue_tests.rs"]
mod queue_tests;
#[cfg(test)]
#[path = "source_tests.rs"]
mod source_tests;
#[cfg(test)]
#[path = "steps_tests.rs"]
mod steps_tests;
#[cfg(test)]
mod test_support;
