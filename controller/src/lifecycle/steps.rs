//! Advancing a run one step: validate, queue, watch an attempt, finish it, clean up (starting
//! an attempt is in [`start`](super::start)). Pure.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{Resource, ResourceExt};

use crate::admission::Decision;
use crate::admission::ledger::reported_position;
use crate::config::Config;
use crate::crd::bounds::shown;
use crate::crd::conditions;
use crate::crd::evaluation::NetworkMode;
use crate::crd::evaluation::{Evaluation, EvaluationStatus, Phase, Provenance, QueueStatus};
use crate::crd::samples::SamplesStatus;
use crate::crd::shown_estimate;
use crate::duration;
use crate::gateway::endpoint;
use crate::gateway::notice::UsageAnswer;
use crate::requeue::Requeue;
use crate::run::identity::{RunKey, child_name};
use crate::run::phase::{self, Outcome, PodState};
use crate::run::pod::{EVALUATION_CONTAINER, SCORER_CONTAINER};
use crate::run::validate;
use crate::samples::Collected;

use super::predicates::*;
use super::samples::{self, Samples};
use super::usage;
use super::*;

/// The status message of a run whose samples are being stored.
const STORING_SAMPLES: &str = "the evaluation finished; storing its samples";
/// Status reason of a run waiting for a ModelEndpoint to become Ready.
pub const ENDPOINT_NOT_READY: &str = "ModelEndpointNotReady";
/// Most characters of a ModelEndpoint's reason and message a waiting run's status repeats.
const MAX_ENDPOINT_MESSAGE: usize = 256;
/// Prefix of the status message of a run whose pod the scheduler cannot place.
const WAITING_FOR_NODE: &str = "waiting for a node: ";

