//! At start, removes sandbox pods whose Evaluation is gone (a controller that was down while
//! an Evaluation was deleted with orphan propagation, or a pod created by hand with our
//! labels). Pods of existing Evaluations are adopted as they are: the reconciler finds them by
//! their deterministic names. [`orphans`] is pure; [`remove`] talks to the API server.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::admission::restore::Snapshot;
use crate::labels::EVALUATION_UID_LABEL;
use crate::ssa;

/// `(namespace, name)` of the pods among `pods` that belong to no Evaluation in `live` (uids).
pub fn orphans(pods: &[Pod], live: &HashSet<String>) -> Vec<(String, String)> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.labels()
                .get(EVALUATION_UID_LABEL)
                .is_none_or(|uid| !live.contains(uid))
        })
        .map(|p| (p.namespace().unwrap_or_default(), p.name_any()))
        .collect()
}

/// Deletes the orphaned sandbox pods of a start-up snapshot; returns how many (deletions that
/// fail are logged and skipped).
pub async fn remove(client: &Client, snapshot: &Snapshot) -> usize {
    let live: HashSet<String> = snapshot
        .evaluations
        .iter()
        .filter_map(|e| e.uid())
        .collect();
    let gone = orphans(&snapshot.pods, &live);
    for (ns, name) in &gone {
        let api: Api<Pod> = ssa::scoped(client, Some(ns));
        match ssa::delete(&api, name).await {
            Ok(_) => tracing::info!(namespace = %ns, pod = %name, "removed orphaned sandbox pod"),
            Err(error) => {
                tracing::warn!(namespace = %ns, pod = %name, %error, "cannot remove orphaned pod")
            }
        }
    }
    gone.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::mk_pod;
    use crate::labels::MANAGED_LABEL;

    fn labelled(name: &str, uid: Option<&str>) -> Pod {
        let mut pod = mk_pod(name, "Running", vec![]);
        let mut labels =
            std::collections::BTreeMap::from([(MANAGED_LABEL.to_string(), "true".to_string())]);
        if let Some(uid) = uid {
            labels.insert(EVALUATION_UID_LABEL.to_string(), uid.to_string());
        }
        pod.metadata.labels = Some(labels);
        pod
    }

    #[test]
    fn pods_of_missing_evaluations_are_orphans_and_others_are_adopted() {
        let live = HashSet::from(["u1".to_string()]);
        let pods = [
            labelled("kept", Some("u1")),
            labelled("gone", Some("u2")),
            labelled("stray", None),
        ];
        let names: Vec<_> = orphans(&pods, &live).into_iter().map(|(_, n)| n).collect();
        assert_eq!(names, ["gone", "stray"]);
    }
}
