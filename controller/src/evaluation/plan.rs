//! The pure heart of the Evaluation controller: from the Evaluation and what `observe` found,
//! compute the next status, the children to create and delete, the Events and the requeue.
//!
//! # Guarantees
//! - A run is identified by [`RunKey`] (spec hash + rerun annotation): a finished run is never
//!   started again, whatever restarts; a new key starts a new run and moves the old one to
//!   `history`.
//! - Invalid specs and missing sandboxes create no children.
//! - The log tail of a run is in the status written before its pod is deleted: `reconcile`
//!   patches status first and deletes afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};

use crate::admission::Decision;
use crate::config::Config;
use crate::crd::conditions::{self, Status};
use crate::crd::evaluation::{
    Evaluation, EvaluationStatus, HistoryEntry, Phase, Provenance, QueueStatus, SandboxStatus,
    Source,
};
use crate::duration;
use crate::error::{Error, Result};
use crate::evaluation::identity::{RunKey, child_name, pod_name};
use crate::evaluation::phase::{self, Outcome, PodState};
use crate::evaluation::pod::{
    Attempt, EVALUATION_CONTAINER, Owner, desired_network_policy, desired_pod, desired_workspace,
};
use crate::evaluation::results::LogCapture;
use crate::evaluation::validate;
use crate::labels::SUITE_LABEL;
use crate::liveness;
use crate::requeue::Requeue;

/// Default `passThreshold`.
pub const DEFAULT_PASS_THRESHOLD: f64 = 0.5;
/// Runs kept in `status.history`.
pub const HISTORY_LIMIT: usize = 10;
/// Slack after `activeDeadlineSeconds` before the controller stops a pod itself: the kubelet
/// normally ends it first, this catches pods stuck unscheduled or on a lost node.
pub const DEADLINE_GRACE: Duration = Duration::from_secs(15);
/// Longest wait between two looks at a running Evaluation when no watch event arrives.
pub const MAX_RESYNC: Duration = Duration::from_secs(300);
/// How often a queued Evaluation asks for admission again: the latency between freed
/// capacity and the next admission.
pub const QUEUE_RECHECK: Duration = Duration::from_secs(2);
/// Suffix of the NetworkPolicy name.
pub const POLICY_SUFFIX: &str = "sandbox";
/// Suffix of the workspace ConfigMap name.
pub const WORKSPACE_SUFFIX: &str = "workspace";

/// How long a run waits before retrying a git source that could not be reached.
pub const SOURCE_RETRY: Duration = Duration::from_secs(30);

/// Whether the sandbox's RuntimeClass exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeClassCheck {
    /// The class exists.
    Present,
    /// The class does not exist.
    Missing,
}

/// What `observe` read from the cluster for one Evaluation.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Time of observation.
    pub now: Time,
    /// Pods labelled with the Evaluation's uid.
    pub pods: Vec<Pod>,
    /// The RuntimeClass lookup; `None` when the run is finished and it was not needed.
    pub runtime_class: Option<RuntimeClassCheck>,
    /// Log captures of the current pod's containers, by container name.
    pub logs: BTreeMap<String, LogCapture>,
    /// Why an emergency stop covers the namespace, if one does.
    pub stop: Option<String>,
    /// For a git source: the files at the run's commit, or why they could not be had. Read
    /// when a run starts (and while it has not finished, pinned to its commit).
    pub source: Option<Result<FetchedSource, SourceProblem>>,
    /// For a finished run with `follow: true`: the commit the followed ref points to now.
    pub head: Option<String>,
}

/// Files of a git source at a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedSource {
    /// Repository URL without credentials.
    pub repo: String,
    /// Commit id.
    pub commit: String,
    /// Path → bytes.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Why a git source could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceProblem {
    /// PascalCase reason (`SourceUnreachable`, `UnknownRef`, `SourceTooLarge`, …).
    pub reason: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// Whether trying again later may work (network trouble).
    pub transient: bool,
}

/// A child object to create or update (server-side apply).
#[derive(Clone, Debug)]
pub enum Child {
    /// The sandbox NetworkPolicy; always applied before the pod.
    NetworkPolicy(Box<NetworkPolicy>),
    /// The workspace ConfigMap.
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

/// Severity of an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Normal.
    Normal,
    /// Warning.
    Warning,
}

