//! The objects the benchmark creates, as JSON, and what it reads back from the ones it watches.
//! JSON rather than the controller's Rust types, so the benchmark does not rebuild with every
//! controller change and keeps working across its rewrites.

use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};

/// Label on every namespace the benchmark creates, valued with the run's id.
pub const RUN_LABEL: &str = "crucible.dev/bench";
/// Label on the pods of Jobs and bare pods, valued with the run's id and the sub-run.
pub const POD_LABEL: &str = "crucible.dev/bench-pod";
/// Label the controller puts on every pod it creates (selects sandbox pods in a watch).
pub const MANAGED_LABEL: &str = "crucible.dev/managed";
/// Field manager of everything the benchmark applies.
pub const MANAGER: &str = "crucible-bench";
/// The image of every sandbox (imported by infrastructure/local).
pub const IMAGE: &str = "localhost/crucible/python:3.11";
/// A node label no node has: the Job baseline's pods stay unschedulable.
const NO_NODE: (&str, &str) = ("crucible.dev/bench-no-such-node", "true");

/// Python that reports a passing result (docs/results-protocol.md) and exits.
const TRIVIAL_PYTHON: &str = r#"print('CRUCIBLE_RESULT {"score": 1}')"#;

/// Evaluations.
pub fn evaluations() -> ApiResource {
    resource("crucible.dev", "v1alpha1", "Evaluation", "evaluations")
}

/// EvaluationQuotas.
pub fn quotas() -> ApiResource {
    resource(
        "crucible.dev",
        "v1alpha1",
        "EvaluationQuota",
        "evaluationquotas",
    )
}

/// Jobs.
pub fn jobs() -> ApiResource {
    resource("batch", "v1", "Job", "jobs")
}

/// Pods.
pub fn pods() -> ApiResource {
    resource("", "v1", "Pod", "pods")
}

pub fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// What an evaluation's sandbox asks for.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// The controller's defaults (1 CPU: two run at once on the 2-core node).
    Default,
    /// More CPU than any node has: the pod is created but never scheduled.
    Unschedulable {
        /// Whole CPUs requested.
        cpus: u32,
    },
}

/// A trivial Evaluation (python prints a passing result) named `name`.
pub fn evaluation(name: &str, shape: Shape, timeout: &str) -> Value {
    let mut ev = json!({
        "apiVersion": "crucible.dev/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": name},
        "spec": {
            "image": IMAGE,
            "command": ["python3", "-c", TRIVIAL_PYTHON],
            "timeout": timeout,
        }
    });
    if let Shape::Unschedulable { cpus } = shape {
        ev["spec"]["resources"] = json!({"cpu": cpus.to_string()});
    }
    ev
}

/// An EvaluationQuota for the namespace.
pub fn quota(max_running: usize, paused: bool) -> Value {
    json!({
        "apiVersion": "crucible.dev/v1alpha1",
        "kind": "EvaluationQuota",
        "metadata": {"name": "bench"},
        "spec": {"maxRunning": max_running, "paused": paused},
    })
}

/// The pod spec of a pod the controller created, to be reused by a Job or a bare pod: what
/// the scheduler filled in (`nodeName`) is dropped, everything else is kept as is.
pub fn reusable_spec(pod: &DynamicObject) -> Option<Value> {
    let mut spec = pod.data.get("spec")?.clone();
    spec.as_object_mut()?.remove("nodeName");
    Some(spec)
}

/// Makes `spec` unschedulable by a node selector no node matches.
pub fn unschedulable(mut spec: Value) -> Value {
    spec["nodeSelector"] = json!({NO_NODE.0: NO_NODE.1});
    spec
}

/// A Job of one pod (completions 1, parallelism 1, no retries) from `spec`, its pod labelled
/// `POD_LABEL=pod_label`.
pub fn job(name: &str, spec: &Value, pod_label: &str) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": 0,
            "template": {"metadata": {"labels": {POD_LABEL: pod_label}}, "spec": spec},
        }
    })
}

/// A bare pod of `spec`, labelled `POD_LABEL=pod_label` (and nothing the controller selects).
pub fn pod(name: &str, spec: &Value, pod_label: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {POD_LABEL: pod_label}},
        "spec": spec,
    })
}

/// Whole CPUs of a Kubernetes CPU quantity (`2`, `1500m`), rounded up; `None` if unreadable.
pub fn whole_cpus(quantity: &str) -> Option<u32> {
    u32::try_from(millicpus(quantity)?.div_ceil(1000)).ok()
}

