//! Reads a sandbox pod: is it waiting, running, finished (with which outcome), or lost to an
//! infrastructure failure? Pure; `plan` turns the answer into the next status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};

use crate::crd::conditions::NOT_PASSED;
use crate::crd::evaluation::{EvaluationResult, EvaluationSpec, Phase};
use crate::network_gate;
use crate::run::liveness;
use crate::run::pod::{EVALUATION_CONTAINER, SCORER_CONTAINER};
use crate::run::request::Request;
use crate::run::results::{self, LogCapture};

/// Waiting reasons that mean the image cannot be had: the attempt is over, and a retry may help
/// (registry hiccup, image imported late). `ErrImagePull` alone is left to the kubelet's retry.
/// The kubelet's full list (1.37, pkg/kubelet/images/types.go) adds `ImageInspectError`: the
/// runtime cannot read the image it has, which the kubelet does not retry either.
const IMAGE_FAILURES: [&str; 4] = [
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "ImageInspectError",
];
/// Waiting reasons that mean the spec itself cannot start (e.g. a missing Secret in `env`).
const CONFIG_FAILURES: [&str; 2] = ["CreateContainerConfigError", "CreateContainerError"];

/// Exit code of a gVisor evaluation container whose whole sandbox was killed. The pod's memory
/// limit is enforced on the sandbox (the Sentry holds all of the evaluation's memory), so the
/// kernel's OOM killer kills the Sentry, not the evaluated process, and containerd reports the
/// OOM for the pod sandbox only: the kubelet never says `OOMKilled` for runsc. What the
/// evaluation container's status does say, observed with runsc behind containerd's runc shim
/// (the local cluster): `terminated {exitCode: 255, reason: Error}`, no signal, no message
/// (`runsc wait` finds the sandbox gone). A program that itself exits with 255 looks the same,
/// which the message says.
const GVISOR_SANDBOX_KILLED_EXIT: i32 = 255;

/// How a run ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Final phase.
    pub phase: Option<Phase>,
    /// Machine-readable reason.
    pub reason: Option<String>,
    /// Human-readable message.
    pub message: Option<String>,
    /// Exit code of the container that decided the outcome.
    pub exit_code: Option<i32>,
    /// The valid result, if any.
    pub result: Option<EvaluationResult>,
    /// Digest of the result JSON.
    pub result_digest: Option<String>,
}

impl Outcome {
    /// An outcome with phase, reason and message.
    pub fn new(phase: Phase, reason: &str, message: impl Into<String>) -> Self {
        Outcome {
            phase: Some(phase),
            reason: Some(reason.to_string()),
            message: Some(message.into()),
            ..Default::default()
        }
    }
}

/// What a sandbox pod says about its attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum PodState {
    /// Scheduled or being created; nothing runs yet.
    Waiting,
    /// A container of the attempt is running.
    Running,
    /// The attempt ended with this outcome.
    Finished(Outcome),
    /// The attempt was lost to the infrastructure; `retries` may start another.
    InfraFailure {
        /// Reason, e.g. `Evicted`, `ImagePullBackOff`.
        reason: String,
        /// What happened.
        message: String,
    },
}

/// The container whose output is the result: the scorer when there is one.
pub fn result_container(spec: &EvaluationSpec) -> &'static str {
    if spec.scorer.is_some() {
        SCORER_CONTAINER
    } else {
        EVALUATION_CONTAINER
    }
}

/// All container statuses of the pod, init containers first.
fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    let init = status.and_then(|s| s.init_container_statuses.as_deref());
    let main = status.and_then(|s| s.container_statuses.as_deref());
    init.unwrap_or_default()
        .iter()
        .chain(main.unwrap_or_default())
}

/// The status of container `name`.
pub fn container_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    statuses(pod).find(|c| c.name == name)
}

/// Whether container `name` has started, so that it has a log to read.
pub fn has_started(pod: &Pod, name: &str) -> bool {
    container_status(pod, name).is_some_and(|c| {
        let state = c.state.as_ref();
        state.is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            || c.last_state
                .as_ref()
                .is_some_and(|s| s.terminated.is_some())
    })
}

/// When the last of the pod's containers finished (`None` while none has a finish time).
pub fn finished_at(pod: &Pod) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    statuses(pod)
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.clone())
        .max_by_key(|t| t.0)
}