/// An Event to publish on the Evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Normal or Warning.
    pub severity: Severity,
    /// PascalCase reason.
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

/// Everything one reconcile does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The complete status to write.
    pub status: EvaluationStatus,
    /// Children to apply, in order (NetworkPolicy before the pod).
    pub create: Vec<Child>,
    /// Children to delete after the status is written.
    pub delete: Vec<(ChildKind, String)>,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// Next look.
    pub requeue: Requeue,
}

/// The owner identity of `ev`'s children.
///
/// # Errors
/// [`Error::MissingObjectKey`] when the object has no namespace or uid (never for objects read
/// from the API server).
pub fn owner(ev: &Evaluation) -> Result<Owner> {
    Ok(Owner {
        name: ev.name_any(),
        namespace: ev
            .namespace()
            .ok_or(Error::MissingObjectKey("metadata.namespace"))?,
        uid: ev.uid().ok_or(Error::MissingObjectKey("metadata.uid"))?,
        reference: ev
            .controller_owner_ref(&())
            .ok_or(Error::MissingObjectKey("metadata.uid"))?,
        suite: ev.labels().get(SUITE_LABEL).cloned(),
    })
}

/// Whether the status belongs to the run `key` names.
fn is_current_run(status: &EvaluationStatus, key: &RunKey) -> bool {
    status.phase.is_some()
        && status
            .provenance
            .as_ref()
            .and_then(|p| p.spec_hash.as_ref())
            == Some(&key.spec_hash)
        && status.rerun == key.rerun
}

/// Whether a followed branch has moved past the run's commit (a new run is due).
fn head_moved(status: &EvaluationStatus, head: Option<&str>) -> bool {
    let commit = status.provenance.as_ref().and_then(|p| p.commit.as_deref());
    matches!((head, commit), (Some(h), Some(c)) if h != c)
}

/// Whether `ev` follows its git ref (`source.git.follow: true`).
pub fn follows(ev: &Evaluation) -> bool {
    matches!(&ev.spec.source, Some(Source::Git(g)) if g.follow == Some(true))
}

/// Whether `ev`'s current run has finished: nothing will start, so no sandbox lookup is needed.
pub fn run_is_over(ev: &Evaluation) -> bool {
    ev.status.as_ref().is_some_and(|s| {
        is_current_run(s, &RunKey::of(ev)) && s.phase.is_some_and(Phase::is_finished)
    })
}

/// Whether `ev`'s run still needs an admission decision: a new run (also when a followed
/// branch moved to `head`), or one still queued.
pub fn awaits_admission(ev: &Evaluation, head: Option<&str>) -> bool {
    match &ev.status {
        Some(s) if is_current_run(s, &RunKey::of(ev)) && !head_moved(s, head) => {
            matches!(s.phase, None | Some(Phase::Queued))
        }
        _ => true,
    }
}

/// Whether the gate must decide on `ev`'s run now: it awaits admission and its source (if
/// any) could be read.
pub fn asks_admission(ev: &Evaluation, obs: &Observed) -> bool {
    awaits_admission(ev, obs.head.as_deref()) && !matches!(obs.source, Some(Err(_)))
}