pub(super) struct Planner<'a> {
    pub(super) ev: &'a Evaluation,
    pub(super) obs: &'a Observed,
    pub(super) admission: &'a Decision,
    pub(super) config: &'a Config,
    pub(super) owner: Owner,
    pub(super) key: RunKey,
    pub(super) status: EvaluationStatus,
    pub(super) plan_create: Vec<Child>,
    pub(super) plan_delete: Vec<(ChildKind, String)>,
    pub(super) notes: Vec<Note>,
    pub(super) requeue: Requeue,
    pub(super) in_queue: bool,
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
    pub(super) fn step(&mut self) {
        if let Some(UsageAnswer::Latest(Some(Ok(usage))) | UsageAnswer::Final(Ok(usage))) =
            &self.obs.usage
        {
            self.status.usage = Some(usage.status(&self.ev.spec));
        }
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
        if matches!(self.status.phase, None | Some(Phase::Queued))
            && let Some(why) = self.endpoint_not_ready()
        {
            self.wait_in_queue(0, why);
            // Not in the admission queue: it must not hold up the runs behind it; the endpoint
            // becoming Ready brings it back to the gate.
            self.in_queue = false;
            return;
        }
        match self.status.phase {
            None | Some(Phase::Queued) => match self.admission {
                // A retry that waited for admission goes on counting its attempts.
                Decision::Admit => self.start_attempt(self.status.attempts.map_or(1, |a| a + 1)),
                Decision::Refuse { reason } => self.finish(Outcome::new(
                    Phase::Failed,
                    "ExceedsControllerLimit",
                    reason.clone(),
                )),
                Decision::Wait { position, reason } => {
                    let position = i32::try_from(reported_position(*position)).unwrap_or(i32::MAX);
                    self.wait_in_queue(position, reason.clone())
                }
            },
            Some(_) => match self.obs.stop.clone() {
                Some(why) => self.finish(Outcome::new(Phase::Cancelled, "EmergencyStop", why)),
                None => self.watch_attempt(),
            },
        }
    }

    /// A git source that could not be read: no pod. A fetch still under way waits for its
    /// end (which reconciles the run again); network trouble waits and retries; anything
    /// else ends the run with the source's reason.
    fn source_problem(&mut self, problem: SourceProblem) {
        if !problem.transient {
            return self.finish(Outcome::new(Phase::Failed, problem.reason, problem.message));
        }
        if problem.is_pending() {
            self.wait_in_queue(0, format!("{}: {}", problem.reason, problem.message));
            // Not in the admission queue: the fetch's end brings the run back to the gate.
            self.in_queue = false;
            return;
        }
        self.wait_in_queue(
            0,
            format!("{}: {} (retrying)", problem.reason, problem.message),
        );
        // Not in the admission queue while the source is unreadable: it must not hold up
        // the runs behind it.
        self.in_queue = false;
        self.requeue = Requeue::After(SOURCE_RETRY);
    }

    /// Why a run with models may not start yet: a ModelEndpoint it names exists but is not
    /// Ready (its Secret is missing, unmarked or bound to another host: the platform team's
    /// to fix, so the run waits as for any missing dependency). One that does not exist at all
    /// is the run's own mistake and ends it when the attempt starts.
    fn endpoint_not_ready(&self) -> Option<String> {
        self.obs
            .model_endpoints
            .iter()
            .find_map(|(name, endpoint)| {
                let endpoint = endpoint.as_ref()?;
                if endpoint::is_ready(endpoint) {
                    return None;
                }
                let ready = endpoint
                    .status
                    .as_ref()
                    .and_then(|s| conditions::find(&s.conditions, conditions::READY))
                    .filter(|c| c.observed_generation == endpoint.metadata.generation);
                // The endpoint's status is text of the cluster's, not of this run: cut to size.
                let cut = |text: &str| text.chars().take(MAX_ENDPOINT_MESSAGE).collect::<String>();
                Some(match ready {
                    Some(c) => format!(
                        "{ENDPOINT_NOT_READY}: ModelEndpoint {} is not Ready: {}: {}",
                        shown(name),
                        cut(&c.reason),
                        cut(&c.message)
                    ),
                    None => format!(
                        "{ENDPOINT_NOT_READY}: ModelEndpoint {} has not been checked yet",
                        shown(name)
                    ),
                })
            })
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
        self.in_queue = true;
        self.status.phase = Some(Phase::Queued);
        self.status.reason = Some(queued_reason(&reason).to_string());
        self.status.queue = Some(QueueStatus {
            position: Some(position),
            reason: Some(reason),
            since: Some(since.clone()),
        });
        // The gate wakes the run when it may start or its position moves; only the
        // queueTimeout needs a clock.
        self.requeue = match limit {
            Some(limit) => Requeue::After(
                limit
                    .saturating_sub(elapsed(&since, &now))
                    .max(Duration::from_secs(1)),
            ),
            None => Requeue::AwaitChange,
        };
    }

    fn watch_attempt(&mut self) {
        let Some(pod) = self.current_pod().cloned() else {
            let name = self.status.pod_name.clone().unwrap_or_default();
            return self.infra_failure(
                "PodLost",
                format!("pod {name} disappeared before it finished"),
            );
        };
        let admitted = crate::admission::candidate::request(&self.ev.spec, self.config);
        if let Some(why) = phase::grown_past(&pod, &admitted) {
            self.finish(Outcome::new(Phase::Failed, "PodResized", why));
            // Stopped even under keepPodOnFailure: a kept pod would go on using more than
            // any quota counts.
            let name = pod.name_any();
            if pod.meta().deletion_timestamp.is_none()
                && !self.plan_delete.iter().any(|(_, n)| *n == name)
            {
                self.plan_delete.push((ChildKind::Pod, name));
            }
            return;
        }
        let state = phase::examine(&pod, &self.ev.spec, &self.obs.logs, self.threshold());
        let left = time_to_deadline(self.ev, &self.status, &self.obs.now, self.config);
        match state {
            // The run's end waits for its usage asked after the pod ended (a refusal of
            // its last calls counts); the answer, or the question's timeout, wakes it.
            PodState::Finished(_) if matches!(self.obs.usage, Some(UsageAnswer::Latest(_))) => {
                self.requeue = Requeue::AwaitChange;
            }
            PodState::Finished(mut outcome) => {
                if let Some(capture) = self.obs.logs.values().find(|c| c.unread) {
                    let said = outcome.message.take().unwrap_or_default();
                    outcome.message = Some(format!(
                        "{said}{}the pod's log could not be read {} after it finished (its node may be gone), so the run ended without it: {}",
                        if said.is_empty() { "" } else { "; " },
                        duration::render(LOG_WAIT),
                        capture.tail
                    ));
                }
                match self.obs.samples.clone() {
                    Some(Samples::Pending) => self.await_samples(),
                    Some(Samples::Done(samples)) => {
                        let (outcome, samples) =
                            samples::with_samples(outcome, samples, self.threshold());
                        self.finish_pod(outcome);
                        if let Some(collected) = samples {
                            let Collected {
                                samples,
                                comparison,
                            } = *collected;
                            self.show_interval(&samples);
                            self.status.samples = Some(samples);
                            self.status.comparison = comparison;
                        }
                    }
                    Some(Samples::Skipped(why)) => {
                        let said = outcome.message.take().unwrap_or_default();
                        outcome.message =
                            Some(format!("{said}; its samples were not stored: {why}"));
                        self.finish_pod(outcome);
                    }
                    None => self.finish_pod(outcome),
                }
            }
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
                // An attempt that ran never goes back to Pending: between two containers (the
                // evaluation done, the next one starting) its pod reads as waiting, and going
                // back would announce the same pod as admitted again.
                let ran = self.status.phase == Some(Phase::Running);
                self.status.phase = Some(if state == PodState::Running || ran {
                    Phase::Running
                } else {
                    Phase::Pending
                });
                // Say why a pod waits for a node (no GPU node, too little CPU), and stop
                // saying it once placed.
                let waiting = self
                    .status
                    .message
                    .as_deref()
                    .is_some_and(|m| m.starts_with(WAITING_FOR_NODE));
                match phase::unschedulable(&pod) {
                    Some(why) => self.status.message = Some(format!("{WAITING_FOR_NODE}{why}")),
                    None if waiting => self.status.message = None,
                    None => {}
                }
                let wait = left.unwrap_or(MAX_RESYNC).min(MAX_RESYNC);
                self.requeue = Requeue::After(wait.max(Duration::from_secs(1)));
            }
        }
    }

    /// Ends the run with its finished pod's `outcome`, its model usage considered.
    fn finish_pod(&mut self, outcome: Outcome) {
        let usage = match &self.obs.usage {
            Some(UsageAnswer::Final(answer)) => Some(answer),
            _ => None,
        };
        self.finish(usage::with_usage(outcome, usage));
    }

    /// The pod's steps succeeded and its samples are on their way to the store: the run stays
    /// `Running` (its pod kept, so a transfer cut off can be done again from the log) until
    /// the transfer's end reconciles it.
    fn await_samples(&mut self) {
        self.status.phase = Some(Phase::Running);
        self.status.message = Some(STORING_SAMPLES.into());
        self.requeue = Requeue::AwaitChange;
    }

    /// The Score column with the samples' interval when the score is their mean (derived, or
    /// reported as the same number).
    fn show_interval(&mut self, samples: &SamplesStatus) {
        let Some(result) = &self.status.result else {
            return;
        };
        if (result.score - samples.mean).abs() <= 1e-9 * samples.mean.abs().max(1.0) {
            self.status.shown_score = Some(shown_estimate(result.score, samples.ci95.as_ref()));
        }
    }

    /// An attempt lost to the infrastructure: retry while `retries` allow, else fail. The new
    /// attempt is admitted like any run: its run normally still holds its admission (then the
    /// gate admits it again at once), but one that lost it (a restart while its pod vanished)
    /// waits in the queue instead of starting beside the runs admitted meanwhile.
    fn infra_failure(&mut self, reason: &str, message: String) {
        let attempts = self.status.attempts.unwrap_or(1);
        if attempts > self.ev.spec.retries.unwrap_or(0) {
            return self.finish(Outcome::new(Phase::Failed, reason, message));
        }
        if let Some(old) = self.status.pod_name.take() {
            self.plan_delete.push((ChildKind::Pod, old));
        }
        let next = attempts + 1;
        let lost = format!("attempt {attempts} lost ({reason}: {message})");
        match self.admission {
            Decision::Admit => {
                self.notes.push(Note {
                    severity: Severity::Warning,
                    reason: "Retrying",
                    message: format!("{lost}; starting attempt {next}"),
                });
                self.start_attempt(next);
            }
            Decision::Refuse { reason } => self.finish(Outcome::new(
                Phase::Failed,
                "ExceedsControllerLimit",
                reason.clone(),
            )),
            Decision::Wait { position, reason } => {
                self.notes.push(Note {
                    severity: Severity::Warning,
                    reason: "Retrying",
                    message: format!("{lost}; attempt {next} waits for admission"),
                });
                self.status.start_time = None;
                let position = i32::try_from(reported_position(*position)).unwrap_or(i32::MAX);
                self.wait_in_queue(position, reason.clone());
            }
        }
    }

    /// Ends the run with `outcome`: status first, pod deletion after (reconcile's order).
    pub(super) fn finish(&mut self, outcome: Outcome) {
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
        // Why scoring did not succeed is in the scorer's own output; the pod is deleted next.
        if phase != Some(Phase::Succeeded)
            && let Some(capture) = self.obs.logs.get(SCORER_CONTAINER)
        {
            self.status.scorer_log_tail = Some(capture.tail.clone());
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
        self.status.shown_score = result.as_ref().map(|r| crate::crd::shown_number(r.score));
        self.status.result = result;
        self.finished();
    }

    /// A finished run: remove its pod (unless kept for debugging) and, after the TTL, every
    /// child; the Evaluation and its status stay.
    pub(super) fn finished(&mut self) {
        let passed = self.status.passed();
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
                // Once: the status remembers it, so later reconciles send no DELETEs. The
                // namespace's deny-all policy and a suite's shared workspace are not the run's.
                if self.status.children_removed != Some(true) {
                    self.status.children_removed = Some(true);
                    // Both an Allowlist run and a run with models have a policy of their own.
                    if validate::network_mode(&self.ev.spec) == NetworkMode::Allowlist
                        || !crate::run::models::models(&self.ev.spec).is_empty()
                    {
                        self.plan_delete.push((
                            ChildKind::NetworkPolicy,
                            child_name(&self.owner.name, POLICY_SUFFIX),
                        ));
                    }
                    if let Some((name, _)) = self.own_workspace(Some(&self.status)) {
                        self.plan_delete.push((ChildKind::ConfigMap, name));
                    }
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
                    self.requeue = self.requeue.within(self.config.follow_interval);
                }
            }
        }
    }
}
