//! Mock API server scenarios: the exact conversation one reconcile has with the API server.

use std::sync::Arc;

use http::Method;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::reconcile;
use crate::admission::Decision;
use crate::config::Config;
use crate::crd::Evaluation;
use crate::crd::evaluation::{Phase, Scorer};
use crate::evaluation::Context;
use crate::fixtures::{
    ApiServerVerifier, at, mk_container, mk_pod, owned_by, running, status_error,
};
use crate::lifecycle::{Observed, plan};
use crate::requeue::Requeue;

const PODS: &str = "/api/v1/namespaces/team-a/pods";
const POLICY: &str =
    "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/crucible-sandbox-deny-all";
const CONFIGMAPS: &str = "/api/v1/namespaces/team-a/configmaps";
const STATUS: &str = "/apis/crucible.dev/v1alpha1/namespaces/team-a/evaluations/arith/status";
const EVALUATION: &str = "/apis/crucible.dev/v1alpha1/namespaces/team-a/evaluations/arith";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events";

/// Runs one reconcile against the scenario, with `pods` in the pod cache and the RuntimeClass
/// when `sandbox`, and returns its requeue.
async fn reconcile_with<F>(
    ev: Evaluation,
    pods: Vec<Pod>,
    sandbox: bool,
    scenario: impl FnOnce(ApiServerVerifier) -> F + Send + 'static,
) -> Requeue
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    // The pod cache indexes pods by their controlling Evaluation, as the controller makes them.
    let uid = ev.metadata.uid.clone().unwrap_or_default();
    let pods = pods.into_iter().map(|p| owned_by(p, &uid)).collect();
    let (ctx, mut verifier) = Context::test_with(pods, sandbox);
    let latest = serde_json::to_value(&ev).expect("evaluation json");
    // A reconcile plans from a fresh read of the Evaluation, unless it is new (no status).
    let fresh_read = ev.status.is_some();
    let server = tokio::spawn(async move {
        if fresh_read {
            verifier.expect(Method::GET, EVALUATION, 200, latest).await;
        }
        scenario(verifier).await
    });
    let action = reconcile(Arc::new(ev), ctx)
        .await
        .expect("reconcile succeeds");
    server.await.expect("scenario completed");
    action
}

/// The Evaluation after a first reconcile started its pod, and that pod's name.
fn started(ev: Evaluation) -> (Evaluation, String) {
    let p = plan(
        &ev,
        &Observed::empty(),
        &Decision::Admit,
        &Config::default(),
    )
    .expect("plan");
    let name = p.status.pod_name.clone().expect("pod name");
    (ev.with_status(p.status), name)
}

#[tokio::test]
async fn create_applies_policy_before_pod_then_reports_pending() {
    reconcile_with(Evaluation::test(), vec![], true, |mut api| async move {
        // No watch vouches for the namespace policy here: it is applied.
        let policy = api.expect_apply(POLICY).await;
        assert!(policy.uri.contains("fieldManager=crucible-controller"));
        assert_eq!(
            policy.body["spec"]["policyTypes"],
            serde_json::json!(["Ingress", "Egress"])
        );
        let workspace = api
            .expect(Method::POST, CONFIGMAPS, 201, serde_json::json!({}))
            .await;
        assert_eq!(workspace.body["data"]["eval.py"], "print(1)");
        assert_eq!(workspace.body["immutable"], true);
        // Created, never applied: no pod of another owner is taken over.
        let pod = api
            .expect(Method::POST, PODS, 201, serde_json::json!({}))
            .await;
        assert!(pod.uri.contains("fieldManager=crucible-controller"));
        assert_eq!(pod.body["spec"]["runtimeClassName"], "gvisor");
        assert_eq!(pod.body["kind"], "Pod");
        let status = api.expect_apply(STATUS).await;
        assert!(status.uri.contains("fieldManager=crucible-status"));
        assert_eq!(status.body["status"]["phase"], "Pending");
        assert_eq!(status.body["status"]["observedGeneration"], 1);
        let event = api
            .expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        assert_eq!(event.body["reason"], "Admitted");
        api.expect_silence().await;
    })
    .await;
}