/// Millicores of a Kubernetes CPU quantity (`2`, `1500m`, `0.5`), rounded up; `None` if
/// unreadable.
pub fn millicpus(quantity: &str) -> Option<u64> {
    match quantity.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => {
            let cores: f64 = quantity.parse().ok()?;
            (cores.is_finite() && cores >= 0.0).then(|| (cores * 1000.0).ceil() as u64)
        }
    }
}

fn status(obj: &DynamicObject) -> &Value {
    &obj.data["status"]
}

/// The Evaluation has a status: a phase, or at least one condition.
pub fn has_status(obj: &DynamicObject) -> bool {
    let s = status(obj);
    s["phase"].is_string() || s["conditions"].as_array().is_some_and(|c| !c.is_empty())
}

/// The Evaluation's run is over.
pub fn finished(obj: &DynamicObject) -> bool {
    matches!(
        status(obj)["phase"].as_str(),
        Some("Succeeded" | "Failed" | "TimedOut" | "Cancelled")
    )
}

/// The Evaluation's status carries a result.
pub fn has_result(obj: &DynamicObject) -> bool {
    status(obj)["result"].is_object()
}

/// The pod is Succeeded or Failed.
pub fn pod_terminal(obj: &DynamicObject) -> bool {
    matches!(status(obj)["phase"].as_str(), Some("Succeeded" | "Failed"))
}

/// The Job's one pod has succeeded or failed (backoffLimit 0: no retry).
pub fn job_done(obj: &DynamicObject) -> bool {
    let s = status(obj);
    s["succeeded"].as_i64().unwrap_or(0) + s["failed"].as_i64().unwrap_or(0) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn cpu_quantities_round_up_to_whole_cpus() {
        assert_eq!(whole_cpus("2"), Some(2));
        assert_eq!(whole_cpus("1500m"), Some(2));
        assert_eq!(whole_cpus("2000m"), Some(2));
        assert_eq!(whole_cpus("lots"), None);
        assert_eq!(millicpus("0.05"), Some(50));
        assert_eq!(millicpus("1500m"), Some(1500));
    }

    #[test]
    fn unschedulable_evaluations_ask_for_more_cpu_than_given() {
        let ev = evaluation("ev-1", Shape::Unschedulable { cpus: 3 }, "30m");
        assert_eq!(ev["spec"]["resources"]["cpu"], "3");
        assert_eq!(ev["metadata"]["name"], "ev-1");
        let plain = evaluation("ev-2", Shape::Default, "1m");
        assert!(plain["spec"].get("resources").is_none());
    }

    #[test]
    fn a_reused_spec_loses_its_node_and_jobs_carry_the_pod_label() {
        let pod = object(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"nodeName": "n1", "runtimeClassName": "gvisor", "containers": []},
            "status": {"phase": "Pending"}
        }));
        let spec = reusable_spec(&pod).unwrap();
        assert!(spec.get("nodeName").is_none());
        assert_eq!(spec["runtimeClassName"], "gvisor");
        let job = job("j-1", &unschedulable(spec), "run-a");
        let template = &job["spec"]["template"];
        assert_eq!(template["metadata"]["labels"][POD_LABEL], "run-a");
        assert_eq!(template["spec"]["nodeSelector"][NO_NODE.0], NO_NODE.1);
    }

    #[test]
    fn status_predicates_read_phase_conditions_and_result() {
        let ev = |status: Value| {
            object(json!({
                "apiVersion": "crucible.dev/v1alpha1", "kind": "Evaluation",
                "metadata": {"name": "e"}, "status": status
            }))
        };
        assert!(!has_status(&ev(json!({}))));
        assert!(!has_status(&ev(json!({"conditions": []}))));
        assert!(has_status(&ev(
            json!({"conditions": [{"type": "Reconciling"}]})
        )));
        assert!(has_status(&ev(json!({"phase": "Queued"}))));
        assert!(!finished(&ev(json!({"phase": "Running"}))));
        assert!(finished(&ev(json!({"phase": "TimedOut"}))));
        assert!(!has_result(&ev(json!({"phase": "Succeeded"}))));
        assert!(has_result(&ev(json!({"result": {"score": 1.0}}))));
        let job = |status: Value| {
            object(json!({
                "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                "status": status
            }))
        };
        assert!(!job_done(&job(json!({"active": 1}))));
        assert!(job_done(&job(json!({"succeeded": 1}))));
    }
}
