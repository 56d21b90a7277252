//! Questions about an Evaluation's run, asked by `observe` (what to read), `reconcile` (whether
//! to ask the admission gate) and the planner. Pure.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::config::Config;
use crate::crd::evaluation::{Evaluation, EvaluationStatus, Phase, Source};
use crate::duration;
use crate::run::identity::RunKey;
use crate::run::liveness;
use crate::run::phase::{self};
use crate::run::pod::{EVALUATION_CONTAINER, SAMPLES_CONTAINER};

use super::*;

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

/// Whether a run that has started needs its source now: only to start its next attempt,
/// when the current attempt's pod is gone or failed. A run whose pod lives fetches nothing.
pub fn started_run_needs_source(ev: &Evaluation, pods: &[Pod]) -> bool {
    let Some(name) = ev.status.as_ref().and_then(|s| s.pod_name.as_deref()) else {
        return true;
    };
    !pods.iter().any(|pod| {
        pod.metadata.name.as_deref() == Some(name)
            && pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Failed")
    })
}

/// The logs `plan` needs now, as [`logs_needed`] finds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogsNeeded {
    /// The pod of the current attempt.
    pub pod: String,
    /// Its containers that have a log.
    pub containers: Vec<&'static str>,
    /// Whether the pod is being stopped (not finished by itself): then the run must end even
    /// when its log cannot be read.
    pub stopping: bool,
    /// Whether the pod finished by itself more than [`LOG_WAIT`] ago: its log may hold the
    /// result, but a log that still cannot be read (its node gone) must not hold the run and
    /// its slot forever, so the run ends without it.
    pub overdue: bool,
}

/// The pod of the current attempt of an unfinished run, and the containers whose logs `plan`
/// will need from it now. `observe` calls this to read only the logs that matter.
pub fn logs_needed(
    ev: &Evaluation,
    pods: &[Pod],
    now: &Time,
    stopped: bool,
    config: &Config,
) -> Option<LogsNeeded> {
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
    let finished = liveness::is_terminal(pod);
    if !finished && !stopping {
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
    let overdue =
        finished && phase::finished_at(pod).is_some_and(|at| elapsed(&at, now) >= LOG_WAIT);
    Some(LogsNeeded {
        pod: pod.name_any(),
        containers,
        stopping: !finished,
        overdue,
    })
}

/// The pod of an unfinished run whose steps all succeeded and that has a samples container:
/// its samples must be carried out before the run finishes (docs/samples.md, "Transport").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SamplesNeeded {
    /// The pod.
    pub pod: String,
    /// The run id (one transfer per run).
    pub run_id: String,
    /// Whether the samples container has stopped, so that its log is complete.
    pub ready: bool,
}

/// See [`SamplesNeeded`]. A pod that failed publishes no samples.
pub fn samples_needed(ev: &Evaluation, pods: &[Pod]) -> Option<SamplesNeeded> {
    let status = ev.status.as_ref()?;
    if !is_current_run(status, &RunKey::of(ev)) || status.phase.is_some_and(Phase::is_finished) {
        return None;
    }
    let pod = pods
        .iter()
        .find(|p| Some(p.name_any()) == status.pod_name)?;
    let has_container = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == SAMPLES_CONTAINER));
    if !has_container || liveness::phase(pod) != Some("Succeeded") {
        return None;
    }
    let ready = phase::container_status(pod, SAMPLES_CONTAINER)
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.terminated.is_some());
    Some(SamplesNeeded {
        pod: pod.name_any(),
        run_id: status.run_id.clone()?,
        ready,
    })
}

pub(super) fn timeout(ev: &Evaluation, config: &Config) -> Duration {
    ev.spec
        .timeout
        .as_deref()
        .and_then(|t| duration::parse(t).ok())
        .unwrap_or(config.default_timeout)
}

pub(super) fn elapsed(from: &Time, to: &Time) -> Duration {
    Duration::try_from(to.0.duration_since(from.0)).unwrap_or(Duration::ZERO)
}

/// Time left before the controller-side deadline of the current attempt.
pub(super) fn time_to_deadline(
    ev: &Evaluation,
    status: &EvaluationStatus,
    now: &Time,
    config: &Config,
) -> Option<Duration> {
    let start = status.start_time.as_ref()?;
    let limit = timeout(ev, config) + DEADLINE_GRACE;
    Some(limit.saturating_sub(elapsed(start, now)))
}

pub(super) fn deadline_passed(
    ev: &Evaluation,
    status: &EvaluationStatus,
    now: &Time,
    config: &Config,
) -> bool {
    time_to_deadline(ev, status, now, config) == Some(Duration::ZERO)
}

/// How long a run that this plan starts waited in the queue (for the queue-wait histogram).
pub fn queue_wait(ev: &Evaluation, plan: &Plan, now: &Time) -> Option<Duration> {
    let started = plan.status.phase == Some(Phase::Pending) && !plan.create.is_empty();
    let status = ev.status.as_ref()?;
    let since = status.queue.as_ref()?.since.as_ref()?;
    (started && status.phase == Some(Phase::Queued)).then(|| elapsed(since, now))
}