/// The git ref to read for `ev` now: the pinned commit of a run that has started, else the
/// spec's ref (or `head`, when a followed branch moved). `None` without a git source or when
/// the run is over and no new one is due.
pub fn source_reference(ev: &Evaluation, head: Option<&str>) -> Option<Option<String>> {
    let Some(Source::Git(git)) = &ev.spec.source else {
        return None;
    };
    if awaits_admission(ev, head) {
        return Some(head.map(str::to_string).or_else(|| git.r#ref.clone()));
    }
    if run_is_over(ev) {
        return None;
    }
    let pinned = ev
        .status
        .as_ref()
        .and_then(|s| s.provenance.as_ref())
        .and_then(|p| p.commit.clone());
    Some(pinned.or_else(|| git.r#ref.clone()))
}

/// The pod of the current attempt of an unfinished run, and the containers whose logs `plan`
/// will need from it now. `observe` calls this to read only the logs that matter.
pub fn logs_needed(
    ev: &Evaluation,
    pods: &[Pod],
    now: &Time,
    stopped: bool,
    config: &Config,
) -> Option<(String, Vec<&'static str>)> {
    let status = ev.status.as_ref()?;
    let key = RunKey::of(ev);
    if !is_current_run(status, &key) || status.phase.is_some_and(Phase::is_finished) {
        return None;
    }
    let pod = pods
        .iter()
        .find(|p| Some(p.name_any()) == status.pod_name)?;
    let stopping =
        stopped || ev.spec.cancel == Some(true) || deadline_passed(ev, status, now, config);
    if !liveness::is_terminal(pod) && !stopping {
        return None;
    }
    let containers = [EVALUATION_CONTAINER, phase::result_container(&ev.spec)]
        .into_iter()
        .fold(Vec::new(), |mut v, c| {
            if !v.contains(&c) && phase::has_started(pod, c) {
                v.push(c);
            }
            v
        });
    Some((pod.name_any(), containers))
}

fn timeout(ev: &Evaluation, config: &Config) -> Duration {
    ev.spec
        .timeout
        .as_deref()
        .and_then(|t| duration::parse(t).ok())
        .unwrap_or(config.default_timeout)
}

fn elapsed(from: &Time, to: &Time) -> Duration {
    Duration::try_from(to.0.duration_since(from.0)).unwrap_or(Duration::ZERO)
}

/// Time left before the controller-side deadline of the current attempt.
fn time_to_deadline(
    ev: &Evaluation,
    status: &EvaluationStatus,
    now: &Time,
    config: &Config,
) -> Option<Duration> {
    let start = status.start_time.as_ref()?;
    let limit = timeout(ev, config) + DEADLINE_GRACE;
    Some(limit.saturating_sub(elapsed(start, now)))
}

fn deadline_passed(
    ev: &Evaluation,
    status: &EvaluationStatus,
    now: &Time,
    config: &Config,
) -> bool {
    time_to_deadline(ev, status, now, config) == Some(Duration::ZERO)
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
    };
    p.status
        .provenance
        .get_or_insert_with(Provenance::default)
        .spec_hash = Some(p.key.spec_hash.clone());
    p.status.rerun = p.key.rerun.clone();
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
    Ok(Plan {
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

struct Planner<'a> {
    ev: &'a Evaluation,
    obs: &'a Observed,
    admission: &'a Decision,
    config: &'a Config,
    owner: Owner,
    key: RunKey,
    status: EvaluationStatus,
    plan_create: Vec<Child>,
    plan_delete: Vec<(ChildKind, String)>,
    notes: Vec<Note>,
    requeue: Requeue,
}

impl Planner<'_> {
    fn current_pod(&self) -> Option<&Pod> {
        let name = self.status.pod_name.as_ref()?;
        self.obs.pods.iter().find(|p| &p.name_any() == name)
    }

    fn threshold(&self) -> f64 {
        self.ev
            .spec
            .pass_threshold
            .unwrap_or(DEFAULT_PASS_THRESHOLD)
    }

    /// Advances a run that has not finished.
    fn step(&mut self) {
        if let Err(problems) = validate::validate(&self.ev.spec, self.config) {
            return self.finish(Outcome::new(
                Phase::Failed,
                "InvalidSpec",
                problems.join("; "),
            ));
        }
        if self.ev.spec.cancel == Some(true) {
            return self.finish(Outcome::new(
                Phase::Cancelled,
                "Cancelled",
                "cancelled by spec.cancel",
            ));
        }
        if matches!(self.status.phase, None | Some(Phase::Queued))
            && let Some(Err(problem)) = self.obs.source.clone()
        {
            return self.source_problem(problem);
        }
        match self.status.phase {
            None | Some(Phase::Queued) => match self.admission {
                Decision::Admit => self.start_attempt(1),
                Decision::Wait { position, reason } => {
                    let position = i32::try_from(*position).unwrap_or(i32::MAX);
                    self.wait_in_queue(position, reason.clone())
                }
            },
            Some(_) => match self.obs.stop.clone() {
                Some(why) => self.finish(Outcome::new(Phase::Cancelled, "EmergencyStop", why)),
                None => self.watch_attempt(),
            },
        }
    }

    /// A git source that could not be read: no pod. Network trouble waits and retries;
    /// anything else ends the run with the source's reason.
    fn source_problem(&mut self, problem: SourceProblem) {
        if !problem.transient {
            return self.finish(Outcome::new(Phase::Failed, problem.reason, problem.message));
        }
        self.wait_in_queue(
            0,
            format!("{}: {} (retrying)", problem.reason, problem.message),
        );
        self.requeue = Requeue::After(SOURCE_RETRY);
    }

    /// Keeps a run queued, or ends it when it waited longer than `queueTimeout`.
    fn wait_in_queue(&mut self, position: i32, reason: String) {
        let now = self.obs.now.clone();
        let since = self
            .status
            .queue
            .as_ref()
            .and_then(|q| q.since.clone())
            .unwrap_or(now.clone());
        let limit = self
            .ev
            .spec
            .queue_timeout
            .as_deref()
            .and_then(|t| duration::parse(t).ok());
        if let Some(limit) = limit
            && elapsed(&since, &now) >= limit
        {
            return self.finish(Outcome::new(
                Phase::Failed,
                "QueueTimeout",
                format!(
                    "not admitted within queueTimeout {} (last reason: {reason})",
                    duration::render(limit)
                ),
            ));
        }
        self.status.phase = Some(Phase::Queued);
        self.status.queue = Some(QueueStatus {
            position: Some(position),
            reason: Some(reason),
            since: Some(since),
        });
        self.requeue = Requeue::After(QUEUE_RECHECK);
    }

    fn watch_attempt(&mut self) {
        let Some(pod) = self.current_pod().cloned() else {
            let name = self.status.pod_name.clone().unwrap_or_default();
            return self.infra_failure(
                "PodLost",
                format!("pod {name} disappeared before it finished"),
            );
        };
        let state = phase::examine(&pod, &self.ev.spec, &self.obs.logs, self.threshold());
        let left = time_to_deadline(self.ev, &self.status, &self.obs.now, self.config);
        match state {
            PodState::Finished(outcome) => self.finish(outcome),
            PodState::InfraFailure { reason, message } => self.infra_failure(&reason, message),
            PodState::Waiting | PodState::Running if left == Some(Duration::ZERO) => {
                self.finish(Outcome::new(
                    Phase::TimedOut,
                    "DeadlineExceeded",
                    format!(
                        "the evaluation did not finish within its timeout of {}",
                        duration::render(timeout(self.ev, self.config))
                    ),
                ))
            }
            PodState::Waiting | PodState::Running => {
                self.status.phase = Some(if state == PodState::Running {
                    Phase::Running
                } else {
                    Phase::Pending
                });
                let wait = left.unwrap_or(MAX_RESYNC).min(MAX_RESYNC);
                self.requeue = Requeue::After(wait.max(Duration::from_secs(1)));
            }
        }
    }

    /// Creates the children of attempt `attempt`, or fails closed when the sandbox is missing.
    fn start_attempt(&mut self, attempt: i32) {
        let class = validate::runtime_class(&self.ev.spec, self.config).to_string();
        let sandboxed = match self.obs.runtime_class {
            Some(RuntimeClassCheck::Present) => true,
            Some(RuntimeClassCheck::Missing) if self.config.allow_unsandboxed => {
                self.notes.push(Note {
                    severity: Severity::Warning,
                    reason: "Unsandboxed",
                    message: format!("RuntimeClass {class} is missing; running without gVisor because the controller allows it"),
                });
                false
            }
            _ => {
                return self.finish(Outcome::new(
                    Phase::Failed,
                    "SandboxUnavailable",
                    format!("RuntimeClass {class} does not exist; no pod was created (install gVisor and the RuntimeClass)"),
                ));
            }
        };
        let attempt_id = self.key.attempt_id(self.status.run_generation, attempt);
        let pod_name = pod_name(&self.owner.name, &attempt_id);
        let policy_name = child_name(&self.owner.name, POLICY_SUFFIX);
        let workspace_name = child_name(&self.owner.name, WORKSPACE_SUFFIX);
        let fetched = match &self.obs.source {
            Some(Ok(source)) => Some(source),
            _ => None,
        };
        if matches!(self.ev.spec.source, Some(Source::Git(_))) && fetched.is_none() {
            let message = "the git source was not read before starting the pod".to_string();
            return self.finish(Outcome::new(Phase::Failed, "SourceUnavailable", message));
        }
        if let Some(source) = fetched {
            let provenance = self
                .status
                .provenance
                .get_or_insert_with(Provenance::default);
            provenance.repo = Some(source.repo.clone());
            provenance.commit = Some(source.commit.clone());
        }
        let workspace = desired_workspace(
            &self.ev.spec,
            &self.owner,
            &workspace_name,
            fetched.map(|f| &f.files),
        );
        let timeout_seconds = i64::try_from(timeout(self.ev, self.config).as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        let pod = desired_pod(
            &self.ev.spec,
            &self.owner,
            &Attempt {
                pod_name: &pod_name,
                attempt_id: &attempt_id,
                runtime_class: sandboxed.then_some(class.as_str()),
                timeout_seconds,
                workspace: workspace.as_ref(),
            },
            self.config,
        );
        self.plan_create
            .push(Child::NetworkPolicy(Box::new(desired_network_policy(
                &self.ev.spec,
                &self.owner,
                &policy_name,
            ))));
        if let Some(workspace) = workspace {
            self.plan_create
                .push(Child::ConfigMap(Box::new(workspace.config_map)));
        }
        self.plan_create.push(Child::Pod(Box::new(pod)));
        self.status.phase = Some(Phase::Pending);
        self.status.attempts = Some(attempt);
        self.status.pod_name = Some(pod_name);
        self.status.start_time = Some(self.obs.now.clone());
        self.status.queue = None;
        self.status.sandbox = Some(SandboxStatus {
            runtime_class_name: sandboxed.then_some(class),
            sandboxed,
        });
        self.requeue = Requeue::After(timeout(self.ev, self.config).min(MAX_RESYNC));
    }

    /// An attempt lost to the infrastructure: retry while `retries` allow, else fail.
    fn infra_failure(&mut self, reason: &str, message: String) {
        let attempts = self.status.attempts.unwrap_or(1);
        if attempts <= self.ev.spec.retries.unwrap_or(0) {
            self.notes.push(Note {
                severity: Severity::Warning,
                reason: "Retrying",
                message: format!(
                    "attempt {attempts} lost ({reason}: {message}); starting attempt {}",
                    attempts + 1
                ),
            });
            if let Some(old) = self.status.pod_name.clone() {
                self.plan_delete.push((ChildKind::Pod, old));
            }
            self.start_attempt(attempts + 1);
        } else {
            self.finish(Outcome::new(Phase::Failed, reason, message));
        }
    }

    /// Ends the run with `outcome`: status first, pod deletion after (reconcile's order).
    fn finish(&mut self, outcome: Outcome) {
        let now = self.obs.now.clone();
        let Outcome {
            phase,
            reason,
            message,
            exit_code,
            result,
            result_digest,
        } = outcome;
        self.status.phase = phase;
        self.status.reason = reason;
        self.status.message = message;
        self.status.exit_code = exit_code;
        self.status.queue = None;
        if let Some(capture) = self.obs.logs.get(EVALUATION_CONTAINER) {
            self.status.log_tail = Some(capture.tail.clone());
        }
        if let Some(start) = &self.status.start_time {
            self.status.duration = Some(duration::render(elapsed(start, &now)));
        }
        self.status.completion_time = Some(now);
        let image_id = self
            .current_pod()
            .and_then(|p| phase::container_status(p, EVALUATION_CONTAINER))
            .map(|c| c.image_id.clone())
            .filter(|id| !id.is_empty());
        let provenance = self
            .status
            .provenance
            .get_or_insert_with(Provenance::default);
        provenance.image_id = image_id;
        provenance.result_digest = result_digest;
        self.status.result = result;
        self.finished();
    }

    /// A finished run: remove its pod (unless kept for debugging) and, after the TTL, every
    /// child; the Evaluation and its status stay.
    fn finished(&mut self) {
        let passed = self.status.result.as_ref().is_some_and(|r| r.passed);
        let keep = self.ev.spec.keep_pod_on_failure == Some(true) && !passed;
        let current = self
            .current_pod()
            .filter(|p| p.meta().deletion_timestamp.is_none())
            .map(|p| p.name_any());
        let ttl = self
            .ev
            .spec
            .ttl_seconds_after_finished
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
        let age = self
            .status
            .completion_time
            .as_ref()
            .map(|t| elapsed(t, &self.obs.now));
        match (ttl, age) {
            (Some(ttl), Some(age)) if age >= ttl => {
                if let Some(pod) = current {
                    self.plan_delete.push((ChildKind::Pod, pod));
                }
                self.plan_delete.push((
                    ChildKind::NetworkPolicy,
                    child_name(&self.owner.name, POLICY_SUFFIX),
                ));
                if self.ev.spec.source.is_some() {
                    self.plan_delete.push((
                        ChildKind::ConfigMap,
                        child_name(&self.owner.name, WORKSPACE_SUFFIX),
                    ));
                }
                self.requeue = Requeue::AwaitChange;
            }
            (ttl, age) => {
                if let (Some(pod), false) = (current, keep) {
                    self.plan_delete.push((ChildKind::Pod, pod));
                }
                self.requeue = match (ttl, age) {
                    (Some(ttl), Some(age)) => Requeue::After(ttl - age),
                    _ => Requeue::AwaitChange,
                };
                if follows(self.ev) {
                    // Look for new commits on the followed branch.
                    self.requeue = match self.requeue {
                        Requeue::After(d) => Requeue::After(d.min(self.config.follow_interval)),
                        Requeue::AwaitChange => Requeue::After(self.config.follow_interval),
                    };
                }
            }
        }
    }
}

/// Writes every condition from the status (kstatus + domain conditions).
///
/// NB: every message is non-empty: a 1.20 API server turns `""` into `null` under server-side
/// apply, and `message` is a required string of `metav1.Condition`.
fn set_conditions(status: &mut EvaluationStatus, generation: Option<i64>, now: &Time) {
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
    let ready = finished && passed == Some(true);
    let stalled = finished && !ready;
    let admitted =
        phase != Phase::Queued && !matches!(reason.as_str(), "InvalidSpec" | "SandboxUnavailable");
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
        Some(true) => (Status::True, "ScoreAboveThreshold"),
        Some(false) => (Status::False, "ScoreBelowThreshold"),
        None if finished => (Status::False, "NoResult"),
        None => (Status::Unknown, "NotFinished"),
    };
    set(PASSED, passed_status, passed_reason, &outcome);
}

/// Reason of `Stalled`/`Ready=False` for a finished run that did not pass.
fn stalled_reason(phase: Phase, reason: &str) -> &str {
    match phase {
        Phase::Succeeded => "EvaluationFailed",
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
fn transition_note(status: &EvaluationStatus) -> Option<Note> {
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
        Phase::Pending => (
            Severity::Normal,
            "Admitted",
            format!(
                "created pod {} (attempt {})",
                status.pod_name.as_deref().unwrap_or(""),
                status.attempts.unwrap_or(1)
            ),
        ),
        Phase::Running => (
            Severity::Normal,
            "Started",
            format!(
                "pod {} is running",
                status.pod_name.as_deref().unwrap_or("")
            ),
        ),
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

/// A child the API server refused to create, for good (not a passing error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `SandboxUnavailable` (NetworkPolicy or RuntimeClass refused) or `PodRejected`.
    pub reason: &'static str,
    /// What the API server said.
    pub message: String,
}

/// Turns a plan whose children the API server refused into a fail-closed status: no pod, the
/// run Failed with the refusal's reason.
pub fn refused(ev: &Evaluation, mut plan: Plan, refusal: Refusal, now: &Time) -> Plan {
    plan.create.clear();
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
#[path = "plan_tests.rs"]
mod tests;