/// Reads the pod of the current attempt. `logs` holds the captures `observe` read
/// (by container name); `threshold` decides `passed` when the result does not.
pub fn examine(
    pod: &Pod,
    spec: &EvaluationSpec,
    logs: &BTreeMap<String, LogCapture>,
    threshold: f64,
) -> PodState {
    let status = pod.status.clone().unwrap_or_default();
    match status.reason.as_deref() {
        // The kubelet enforced activeDeadlineSeconds.
        Some("DeadlineExceeded") => {
            return PodState::Finished(Outcome::new(
                Phase::TimedOut,
                "DeadlineExceeded",
                "the evaluation ran longer than its timeout and was stopped",
            ));
        }
        // Node pressure, preemption, node shutdown: not the evaluation's fault.
        Some(reason @ ("Evicted" | "Preempting" | "Terminated" | "Shutdown" | "NodeLost")) => {
            return PodState::InfraFailure {
                reason: reason.to_string(),
                message: status.message.unwrap_or_else(|| format!("pod {reason}")),
            };
        }
        _ => {}
    }
    if let Some(lost) = disrupted(pod) {
        return lost;
    }
    for c in statuses(pod) {
        let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or_default();
        let message = waiting.message.clone().unwrap_or_default();
        if IMAGE_FAILURES.contains(&reason) {
            return PodState::InfraFailure {
                reason: reason.to_string(),
                message: format!("container {}: {message}", c.name),
            };
        }
        if CONFIG_FAILURES.contains(&reason) {
            return PodState::Finished(Outcome::new(
                Phase::Failed,
                reason,
                format!("container {} cannot start: {message}", c.name),
            ));
        }
    }
    if liveness::is_terminal(pod) {
        return PodState::Finished(terminated_outcome(pod, spec, logs, threshold));
    }
    let running = statuses(pod).any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
    if running {
        PodState::Running
    } else {
        PodState::Waiting
    }
}

/// Why a live `pod` holds more than its run was `admitted` for, if it does: its resources were
/// changed in place (`pods/resize`, on by default from Kubernetes 1.33) after admission, so
/// the quota no longer counts what it uses. Shrinking takes nothing from anyone.
pub fn grown_past(pod: &Pod, admitted: &Request) -> Option<String> {
    // Quantities are parsed into floats.
    const EPSILON: f64 = 1e-9;
    if liveness::is_terminal(pod) {
        return None;
    }
    let held = liveness::request_of(pod);
    let grown: Vec<String> = [
        ("cpu", held.cpu, admitted.cpu),
        ("memory", held.memory, admitted.memory),
        ("gpu", held.gpu, admitted.gpu),
    ]
    .into_iter()
    .filter(|(_, held, admitted)| *held > admitted * (1.0 + EPSILON) + EPSILON)
    .map(|(name, held, admitted)| format!("{name} {held} (admitted {admitted})"))
    .collect();
    (!grown.is_empty()).then(|| {
        format!(
            "the pod's resources were resized in place past what the run was admitted for: {}; sandbox pods may not be resized, so the run was stopped",
            grown.join(", ")
        )
    })
}

/// A pod that was evicted, preempted or deleted while it ran. Current kubelets (1.27+) move such
/// a pod to `Failed` before it goes, and the control plane marks why with a `DisruptionTarget`
/// condition; its containers' exit codes are then the kill's (137, 143), not the evaluation's.
/// A `Failed` pod being deleted without that condition (a plain DELETE) is lost the same way;
/// a `Succeeded` one had finished before anyone deleted it.
fn disrupted(pod: &Pod) -> Option<PodState> {
    let status = pod.status.as_ref()?;
    let target = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True");
    if let Some(c) = target {
        let why = c.reason.as_deref().unwrap_or_default();
        let reason = match why {
            "EvictionByEvictionAPI" | "TerminationByKubelet" => "Evicted",
            "PreemptionByScheduler" => "Preempting",
            _ => "PodLost",
        };
        let detail = c.message.as_deref().unwrap_or(why);
        return Some(PodState::InfraFailure {
            reason: reason.into(),
            message: format!("pod stopped by the cluster before it finished ({detail})"),
        });
    }
    (pod.metadata.deletion_timestamp.is_some() && status.phase.as_deref() == Some("Failed")).then(
        || PodState::InfraFailure {
            reason: "PodLost".into(),
            message: "pod deleted before it finished".into(),
        },
    )
}

/// Why the scheduler cannot place `pod` (its `PodScheduled=False, Unschedulable` message,
/// e.g. `0/1 nodes are available: 1 Insufficient nvidia.com/gpu.`); `None` once placed.
pub fn unschedulable(pod: &Pod) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let scheduled = conditions.iter().find(|c| c.type_ == "PodScheduled")?;
    (scheduled.status == "False" && scheduled.reason.as_deref() == Some("Unschedulable")).then(
        || {
            scheduled
                .message
                .clone()
                .unwrap_or_else(|| "no node fits".into())
        },
    )
}

