//! Lifecycle on a real cluster: cancel, deletion cascade, TTL cleanup, invalid specs, re-runs.

use std::time::Duration;

use crucible::crd::Evaluation;
use crucible::crd::evaluation::Phase;
use crucible::evaluation::sandbox_policy;
use crucible_e2e::{
    apply_evaluation, parse_evaluation, pods_of, poll_until, wait_finished, wait_for, wait_phase,
    with_temp_ns,
};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

fn sleeper(name: &str, extra: &str) -> Evaluation {
    parse_evaluation(&format!(
        "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {{name: {name}}}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -u, -c, \"import time; print('started', flush=True); time.sleep(300)\"]\n  timeout: 10m\n{extra}"
    ))
}

fn quick(name: &str, extra: &str) -> Evaluation {
    parse_evaluation(&format!(
        "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {{name: {name}}}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -c, \"print('CRUCIBLE_RESULT {{\\\"score\\\": 1}}')\"]\n  timeout: 1m\n{extra}"
    ))
}

async fn wait_running(api: &Api<Evaluation>, name: &str) -> Evaluation {
    wait_phase(api, name, Phase::Running, Duration::from_secs(90)).await
}

#[tokio::test]
async fn cancel_stops_the_pod_within_seconds_and_keeps_the_log_tail() {
    with_temp_ns("cancel", |client, ns| async move {
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        apply_evaluation(&client, &ns, &sleeper("sleeper", "")).await;
        let running = wait_running(&api, "sleeper").await;
        // Wait for the first line of output so that there is a log tail to keep.
        poll_until(Duration::from_secs(30), "pod output", || {
            let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
            let pod = running
                .status
                .as_ref()
                .and_then(|s| s.pod_name.clone())
                .unwrap_or_default();
            async move {
                pods.logs(&pod, &Default::default())
                    .await
                    .ok()
                    .filter(|l| l.contains("started"))
            }
        })
        .await;
        let patch = serde_json::json!({"spec": {"cancel": true}});
        api.patch("sleeper", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("cancel");
        let cancelled =
            wait_phase(&api, "sleeper", Phase::Cancelled, Duration::from_secs(10)).await;
        let status = cancelled.status.clone().expect("status");
        assert!(
            status
                .log_tail
                .as_deref()
                .is_some_and(|t| t.contains("started")),
            "{status:#?}"
        );
        // The controller's part: the pod is being deleted (5 s grace) within seconds.
        poll_until(Duration::from_secs(10), "the pod's deletion", || {
            let (client, ns, ev) = (client.clone(), ns.clone(), cancelled.clone());
            async move {
                let pods = pods_of(&client, &ns, &ev).await;
                pods.iter()
                    .all(|p| p.metadata.deletion_timestamp.is_some())
                    .then_some(())
            }
        })
        .await;
        // The kubelet's part: it stops the sandbox and removes the pod; on a loaded node that
        // has taken over 30 s.
        poll_until(Duration::from_secs(120), "the pod to be gone", || {
            let (client, ns, ev) = (client.clone(), ns.clone(), cancelled.clone());
            async move { pods_of(&client, &ns, &ev).await.is_empty().then_some(()) }
        })
        .await;
    })
    .await;
}

/// The namespace's deny-all policy as the API server holds it: owned by no Evaluation,
/// deny-all, and selecting `pod` (its podSelector's labels are on the pod).
async fn assert_namespace_policy_covers(client: &kube::Client, ns: &str, pod: &Pod) {
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    let policy = policies
        .get(sandbox_policy::POLICY_NAME)
        .await
        .expect("the namespace's deny-all policy exists");
    assert!(sandbox_policy::is_deny_all(&policy), "{policy:#?}");
    assert!(
        policy.owner_references().is_empty(),
        "owned by no Evaluation"
    );
    let selector = policy
        .spec
        .and_then(|s| s.pod_selector)
        .and_then(|s| s.match_labels)
        .expect("matchLabels");
    assert!(!selector.is_empty());
    for (key, value) in &selector {
        assert_eq!(
            pod.labels().get(key),
            Some(value),
            "the sandbox pod lacks the selected label {key}={value}"
        );
    }
}

#[tokio::test]
async fn deleting_an_evaluation_removes_its_pod_and_keeps_the_namespace_policy() {
    with_temp_ns("writes-delete", |client, ns| async move {
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        apply_evaluation(&client, &ns, &sleeper("doomed", "")).await;
        let running = wait_running(&api, "doomed").await;
        let pods = pods_of(&client, &ns, &running).await;
        assert_eq!(pods.len(), 1);
        assert_namespace_policy_covers(&client, &ns, &pods[0]).await;
        // network None: no policy of its own.
        let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
        let own: Vec<String> = policies
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(own, [sandbox_policy::POLICY_NAME]);
        api.delete("doomed", &DeleteParams::background())
            .await
            .expect("delete");
        // Owner-reference garbage collection by the real kube-controller-manager.
        poll_until(Duration::from_secs(120), "the pod to be collected", || {
            let (client, ns, ev) = (client.clone(), ns.clone(), running.clone());
            async move { pods_of(&client, &ns, &ev).await.is_empty().then_some(()) }
        })
        .await;
        assert!(
            policies
                .get_opt(sandbox_policy::POLICY_NAME)
                .await
                .expect("get")
                .is_some(),
            "the namespace's policy is not the Evaluation's"
        );
    })
    .await;
}

#[tokio::test]
async fn a_deleted_or_edited_namespace_policy_is_restored_before_the_next_pod() {
    with_temp_ns("writes-repair", |client, ns| async move {
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
        apply_evaluation(&client, &ns, &quick("first", "")).await;
        wait_finished(&api, "first", Duration::from_secs(120)).await;
        policies
            .delete(sandbox_policy::POLICY_NAME, &DeleteParams::background())
            .await
            .expect("delete the policy");
        // Opened (an ingress rule) and narrowed (a selector label) by another field manager.
        let edits = [
            serde_json::json!({"spec": {"ingress": [{}]}}),
            serde_json::json!({"spec": {"podSelector": {"matchLabels": {"team": "x"}}}}),
        ];
        for (i, edit) in std::iter::once(None)
            .chain(edits.iter().map(Some))
            .enumerate()
        {
            if let Some(edit) = edit {
                policies
                    .patch(
                        sandbox_policy::POLICY_NAME,
                        &PatchParams::default(),
                        &Patch::Merge(edit),
                    )
                    .await
                    .expect("edit the policy");
            }
            let name = format!("next-{i}");
            apply_evaluation(&client, &ns, &sleeper(&name, "")).await;
            let running = wait_running(&api, &name).await;
            let pods = pods_of(&client, &ns, &running).await;
            assert_eq!(pods.len(), 1);
            assert_namespace_policy_covers(&client, &ns, &pods[0]).await;
            api.delete(&name, &DeleteParams::background())
                .await
                .expect("delete");
        }
    })
    .await;
}

#[tokio::test]
async fn ttl_removes_children_and_keeps_the_results() {
    with_temp_ns("writes-ttl", |client, ns| async move {
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let source =
            "  source: {inline: {files: {\"a.txt\": \"x\"}}}\n  ttlSecondsAfterFinished: 2\n";
        apply_evaluation(&client, &ns, &quick("short-lived", source)).await;
        let done = wait_finished(&api, "short-lived", Duration::from_secs(120)).await;
        let status = done.status.clone().expect("status");
        assert_eq!(status.phase, Some(Phase::Succeeded));
        let digest = status
            .provenance
            .and_then(|p| p.source_digest)
            .expect("provenance.sourceDigest");
        let workspace = crucible::run::workspace::workspace_name(
            "short-lived",
            &done.uid().expect("uid"),
            &digest,
        );
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        poll_until(
            Duration::from_secs(60),
            "children removed after the TTL",
            || {
                let (maps, client, ns, done, workspace) = (
                    maps.clone(),
                    client.clone(),
                    ns.clone(),
                    done.clone(),
                    workspace.clone(),
                );
                async move {
                    let map = maps.get_opt(&workspace).await.ok().flatten();
                    let pods = pods_of(&client, &ns, &done).await;
                    (map.is_none() && pods.is_empty()).then_some(())
                }
            },
        )
        .await;
        let kept = api.get("short-lived").await.expect("the Evaluation stays");
        let status = kept.status.expect("status");
        assert_eq!(status.children_removed, Some(true));
        assert_eq!(status.result.map(|r| r.score), Some(1.0));
    })
    .await;
}

/// An Evaluation that prints `result` (Python source of the line, or nothing), then 1,500
/// lines of teardown.
fn chatty(name: &str, result: &str) -> Evaluation {
    parse_evaluation(&format!(
        "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {{name: {name}}}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -c, \"{result}\\nfor i in range(1500): print('teardown', i, '-' * 60)\"]\n  timeout: 1m\n"
    ))
}

#[tokio::test]
async fn a_result_followed_by_1500_lines_is_found_and_a_missing_one_names_the_window() {
    with_temp_ns("chatty", |client, ns| async move {
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let result = r#"print('CRUCIBLE_RESULT {\"score\": 0.75}')"#;
        apply_evaluation(&client, &ns, &chatty("result-then-teardown", result)).await;
        apply_evaluation(&client, &ns, &chatty("teardown-only", "pass")).await;
        let done = wait_finished(&api, "result-then-teardown", Duration::from_secs(120)).await;
        let status = done.status.clone().expect("status");
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
        assert_eq!(
            status.result.as_ref().map(|r| r.score),
            Some(0.75),
            "{status:#?}"
        );
        let missing = wait_finished(&api, "teardown-only", Duration::from_secs(120)).await;
        let status = missing.status.clone().expect("status");
        assert_eq!(
            status.reason.as_deref(),
            Some("InvalidResult"),
            "{status:#?}"
        );
        let message = status.message.clone().unwrap_or_default();
        assert!(message.contains("in the whole log ("), "{message}");
    })
    .await;
}

/// Issue 22: a scorer that fails leaves its own log in status; the evaluated code's stays in
/// `logTail`, and the pod is gone. The scorer writes its message to stderr: the local
/// cluster's gVisor wrapper once lost a sandboxed container's stderr (infrastructure/local/README.md).
#[tokio::test]
async fn a_failed_scorer_leaves_its_log_in_status() {
    with_temp_ns("scorer-log", |client, ns| async move {
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let ev = parse_evaluation(
            "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {name: bad-scorer}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -c, \"print('answer written')\"]\n  timeout: 1m\n  scorer:\n    image: localhost/crucible/python:3.11\n    command: [python3, -c, \"import sys; print('scorer: no expected.json', file=sys.stderr); sys.exit(3)\"]\n",
        );
        apply_evaluation(&client, &ns, &ev).await;
        let done = wait_finished(&api, "bad-scorer", Duration::from_secs(120)).await;
        let status = done.status.clone().expect("status");
        assert_eq!(status.reason.as_deref(), Some("ScorerFailed"), "{status:#?}");
        assert_eq!(status.exit_code, Some(3), "{status:#?}");
        assert_eq!(status.log_tail.as_deref(), Some("answer written\n"));
        assert_eq!(
            status.scorer_log_tail.as_deref(),
            Some("scorer: no expected.json\n")
        );
        poll_until(Duration::from_secs(30), "the pod to be deleted", || {
            let (client, ns, done) = (client.clone(), ns.clone(), done.clone());
            async move { pods_of(&client, &ns, &done).await.is_empty().then_some(()) }
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn invalid_spec_stalls_with_a_reason_and_creates_no_pod() {
    with_temp_ns("invalid", |client, ns| async move {
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let bad = quick(
            "bad",
            "  env: [{name: CRUCIBLE_RESULT_PATH, value: /etc/passwd}]\n",
        );
        apply_evaluation(&client, &ns, &bad).await;
        let done = wait_finished(&api, "bad", Duration::from_secs(30)).await;
        let status = done.status.clone().expect("status");
        assert_eq!(status.reason.as_deref(), Some("InvalidSpec"));
        assert!(
            status
                .message
                .as_deref()
                .is_some_and(|m| m.contains("reserved"))
        );
        let stalled = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .expect("Stalled");
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert!(pods_of(&client, &ns, &done).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn spec_change_and_rerun_start_new_runs_with_history() {
    with_temp_ns("rerun", |client, ns| async move {
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        apply_evaluation(&client, &ns, &quick("again", "")).await;
        let first = wait_finished(&api, "again", Duration::from_secs(120)).await;
        let first_pod = first.status.as_ref().and_then(|s| s.pod_name.clone());
        // The rerun annotation starts a second run without a spec change.
        let patch = serde_json::json!({"metadata": {"annotations": {"crucible.dev/rerun": "1"}}});
        api.patch("again", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate");
        let second = wait_for(
            &api,
            "again",
            Duration::from_secs(120),
            "re-run and finished",
            |e: &Evaluation| {
                e.status.as_ref().is_some_and(|s| {
                    s.rerun.as_deref() == Some("1") && s.phase.is_some_and(Phase::is_finished)
                })
            },
        )
        .await;
        let status = second.status.clone().expect("status");
        assert_eq!(status.history.len(), 1);
        assert_eq!(status.history[0].score, Some(1.0));
        assert_ne!(status.pod_name, first_pod, "a new pod ran");
        assert_eq!(second.metadata.generation, first.metadata.generation);
        assert_eq!(second.name_any(), "again");
    })
    .await;
}
