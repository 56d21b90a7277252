//! What the caches keep of each object: only what the controller reads. Server-side apply's
//! `managedFields` and `kubectl apply`'s last-applied annotation are often larger than the
//! object itself; an Evaluation's conditions, log tails and history are never read from the
//! cache (the Evaluation reconcile reads a status fresh).

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::ObjectMeta;

use crate::crd::Evaluation;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Metadata without `managedFields` and the last-applied annotation.
pub fn metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// An Evaluation as the caches keep it: spec and the status figures a suite and admission
/// read. Its conditions (six of four strings each, a third of a queued run's memory), log tail
/// and history go: a reconcile reads a status fresh.
pub fn evaluation(ev: &mut Evaluation) {
    metadata(&mut ev.metadata);
    if let Some(status) = &mut ev.status {
        status.conditions = Vec::new();
        status.log_tail = None;
        status.scorer_log_tail = None;
        status.history = Vec::new();
    }
}

/// A sandbox pod as the caches keep it: metadata, status, and of the spec only what
/// admission and the phase mapping read (node, RuntimeClass, the containers' names and
/// resources).
pub fn pod(pod: &mut Pod) {
    metadata(&mut pod.metadata);
    let keep = |c: &Container| Container {
        name: c.name.clone(),
        resources: c.resources.clone(),
        ..Default::default()
    };
    pod.spec = pod.spec.take().map(|s| PodSpec {
        node_name: s.node_name,
        runtime_class_name: s.runtime_class_name,
        active_deadline_seconds: s.active_deadline_seconds,
        containers: s.containers.iter().map(keep).collect(),
        init_containers: s.init_containers.map(|cs| cs.iter().map(keep).collect()),
        ..Default::default()
    });
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::*;
    use crate::crd::evaluation::EvaluationStatus;

    #[test]
    fn the_bulk_goes_and_what_is_read_stays() {
        let mut ev = Evaluation::test();
        ev.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        ev.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_string(), "{...}".to_string()),
                ("crucible.dev/priority".to_string(), "3".to_string()),
            ]
            .into(),
        );
        ev.status = Some(EvaluationStatus {
            log_tail: Some("x".repeat(10_000)),
            scorer_log_tail: Some("y".repeat(4_096)),
            message: Some("kept".into()),
            ..Default::default()
        });
        if let Some(status) = ev.status.as_mut() {
            crate::crd::conditions::set_condition(
                &mut status.conditions,
                "Ready",
                crate::crd::conditions::Status::False,
                "Queued",
                "the run is Queued",
                Some(1),
                &crate::fixtures::at(0),
            );
        }
        let mut lean = ev.clone();
        evaluation(&mut lean);
        assert_eq!(lean.metadata.managed_fields, None);
        assert_eq!(
            lean.metadata.annotations,
            Some([("crucible.dev/priority".to_string(), "3".to_string())].into())
        );
        let status = lean.status.expect("status");
        assert_eq!(status.log_tail, None);
        assert_eq!(status.scorer_log_tail, None);
        assert!(status.conditions.is_empty());
        assert_eq!(status.message.as_deref(), Some("kept"));
        assert_eq!(lean.spec, ev.spec);
    }

    #[test]
    fn a_pod_keeps_its_resources_and_runtime_class() {
        let mut lean = Pod {
            spec: Some(PodSpec {
                runtime_class_name: Some("gvisor".into()),
                containers: vec![Container {
                    name: "evaluation".into(),
                    command: Some(vec!["python3".into(); 100]),
                    resources: Some(Default::default()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        pod(&mut lean);
        let spec = lean.spec.expect("spec");
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(spec.containers[0].name, "evaluation");
        assert!(spec.containers[0].resources.is_some());
        assert_eq!(spec.containers[0].command, None);
    }
}