#[tokio::test]
async fn missing_runtime_class_reports_sandbox_unavailable_and_creates_nothing() {
    reconcile_with(Evaluation::test(), vec![], false, |mut api| async move {
        let status = api.expect_apply(STATUS).await;
        assert_eq!(status.body["status"]["phase"], "Failed");
        assert_eq!(status.body["status"]["reason"], "SandboxUnavailable");
        let event = api
            .expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        assert_eq!(event.body["reason"], "SandboxUnavailable");
        assert_eq!(event.body["type"], "Warning");
        api.expect_silence().await;
    })
    .await;
}

#[tokio::test]
async fn refused_network_policy_fails_closed_without_a_pod() {
    reconcile_with(Evaluation::test(), vec![], true, |mut api| async move {
        api.expect(
            Method::PATCH,
            POLICY,
            403,
            status_error(403, "networkpolicies is forbidden"),
        )
        .await;
        let status = api.expect_apply(STATUS).await;
        assert_eq!(status.body["status"]["reason"], "SandboxUnavailable");
        assert!(
            status.body["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("forbidden"))
        );
        api.expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        api.expect_silence().await;
    })
    .await;
}

#[tokio::test]
async fn a_namespace_being_deleted_fails_no_run_and_writes_nothing() {
    let (ctx, mut api) = Context::test_with(vec![], true);
    let server = tokio::spawn(async move {
        let message = "networkpolicies \"crucible-sandbox-deny-all\" is forbidden: unable to \
                       create new content in namespace team-a because it is being terminated";
        api.expect(Method::PATCH, POLICY, 403, status_error(403, message))
            .await;
        // No status (no Failed), no Event: the Evaluation goes with its namespace.
        api.expect_silence().await;
    });
    let outcome = reconcile(Arc::new(Evaluation::test()), ctx).await;
    server.await.expect("scenario completed");
    let error = outcome.expect_err("the namespace is being deleted");
    assert!(
        matches!(error, crate::error::Error::NamespaceTerminating(ref ns) if ns == "team-a"),
        "{error}"
    );
    assert!(!error.is_transient(), "waits for the deletion, no retry");
}

#[tokio::test]
async fn cancel_reads_the_log_writes_status_then_deletes_the_pod() {
    let (ev, name) = started(Evaluation::test());
    let ev = ev.with_spec(|s| s.cancel = Some(true));
    let pod: Pod = mk_pod(
        &name,
        "Running",
        vec![mk_container("evaluation", running())],
    );
    let pod_path = format!("{PODS}/{name}");
    reconcile_with(ev, vec![pod], true, |mut api| async move {
        let log = api
            .expect(
                Method::GET,
                &format!("{pod_path}/log"),
                200,
                "step 1\nstep 2\n".into(),
            )
            .await;
        assert!(log.uri.contains("container=evaluation"));
        // Read from the end: the last lines, at most 16 MiB.
        assert!(
            log.uri.contains("tailLines=1000") && log.uri.contains("limitBytes=16777216"),
            "{}",
            log.uri
        );
        let status = api.expect_apply(STATUS).await;
        assert_eq!(status.body["status"]["phase"], Phase::Cancelled.as_str());
        assert_eq!(status.body["status"]["logTail"], "step 1\nstep 2\n");
        api.expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        api.expect(Method::DELETE, &pod_path, 200, serde_json::json!({}))
            .await;
        api.expect_silence().await;
    })
    .await;
}

/// Issue 22: a harness prints its result, then 1,500 lines of teardown. The first read (the
/// last 1000 lines) has no result line, so the controller reads further back and finds it.
#[tokio::test]
async fn a_result_line_followed_by_1500_lines_is_found_by_reading_further_back() {
    let (ev, name) = started(Evaluation::test());
    let pod = mk_pod(
        &name,
        "Succeeded",
        vec![mk_container(
            "evaluation",
            crate::fixtures::terminated(0, "Completed", None),
        )],
    );
    let teardown: Vec<String> = (0..1500).map(|i| format!("teardown {i:04}\n")).collect();
    let whole = format!("CRUCIBLE_RESULT {{\"score\": 0.75}}\n{}", teardown.concat());
    let last_1000 = teardown[500..].concat();
    let pod_path = format!("{PODS}/{name}");
    reconcile_with(ev, vec![pod], true, |mut api| async move {
        let log = format!("{pod_path}/log");
        let first = api.expect(Method::GET, &log, 200, last_1000.into()).await;
        assert!(first.uri.contains("tailLines=1000"), "{}", first.uri);
        let second = api.expect(Method::GET, &log, 200, whole.into()).await;
        assert!(
            !second.uri.contains("tailLines=1000&") && second.uri.contains("limitBytes=16777216"),
            "{}",
            second.uri
        );
        let status = api.expect_apply(STATUS).await;
        assert_eq!(
            status.body["status"]["phase"],
            Phase::Succeeded.as_str(),
            "{}",
            status.body
        );
        assert_eq!(status.body["status"]["result"]["score"], 0.75);
        api.expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        api.expect(Method::DELETE, &pod_path, 200, serde_json::json!({}))
            .await;
        api.expect_silence().await;
    })
    .await;
}

#[tokio::test]
async fn deadline_times_out_and_deletes_the_pod_after_keeping_its_log() {
    let (ev, name) = started(Evaluation::test().with_spec(|s| s.timeout = Some("1s".into())));
    let mut ev = ev;
    if let Some(s) = ev.status.as_mut() {
        // Started long ago: far past timeout + grace.
        s.start_time = Some(at(-3600));
    }
    let pod = mk_pod(
        &name,
        "Running",
        vec![mk_container("evaluation", running())],
    );
    let pod_path = format!("{PODS}/{name}");
    reconcile_with(ev, vec![pod], true, |mut api| async move {
        api.expect(
            Method::GET,
            &format!("{pod_path}/log"),
            200,
            "looping\n".into(),
        )
        .await;
        let status = api.expect_apply(STATUS).await;
        assert_eq!(status.body["status"]["phase"], "TimedOut");
        assert_eq!(status.body["status"]["logTail"], "looping\n");
        let event = api
            .expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        assert_eq!(event.body["reason"], "TimedOut");
        api.expect(Method::DELETE, &pod_path, 200, serde_json::json!({}))
            .await;
        api.expect_silence().await;
    })
    .await;
}

/// Issue 22: a failed scorer leaves its own output in status, not only the evaluated code's
/// (the pod is deleted right after).
#[tokio::test]
async fn a_failed_scorer_keeps_its_own_log_tail() {
    let (ev, name) = started(Evaluation::test().with_spec(|s| {
        s.scorer = Some(Scorer {
            image: "scorer-img".into(),
            ..Default::default()
        })
    }));
    let mut pod = mk_pod(
        &name,
        "Failed",
        vec![mk_container(
            "scorer",
            crate::fixtures::terminated(2, "Error", None),
        )],
    );
    if let Some(status) = pod.status.as_mut() {
        status.init_container_statuses = Some(vec![mk_container(
            "evaluation",
            crate::fixtures::terminated(0, "Completed", None),
        )]);
    }
    let pod_path = format!("{PODS}/{name}");
    reconcile_with(ev, vec![pod], true, |mut api| async move {
        let log = format!("{pod_path}/log");
        let evaluation = api
            .expect(Method::GET, &log, 200, "answer written\n".into())
            .await;
        assert!(
            evaluation.uri.contains("container=evaluation"),
            "{}",
            evaluation.uri
        );
        let scorer = api
            .expect(
                Method::GET,
                &log,
                200,
                "Traceback (most recent call last):\nKeyError: 'expected'\n".into(),
            )
            .await;
        assert!(scorer.uri.contains("container=scorer"), "{}", scorer.uri);
        let status = api.expect_apply(STATUS).await;
        assert_eq!(
            status.body["status"]["reason"], "ScorerFailed",
            "{}",
            status.body
        );
        assert_eq!(status.body["status"]["logTail"], "answer written\n");
        assert_eq!(
            status.body["status"]["scorerLogTail"],
            "Traceback (most recent call last):\nKeyError: 'expected'\n"
        );
        api.expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        api.expect(Method::DELETE, &pod_path, 200, serde_json::json!({}))
            .await;
        api.expect_silence().await;
    })
    .await;
}

#[tokio::test]
async fn expired_ttl_deletes_children_once_and_says_so() {
    let ev = Evaluation::test().with_spec(|s| s.ttl_seconds_after_finished = Some(0));
    let (ev, name) = started(ev);
    let done_pod = mk_pod(
        &name,
        "Succeeded",
        vec![mk_container(
            "evaluation",
            crate::fixtures::terminated(0, "Completed", Some(r#"{"score": 1}"#)),
        )],
    );
    let obs = Observed {
        pods: vec![done_pod],
        now: at(-60),
        ..Observed::empty()
    };
    let done = plan(&ev, &obs, &Decision::Admit, &Config::default()).expect("plan");
    // As written when the run finished, before its TTL expired.
    let mut finished = done.status;
    finished.children_removed = None;
    let ev = ev.with_status(finished);
    let action = reconcile_with(ev, vec![], true, |mut api| async move {
        let status = api.expect_apply(STATUS).await;
        assert_eq!(status.body["status"]["childrenRemoved"], true);
        // Only the run's own children: its workspace (network None has no policy of its own).
        let workspace = format!("{CONFIGMAPS}/arith-src-");
        api.expect(Method::DELETE, &workspace, 404, status_error(404, "gone"))
            .await;
        api.expect_silence().await;
    })
    .await;
    assert_eq!(action, Requeue::AwaitChange);
}

/// A lost node: the kubelet cannot serve the log of a pod being cancelled. The run still ends
/// (log unavailable) and the pod is deleted; nothing waits for the node.
#[tokio::test]
async fn cancel_ends_the_run_even_when_the_log_cannot_be_read() {
    let (ev, name) = started(Evaluation::test());
    let ev = ev.with_spec(|s| s.cancel = Some(true));
    let pod: Pod = mk_pod(
        &name,
        "Running",
        vec![mk_container("evaluation", running())],
    );
    let pod_path = format!("{PODS}/{name}");
    let unreachable = status_error(
        502,
        "error dialing backend: dial tcp 10.0.0.9:10250: i/o timeout",
    );
    reconcile_with(ev, vec![pod], true, |mut api| async move {
        for _ in 0..2 {
            api.expect(
                Method::GET,
                &format!("{pod_path}/log"),
                502,
                unreachable.clone(),
            )
            .await;
        }
        let status = api.expect_apply(STATUS).await;
        assert_eq!(status.body["status"]["phase"], Phase::Cancelled.as_str());
        let tail = status.body["status"]["logTail"]
            .as_str()
            .unwrap_or_default();
        assert!(tail.starts_with("(log unavailable: "), "{tail}");
        api.expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        api.expect(Method::DELETE, &pod_path, 200, serde_json::json!({}))
            .await;
        api.expect_silence().await;
    })
    .await;
}

/// A queued run asks for no timer: it waits for a change, and the slot freed by another run
/// sends its key to the work queue at once, where the next decision admits it.
#[tokio::test]
async fn a_freed_slot_admits_the_queued_head_without_a_timer() {
    let (ctx, mut api) = Context::test();
    let (trigger, mut woken) = crate::runner::channel();
    ctx.admission.connect(trigger);
    let decide = |ev: &Evaluation| {
        let run = crate::run::state::admission_run_id(ev, None);
        ctx.admission
            .decide(ev, &run, &[], &ctx.config, None, &ctx.metrics)
    };
    // The namespace's ten slots (the controller default) are taken.
    let fillers: Vec<Evaluation> = (0..10)
        .map(|i| {
            let mut filler = Evaluation::test();
            filler.metadata.name = Some(format!("filler-{i}"));
            filler.metadata.uid = Some(format!("3333333{i}-0000-0000-0000-000000000000"));
            filler
        })
        .collect();
    for filler in &fillers {
        assert_eq!(decide(filler), Decision::Admit);
    }
    let ev = Evaluation::test();
    let server = tokio::spawn(async move {
        // New: planned from the cached copy, no read.
        let status = api.expect_apply(STATUS).await;
        assert_eq!(status.body["status"]["phase"], "Queued");
        api.expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        api.expect_silence().await;
    });
    let first = reconcile(Arc::new(ev.clone()), ctx.clone())
        .await
        .expect("reconcile");
    server.await.expect("scenario");
    assert_eq!(first, Requeue::AwaitChange, "a queued run sets no timer");
    while woken.try_recv().is_ok() {}
    // One filler's pod is gone: its slot is freed, and the queued run is woken at once.
    let freed = fillers[3].metadata.uid.clone().unwrap_or_default();
    ctx.admission
        .settle("team-a", &freed, &Default::default(), false);
    let key = woken.try_recv().expect("the queued run is woken");
    assert_eq!(
        (key.namespace.as_str(), key.name.as_str()),
        ("team-a", "arith")
    );
    assert!(woken.try_recv().is_err(), "nothing else is woken");
    assert_eq!(decide(&ev), Decision::Admit);
}

/// The namespace's deny-all policy cannot be applied for a passing reason: no ConfigMap, no
/// pod; the run waits in phase Queued with the reason and tries again.
#[tokio::test]
async fn a_namespace_policy_that_fails_to_apply_keeps_the_run_waiting() {
    let requeue = reconcile_with(Evaluation::test(), vec![], true, |mut api| async move {
        api.expect(
            Method::PATCH,
            POLICY,
            500,
            status_error(500, "etcdserver: leader changed"),
        )
        .await;
        let status = api.expect_apply(STATUS).await;
        assert_eq!(status.body["status"]["phase"], "Queued");
        let reason = status.body["status"]["queue"]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(
            reason.starts_with("SandboxUnavailable: ") && reason.contains("leader changed"),
            "{reason}"
        );
        assert!(status.body["status"]["podName"].is_null());
        let event = api
            .expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        assert_eq!(event.body["reason"], "Queued");
        api.expect_silence().await;
    })
    .await;
    assert_eq!(requeue, Requeue::After(crate::lifecycle::SANDBOX_RETRY));
}

/// Pods that are not the run's (another namespace's pod naming its uid, a pod in its namespace
/// with its uid label but no controller reference) are never read, counted or deleted: the
/// run goes on with its own pod, and no DELETE is sent for a pod of the same name.
#[tokio::test]
async fn pods_the_evaluation_does_not_control_are_left_alone() {
    let (mut ev, name) = started(Evaluation::test());
    if let Some(s) = ev.status.as_mut() {
        // Started just now: far from its deadline.
        s.start_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        ));
    }
    let uid = ev.metadata.uid.clone().unwrap_or_default();
    let own = owned_by(
        mk_pod(
            &name,
            "Running",
            vec![mk_container("evaluation", running())],
        ),
        &uid,
    );
    let mut elsewhere = owned_by(mk_pod("innocent", "Succeeded", vec![]), &uid);
    elsewhere.metadata.namespace = Some("team-b".into());
    let mut label_only = mk_pod("bystander", "Running", vec![]);
    label_only
        .labels_mut()
        .insert(crate::labels::EVALUATION_UID_LABEL.into(), uid.clone());
    let (ctx, mut api) = Context::test_with(vec![own, elsewhere, label_only], true);
    let latest = serde_json::to_value(&ev).expect("evaluation json");
    let server = tokio::spawn(async move {
        api.expect(Method::GET, EVALUATION, 200, latest).await;
        let status = api.expect_apply(STATUS).await;
        assert_eq!(status.body["status"]["phase"], "Running");
        api.expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        // No DELETE of `innocent` or `bystander`, no log read of either.
        api.expect_silence().await;
    });
    reconcile(Arc::new(ev), ctx).await.expect("reconcile");
    server.await.expect("scenario completed");
}

/// A re-created Evaluation (same name and spec, new uid) gets pod names of its own: it never
/// finds the old Evaluation's kept pod under its name.
#[test]
fn a_recreated_evaluation_gets_pods_of_its_own() {
    let (_, old) = started(Evaluation::test());
    let mut again = Evaluation::test();
    again.metadata.uid = Some("99999999-2222-3333-4444-555555555555".into());
    let (_, new) = started(again);
    assert_ne!(old, new);
}

/// The pod's name is taken by a pod this Evaluation does not control: it is left untouched
/// (no apply, no delete) and the run fails with the reason. A pod of the name it already
/// controls (created before a crash) is simply its own.
#[tokio::test]
async fn a_pod_name_taken_by_another_owner_is_never_adopted() {
    let ev = Evaluation::test();
    let uid = ev.metadata.uid.clone().unwrap_or_default();
    let (_, name) = started(ev.clone());
    let pod_path = format!("{PODS}/{name}");
    for (owner, phase) in [("another-uid", "Failed"), (uid.as_str(), "Pending")] {
        let existing = serde_json::to_value(owned_by(mk_pod(&name, "Failed", vec![]), owner))
            .expect("pod json");
        let path = pod_path.clone();
        reconcile_with(ev.clone(), vec![], true, move |mut api| async move {
            api.expect_apply(POLICY).await;
            api.expect(Method::POST, CONFIGMAPS, 201, serde_json::json!({}))
                .await;
            api.expect(
                Method::POST,
                PODS,
                409,
                status_error(409, "pods already exists"),
            )
            .await;
            api.expect(Method::GET, &path, 200, existing).await;
            let status = api.expect_apply(STATUS).await;
            assert_eq!(status.body["status"]["phase"], phase);
            if phase == "Failed" {
                assert_eq!(status.body["status"]["reason"], "PodNameTaken");
                assert!(status.body["status"]["podName"].is_null());
            }
            api.expect(Method::POST, EVENTS, 201, serde_json::json!({}))
                .await;
            api.expect_silence().await;
        })
        .await;
    }
}

#[tokio::test]
async fn a_pod_refused_by_an_unreachable_webhook_waits_with_the_reason_in_its_status() {
    let requeue = reconcile_with(Evaluation::test(), vec![], true, |mut api| async move {
        api.expect_apply(POLICY).await;
        api.expect(Method::POST, CONFIGMAPS, 201, serde_json::json!({}))
            .await;
        let message = "Internal error occurred: failed calling webhook \"pods.policy.example\": \
                       Post \"https://policy.example.svc:443/validate\": context deadline exceeded";
        api.expect(Method::POST, PODS, 500, status_error(500, message))
            .await;
        let status = api.expect_apply(STATUS).await;
        assert_eq!(status.body["status"]["phase"], "Queued");
        let reason = status.body["status"]["queue"]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(
            reason.starts_with("WebhookUnavailable: ") && reason.contains("failed calling webhook"),
            "{reason}"
        );
        let event = api
            .expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        assert_eq!(event.body["reason"], "Queued");
        api.expect_silence().await;
    })
    .await;
    assert_eq!(requeue, Requeue::After(crate::lifecycle::SANDBOX_RETRY));
}

/// A suite's child (by its controller ownerReference) re-run by hand waits for its suite's
/// go-ahead: no policy, no pod, phase Queued with the SuiteParallelism reason; once the suite's
/// go-ahead names the value, the same reconcile starts it.
#[tokio::test]
async fn a_suite_child_rerun_by_hand_waits_for_the_suites_go_ahead() {
    use crate::labels::{GO_AHEAD_ANNOTATION, RERUN_ANNOTATION};
    let mut ev = crate::fixtures::suite_child(Evaluation::test(), "wide");
    ev.metadata.annotations = Some([(RERUN_ANNOTATION.into(), "x".into())].into());
    let requeue = reconcile_with(ev.clone(), vec![], true, |mut api| async move {
        let status = api.expect_apply(STATUS).await;
        assert_eq!(status.body["status"]["phase"], "Queued");
        assert_eq!(status.body["status"]["reason"], "SuiteParallelism");
        let reason = status.body["status"]["queue"]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(reason.contains("suite wide"), "{reason}");
        api.expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        api.expect_silence().await;
    })
    .await;
    assert_eq!(requeue, Requeue::AwaitChange, "the go-ahead is an event");
    let mut granted = ev;
    granted
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(GO_AHEAD_ANNOTATION.into(), "x".into());
    reconcile_with(granted, vec![], true, |mut api| async move {
        let pod = api.expect_run_start().await;
        assert_eq!(pod.body["kind"], "Pod");
        let status = api.expect_apply(STATUS).await;
        assert_eq!(status.body["status"]["phase"], "Pending");
        api.expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        api.expect_silence().await;
    })
    .await;
}

mod model_endpoints {
    use super::*;
    use crate::cache::waiters::endpoint_key;
    use crate::crd::ModelEndpoint;
    use crate::crd::model::ModelRef;
    use crate::evaluation::observe;

    const ENDPOINT: &str = "/apis/crucible.dev/v1alpha1/namespaces/team-a/modelendpoints/stand-in";

    /// A run with one model, under a controller connected to a gateway.
    fn with_gateway() -> (Arc<Context>, ApiServerVerifier, Evaluation) {
        let (ctx, api) = Context::test();
        let Ok(mut ctx) = Arc::try_unwrap(ctx) else {
            panic!("the test context is not shared yet");
        };
        ctx.config = Config::with_gateway();
        let ev = Evaluation::test().with_spec(|s| {
            s.models = Some(vec![ModelRef {
                name: "target".into(),
                endpoint: "stand-in".into(),
                model: "stand-in-small".into(),
            }]);
        });
        (Arc::new(ctx), api, ev)
    }

    /// The endpoint became Ready between the first read and the record of the wait: the second
    /// read sees it, so the run starts rather than waiting for a wake-up that already went by.
    #[tokio::test]
    async fn a_run_that_finds_its_endpoint_not_ready_waits_for_it_then_reads_it_again() {
        let (ctx, mut api, ev) = with_gateway();
        let ready = ModelEndpoint::ready_test(&["stand-in-small"]);
        let not_ready = ready.clone().with_ready("False", "SecretNotFound", Some(1));
        let read = tokio::spawn({
            let (ctx, ev) = (ctx.clone(), ev.clone());
            async move { observe::model_endpoints(&ev, &ctx).await }
        });
        let json = |e: &ModelEndpoint| serde_json::to_value(e).expect("json");
        api.expect(Method::GET, ENDPOINT, 200, json(&not_ready))
            .await;
        api.expect(Method::GET, ENDPOINT, 200, json(&ready)).await;
        let found = read.await.expect("joined").expect("read");
        let seen = found.get("stand-in").and_then(Option::as_ref);
        assert!(seen.is_some_and(crate::gateway::endpoint::is_ready));
        // Recorded as waiting: the endpoint's controller would send it back.
        let woken = ctx.caches.waiters.take(&endpoint_key("team-a", "stand-in"));
        assert!(woken.contains(&crate::runner::Key::new("team-a", "arith")));
    }

    #[tokio::test]
    async fn a_ready_endpoint_is_read_once_and_nothing_waits() {
        let (ctx, mut api, ev) = with_gateway();
        let ready = ModelEndpoint::ready_test(&["stand-in-small"]);
        let read = tokio::spawn({
            let (ctx, ev) = (ctx.clone(), ev.clone());
            async move { observe::model_endpoints(&ev, &ctx).await }
        });
        let answer = serde_json::to_value(&ready).expect("json");
        api.expect(Method::GET, ENDPOINT, 200, answer).await;
        let found = read.await.expect("joined").expect("read");
        let seen = found.get("stand-in").and_then(Option::as_ref);
        assert!(seen.is_some_and(crate::gateway::endpoint::is_ready));
        assert!(ctx.caches.waiters.is_empty());
        api.expect_silence().await;
    }
}
