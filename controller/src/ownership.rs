//! Which objects belong to which owner: an object belongs to an Evaluation (or a suite) only if
//! it is in that owner's namespace and its controller ownerReference names that owner's uid, as
//! for the Job and ReplicaSet controllers. Labels select and describe; they never prove
//! ownership (anyone who can create a pod can copy them). Pure.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::Evaluation;

/// The controller ownerReference of `meta` when it names a `K` (kind and apiVersion).
pub fn controller<K: Resource<DynamicType = ()>>(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|r| {
        r.controller == Some(true) && r.kind == K::kind(&()) && r.api_version == K::api_version(&())
    })
}

/// Whether `meta` is controlled by the `K` with uid `uid` (the caller has the object from the
/// owner's namespace).
pub fn controlled_by<K: Resource<DynamicType = ()>>(meta: &ObjectMeta, uid: &str) -> bool {
    controller::<K>(meta).is_some_and(|r| r.uid == uid)
}

/// The key of Evaluation `uid` in `namespace` in the pod cache's index.
pub fn run_key(namespace: &str, uid: &str) -> String {
    format!("{namespace}/{uid}")
}

/// The pod cache's index of a pod: [`run_key`] of its namespace and the uid of the Evaluation
/// that controls it; `None` (not indexed, so never read, counted or deleted as a run's pod)
/// for any other pod, whatever its labels say.
pub fn pod_index(pod: &Pod) -> Option<String> {
    let namespace = pod.metadata.namespace.as_deref()?;
    let owner = controller::<Evaluation>(&pod.metadata)?;
    Some(run_key(namespace, &owner.uid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::mk_pod;
    use kube::ResourceExt;

    fn reference(kind: &str, uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "crucible.dev/v1alpha1".into(),
            kind: kind.into(),
            name: "arith".into(),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: None,
        }
    }

    #[test]
    fn only_the_controller_reference_to_an_evaluation_indexes_a_pod() {
        let with = |ns: &str, refs: Vec<OwnerReference>| {
            let mut pod = mk_pod("p", "Running", vec![]);
            pod.metadata.namespace = Some(ns.into());
            pod.metadata.owner_references = Some(refs);
            pod.labels_mut()
                .insert(crate::labels::EVALUATION_UID_LABEL.into(), "u1".into());
            pod
        };
        let ours = with("team-a", vec![reference("Evaluation", "u1", true)]);
        assert_eq!(pod_index(&ours).as_deref(), Some("team-a/u1"));
        // The same uid from another namespace is another key: never the run's pod.
        let elsewhere = with("team-b", vec![reference("Evaluation", "u1", true)]);
        assert_eq!(pod_index(&elsewhere).as_deref(), Some("team-b/u1"));
        assert_ne!(pod_index(&elsewhere), Some(run_key("team-a", "u1")));
        // The label alone, a non-controller reference or another kind: not indexed.
        assert_eq!(pod_index(&with("team-a", vec![])), None);
        let weak = with("team-a", vec![reference("Evaluation", "u1", false)]);
        assert_eq!(pod_index(&weak), None);
        let job = with("team-a", vec![reference("Job", "u1", true)]);
        assert_eq!(pod_index(&job), None);
        let mut other_group = reference("Evaluation", "u1", true);
        other_group.api_version = "evil.example/v1".into();
        assert_eq!(pod_index(&with("team-a", vec![other_group])), None);
        assert!(controlled_by::<Evaluation>(&ours.metadata, "u1"));
        assert!(!controlled_by::<Evaluation>(&ours.metadata, "u2"));
    }
}
