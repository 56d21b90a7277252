//! At start, removes sandbox pods whose Evaluation is gone (a controller that was down while an
//! Evaluation was deleted, before the garbage collector got to its pods). Only pods controlled
//! by an Evaluation ([`crate::ownership`]) are looked at: a pod with our labels and no such
//! reference (made by hand, or left by a deletion with orphan propagation, which removes the
//! reference) is not ours and is left alone. Pods of existing Evaluations are adopted as they
//! are: the reconciler finds them by their deterministic names. [`orphans`] is pure; [`remove`]
//! talks to the API server.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::admission::restore::Snapshot;
use crate::ownership;
use crate::ssa;

/// `(namespace, name, uid)` of the pods among `pods` controlled by an Evaluation that is not
/// in `live` ([`ownership::run_key`]s of the existing Evaluations).
pub fn orphans(pods: &[Pod], live: &HashSet<String>) -> Vec<(String, String, String)> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| ownership::pod_index(p).is_some_and(|key| !live.contains(&key)))
        .map(|p| {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            (p.namespace().unwrap_or_default(), p.name_any(), uid)
        })
        .collect()
}

/// Deletes the orphaned sandbox pods of a start-up snapshot (each by uid: a pod that replaced
/// it under the same name is not touched); returns how many (deletions that fail are logged
/// and skipped).
pub async fn remove(client: &Client, snapshot: &Snapshot) -> usize {
    let live = snapshot.live();
    let gone = orphans(&snapshot.pods, &live);
    for (ns, name, uid) in &gone {
        let api: Api<Pod> = ssa::scoped(client, Some(ns));
        match ssa::delete_exact(&api, name, uid).await {
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
    use crate::fixtures::{mk_pod, owned_by};
    use crate::labels::{EVALUATION_UID_LABEL, MANAGED_LABEL};

    fn labelled(ns: &str, name: &str, owner: Option<&str>) -> Pod {
        let mut pod = mk_pod(name, "Running", vec![]);
        pod.metadata.namespace = Some(ns.into());
        let mut labels =
            std::collections::BTreeMap::from([(MANAGED_LABEL.to_string(), "true".to_string())]);
        // Every pod carries a uid label; only `owner` makes it an Evaluation's.
        labels.insert(EVALUATION_UID_LABEL.to_string(), "u1".to_string());
        pod.metadata.labels = Some(labels);
        if let Some(uid) = owner {
            pod = owned_by(pod, uid);
        }
        pod
    }

    #[test]
    fn pods_controlled_by_missing_evaluations_are_orphans_and_others_are_left_alone() {
        let live = HashSet::from([ownership::run_key("team-a", "u1")]);
        let pods = [
            labelled("team-a", "kept", Some("u1")),
            labelled("team-a", "gone", Some("u2")),
            // Not controlled by an Evaluation: not ours, whatever its labels say.
            labelled("team-a", "stray", None),
            // Names a live uid from another namespace: controlled by nothing that exists.
            labelled("team-b", "spoof", Some("u1")),
        ];
        let names: Vec<_> = orphans(&pods, &live)
            .into_iter()
            .map(|(ns, n, _)| format!("{ns}/{n}"))
            .collect();
        assert_eq!(names, ["team-a/gone", "team-b/spoof"]);
    }
}