/// Why the pod's network gate failed, when it did: the policy was not in force in time, so
/// nothing else ran.
pub fn gate_failure(pod: &Pod) -> Option<String> {
    let gate = container_status(pod, network_gate::CONTAINER)?;
    let terminated = gate.state.as_ref()?.terminated.as_ref()?;
    (terminated.exit_code != 0).then(|| {
        terminated
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map_or_else(
                || format!("the network gate exited with code {}", terminated.exit_code),
                str::to_string,
            )
    })
}

/// The outcome of a pod that stopped: the evaluated code's exit code first, then (with a
/// scorer) the scorer's, then the result.
fn terminated_outcome(
    pod: &Pod,
    spec: &EvaluationSpec,
    logs: &BTreeMap<String, LogCapture>,
    threshold: f64,
) -> Outcome {
    let terminated = |name: &str| {
        container_status(pod, name)
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.clone())
    };
    if let Some(why) = gate_failure(pod) {
        return Outcome::new(Phase::Failed, "NetworkPolicyNotEnforced", why);
    }
    let Some(evaluation) = terminated(EVALUATION_CONTAINER) else {
        let message = pod
            .status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_else(|| "the pod stopped before the evaluation container ran".into());
        return Outcome::new(Phase::Failed, "PodFailed", message);
    };
    if evaluation.exit_code != 0 {
        let reason = evaluation.reason.clone().unwrap_or_else(|| "Error".into());
        let (reason, message) = if reason == "OOMKilled" {
            (
                reason,
                "the evaluation ran out of memory and was killed; raise spec.resources.memory"
                    .to_string(),
            )
        } else if gvisor_sandbox_killed(pod, &evaluation) {
            (
                "OOMKilled".to_string(),
                format!(
                    "the gVisor sandbox was killed, as the kernel does when the evaluation exceeds its memory limit (exit code {GVISOR_SANDBOX_KILLED_EXIT} from the runtime; a program that exits with {GVISOR_SANDBOX_KILLED_EXIT} itself looks the same); raise spec.resources.memory"
                ),
            )
        } else {
            (
                reason,
                format!("the evaluation exited with code {}", evaluation.exit_code),
            )
        };
        return Outcome {
            exit_code: Some(evaluation.exit_code),
            ..Outcome::new(Phase::Failed, &reason, message)
        };
    }
    let result_name = result_container(spec);
    let last = if result_name == EVALUATION_CONTAINER {
        Some(evaluation)
    } else {
        terminated(result_name)
    };
    let Some(last) = last else {
        return Outcome::new(
            Phase::Failed,
            "PodFailed",
            "the scorer did not run after the evaluation finished",
        );
    };
    if last.exit_code != 0 {
        return Outcome {
            exit_code: Some(last.exit_code),
            ..Outcome::new(
                Phase::Failed,
                "ScorerFailed",
                format!("the scorer exited with code {}", last.exit_code),
            )
        };
    }
    match results::select(last.message.as_deref(), logs.get(result_name)) {
        Ok((reported, _channel)) => {
            let digest = reported.digest.clone();
            scored(reported.into_result(threshold), Some(digest), threshold, "")
        }
        Err(why) => Outcome {
            exit_code: Some(0),
            ..Outcome::new(Phase::Failed, "InvalidResult", why)
        },
    }
}

/// The outcome of a run that produced `result` (its JSON's digest `result_digest`); `how` is
/// said after the score (e.g. where a derived score came from).
pub fn scored(
    result: EvaluationResult,
    result_digest: Option<String>,
    threshold: f64,
    how: &str,
) -> Outcome {
    let message = format!(
        "score {}{how} {} (threshold {threshold})",
        result.score,
        if result.passed {
            "passed"
        } else {
            "did not pass"
        }
    );
    Outcome {
        phase: Some(Phase::Succeeded),
        reason: Some(if result.passed { "Passed" } else { NOT_PASSED }.into()),
        message: Some(message),
        exit_code: Some(0),
        result: Some(result),
        result_digest,
    }
}

/// Whether `terminated` is how gVisor reports a sandbox killed for exceeding its memory (see
/// [`GVISOR_SANDBOX_KILLED_EXIT`]). Only for pods with a RuntimeClass: without one (the
/// explicitly unsandboxed fallback) the kubelet reports `OOMKilled` itself.
fn gvisor_sandbox_killed(pod: &Pod, terminated: &ContainerStateTerminated) -> bool {
    let sandboxed = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.runtime_class_name.is_some());
    sandboxed
        && terminated.exit_code == GVISOR_SANDBOX_KILLED_EXIT
        && terminated.signal.is_none()
        && terminated.reason.as_deref() == Some("Error")
}

#[cfg(test)]
#[path = "phase_tests.rs"]
mod tests;
