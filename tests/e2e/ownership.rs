//! Pod ownership on a real cluster (issue 20): a pod belongs to a run only by namespace and
//! controller ownerReference, and pod names carry the Evaluation's uid.

use std::time::Duration;

use crucible::crd::Evaluation;
use crucible::crd::evaluation::Phase;
use crucible_e2e::{
    apply_evaluation, apply_typed, parse_evaluation, restricted_security_context, sleeper,
    wait_finished, wait_phase, with_temp_ns,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};

/// A pod that sleeps, with `labels`: a bystander (or a decoy) the controller must not touch.
fn bystander(name: &str, labels: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "containers": [{
                "name": "sleep", "image": "localhost/crucible/python:3.11",
                "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-c", "import time; time.sleep(600)"],
                // The test namespaces enforce Pod Security `restricted`.
                "securityContext": restricted_security_context(),
            }],
            "terminationGracePeriodSeconds": 0,
        }
    })
}

/// Scenario (a) of issue 20: a tenant in another namespace creates a pod with a running
/// victim's uid label (and the managed label), named like an unrelated pod in the victim's
/// namespace. Both pods survive untouched (same uid, not being deleted) and the victim's score
/// is its own.
#[tokio::test]
async fn a_spoofed_pod_elsewhere_touches_nothing_and_the_victims_score_is_its_own() {
    with_temp_ns("victim", |client, victim_ns| async move {
        with_temp_ns("attacker", |_, attacker_ns| async move {
            let api: Api<Evaluation> = Api::namespaced(client.clone(), &victim_ns);
            apply_evaluation(&client, &victim_ns, &sleeper("victim", 15, "100m")).await;
            let running = wait_phase(&api, "victim", Phase::Running, Duration::from_secs(90)).await;
            let uid = running.uid().expect("uid");
            let innocent: Pod = apply_typed(
                &client,
                &victim_ns,
                &bystander("innocent", serde_json::json!({})),
            )
            .await;
            let decoy_labels = serde_json::json!({
                "crucible.dev/managed": "true",
                "crucible.dev/evaluation-uid": uid,
            });
            let decoy: Pod =
                apply_typed(&client, &attacker_ns, &bystander("innocent", decoy_labels)).await;
            let done = wait_finished(&api, "victim", Duration::from_secs(120)).await;
            let status = done.status.expect("status");
            assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
            let score = status.result.as_ref().map(|r| r.score);
            assert_eq!(score, Some(1.0), "the victim's own result");
            for (ns, before) in [(&victim_ns, &innocent), (&attacker_ns, &decoy)] {
                let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
                let now = pods.get("innocent").await.expect("the pod survives");
                assert_eq!(now.uid(), before.uid(), "{ns}: the same pod");
                assert!(
                    now.metadata.deletion_timestamp.is_none(),
                    "{ns}: the pod is not being deleted"
                );
            }
        })
        .await;
    })
    .await;
}

/// Scenario (b) of issue 20: a failed Evaluation with `keepPodOnFailure` is deleted and
/// re-created at once with the same spec. The new run gets a pod of its own (another name,
/// controlled by the new Evaluation) and its own outcome, never PodRejected or PodLost.
#[tokio::test]
async fn a_recreated_evaluation_gets_a_pod_and_an_outcome_of_its_own() {
    with_temp_ns("recreate", |client, ns| async move {
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let ev = parse_evaluation(
            "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {name: kept}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -c, \"raise SystemExit(3)\"]\n  keepPodOnFailure: true\n  timeout: 1m\n  resources: {cpu: 100m, memory: 64Mi}\n",
        );
        apply_evaluation(&client, &ns, &ev).await;
        let first = wait_finished(&api, "kept", Duration::from_secs(90)).await;
        let first_status = first.status.clone().expect("status");
        assert_eq!(first_status.phase, Some(Phase::Failed), "{first_status:#?}");
        let first_pod = first_status.pod_name.clone().expect("kept pod");
        api.delete("kept", &DeleteParams::default())
            .await
            .expect("delete the Evaluation");
        crucible_e2e::poll_until(Duration::from_secs(30), "the Evaluation to go", || {
            let api = api.clone();
            async move { api.get_opt("kept").await.ok().and_then(|e| e.is_none().then_some(())) }
        })
        .await;
        apply_evaluation(&client, &ns, &ev).await;
        let second = wait_finished(&api, "kept", Duration::from_secs(90)).await;
        assert_ne!(second.uid(), first.uid());
        let status = second.status.clone().expect("status");
        assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}");
        assert_eq!(status.exit_code, Some(3), "its own outcome: {status:#?}");
        let reason = status.reason.clone().unwrap_or_default();
        assert!(
            reason != "PodRejected" && reason != "PodLost" && reason != "PodNameTaken",
            "{reason}"
        );
        let second_pod = status.pod_name.clone().expect("a pod of its own");
        assert_ne!(second_pod, first_pod);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let kept = pods.get(&second_pod).await.expect("the new run's pod is kept");
        let owner = kept
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true))
            .map(|r| r.uid.clone());
        assert_eq!(owner, second.uid(), "controlled by the new Evaluation");
    })
    .await;
}
