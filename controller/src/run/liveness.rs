//! Whether a sandbox pod still runs, and so still holds its run's admission. Pure; shared by
//! the controllers, the admission gate and `crucible stop`.
//!
//! A pod holds its share until it is terminal or gone. A pod being deleted whose node never
//! confirms (a lost node, an unreachable kubelet) counts as gone once its deletion deadline
//! (`deletionTimestamp`, which already includes the grace period) is [`DELETION_SLACK`] past;
//! a pod in phase `Unknown` (its node lost) counts as gone at once.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::labels::{RUN_ID_LABEL, RUN_LABEL};
use crate::quantity;
use crate::run::request::Request;

/// How long after its deletion deadline a pod that is still listed counts as gone.
pub const DELETION_SLACK: Duration = Duration::from_secs(30);

/// Extended resource name of NVIDIA GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// The pod's phase, as the kubelet reports it.
pub fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// Whether the pod has stopped for good (restartPolicy Never).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), Some("Succeeded" | "Failed"))
}

/// When a pod being deleted stops counting even if it is still listed.
pub fn release_at(pod: &Pod) -> Option<Time> {
    let deadline = pod.metadata.deletion_timestamp.as_ref()?;
    let slack = jiff::SignedDuration::try_from(DELETION_SLACK).unwrap_or_default();
    deadline.0.checked_add(slack).ok().map(Time)
}

/// Whether the pod still holds its run's admission at `now`.
pub fn holds_capacity(pod: &Pod, now: &Time) -> bool {
    if is_terminal(pod) || phase(pod) == Some("Unknown") {
        return false;
    }
    release_at(pod).is_none_or(|at| now.0 < at.0)
}

/// The run a pod belongs to: its `crucible.dev/run-id` label, or for pods made before that
/// label existed its attempt label.
pub fn run_of(pod: &Pod) -> Option<String> {
    let labels = pod.labels();
    labels
        .get(RUN_ID_LABEL)
        .or_else(|| labels.get(RUN_LABEL))
        .cloned()
}

/// What a pod holds: the largest limit of any of its run's steps, per resource (the
/// evaluation and the scorer run one after the other with the same limits). The samples
/// and network-gate containers are the controller's, small and fixed: no quota counts them.
pub fn request_of(pod: &Pod) -> Request {
    let Some(spec) = &pod.spec else {
        return Request::default();
    };
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .filter(|c| {
            c.name != crate::samples::spec::SAMPLES_CONTAINER
                && c.name != crate::network_gate::CONTAINER
        });
    containers.fold(Request::default(), |acc, c| {
        let limit = |name: &str| {
            c.resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get(name))
                .and_then(quantity::value)
                .unwrap_or(0.0)
        };
        Request {
            cpu: acc.cpu.max(limit("cpu")),
            memory: acc.memory.max(limit("memory")),
            gpu: acc.gpu.max(limit(GPU_RESOURCE)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{at, mk_pod};

    fn deleting(pod: Pod, deadline: i64) -> Pod {
        let mut pod = pod;
        pod.metadata.deletion_timestamp = Some(at(deadline));
        pod
    }

    #[test]
    fn terminal_unknown_and_overdue_deletions_hold_nothing() {
        let running = mk_pod("p", "Running", vec![]);
        assert!(holds_capacity(&running, &at(0)));
        assert!(!holds_capacity(&mk_pod("p", "Succeeded", vec![]), &at(0)));
        assert!(!holds_capacity(&mk_pod("p", "Failed", vec![]), &at(0)));
        assert!(!holds_capacity(&mk_pod("p", "Unknown", vec![]), &at(0)));
        let stopping = deleting(running, 100);
        assert!(holds_capacity(&stopping, &at(100)), "within its grace");
        assert!(holds_capacity(&stopping, &at(129)));
        assert!(
            !holds_capacity(&stopping, &at(130)),
            "the node never confirmed"
        );
        assert_eq!(release_at(&stopping), Some(at(130)));
    }

    #[test]
    fn a_pod_holds_the_largest_limit_of_its_containers() {
        use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let limits = |cpu: &str, memory: &str| ResourceRequirements {
            limits: Some(
                [
                    ("cpu".to_string(), Quantity(cpu.into())),
                    ("memory".to_string(), Quantity(memory.into())),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let mut pod = mk_pod("p", "Running", vec![]);
        pod.spec = Some(PodSpec {
            init_containers: Some(vec![Container {
                resources: Some(limits("500m", "1Gi")),
                ..Default::default()
            }]),
            containers: vec![Container {
                resources: Some(limits("250m", "2Gi")),
                ..Default::default()
            }],
            ..Default::default()
        });
        let r = request_of(&pod);
        assert_eq!(
            (r.cpu, r.memory, r.gpu),
            (0.5, 2.0 * 1024.0 * 1024.0 * 1024.0, 0.0)
        );
    }
}
