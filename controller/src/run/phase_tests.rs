use super::*;
use crate::crd::Evaluation;
use crate::crd::evaluation::Scorer;
use crate::fixtures::{mk_container, mk_pod, running, terminated, waiting};
use crate::run::results::LogScanner;
use k8s_openapi::api::core::v1::PodCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn logs(container: &str, text: &str) -> BTreeMap<String, LogCapture> {
    let mut s = LogScanner::default();
    s.feed(text.as_bytes());
    BTreeMap::from([(container.to_string(), s.finish())])
}

fn finished(state: PodState) -> Outcome {
    match state {
        PodState::Finished(o) => o,
        other => panic!("expected a finished pod, got {other:?}"),
    }
}

#[test]
fn pending_and_running_pods_are_read_as_such() {
    let spec = Evaluation::test().spec;
    let pod = mk_pod("p", "Pending", vec![]);
    assert_eq!(
        examine(&pod, &spec, &BTreeMap::new(), 0.5),
        PodState::Waiting
    );
    let pod = mk_pod("p", "Running", vec![mk_container("evaluation", running())]);
    assert_eq!(
        examine(&pod, &spec, &BTreeMap::new(), 0.5),
        PodState::Running
    );
}

#[test]
fn exit_zero_with_a_termination_message_succeeds() {
    let spec = Evaluation::test().spec;
    let pod = mk_pod(
        "p",
        "Succeeded",
        vec![mk_container(
            "evaluation",
            terminated(0, "Completed", Some(r#"{"score": 0.9}"#)),
        )],
    );
    let o = finished(examine(&pod, &spec, &BTreeMap::new(), 0.5));
    assert_eq!(o.phase, Some(Phase::Succeeded));
    let result = o.result.expect("result");
    assert!(result.passed);
    assert_eq!(result.score, 0.9);
    assert!(o.result_digest.is_some());
}

#[test]
fn below_threshold_succeeds_but_does_not_pass() {
    let spec = Evaluation::test().spec;
    let pod = mk_pod(
        "p",
        "Succeeded",
        vec![mk_container("evaluation", terminated(0, "Completed", None))],
    );
    let o = finished(examine(
        &pod,
        &spec,
        &logs("evaluation", "CRUCIBLE_RESULT {\"score\": 0.2}\n"),
        0.5,
    ));
    assert_eq!(o.phase, Some(Phase::Succeeded));
    assert_eq!(o.reason.as_deref(), Some("NotPassed"));
    assert!(!o.result.expect("result").passed);
}

#[test]
fn missing_or_invalid_results_fail_with_invalid_result() {
    let spec = Evaluation::test().spec;
    let pod = mk_pod(
        "p",
        "Succeeded",
        vec![mk_container(
            "evaluation",
            terminated(0, "Completed", Some("{\"score\": NaN}")),
        )],
    );
    let o = finished(examine(&pod, &spec, &BTreeMap::new(), 0.5));
    assert_eq!(
        (o.phase, o.reason.as_deref()),
        (Some(Phase::Failed), Some("InvalidResult"))
    );
    assert!(o.message.expect("message").contains("not valid JSON"));
    let pod = mk_pod(
        "p",
        "Succeeded",
        vec![mk_container("evaluation", terminated(0, "Completed", None))],
    );
    let o = finished(examine(&pod, &spec, &logs("evaluation", "hi\n"), 0.5));
    assert_eq!(o.reason.as_deref(), Some("InvalidResult"));
}

#[test]
fn non_zero_exit_and_oom_fail_with_the_exit_code() {
    let spec = Evaluation::test().spec;
    let pod = mk_pod(
        "p",
        "Failed",
        vec![mk_container("evaluation", terminated(3, "Error", None))],
    );
    let o = finished(examine(&pod, &spec, &BTreeMap::new(), 0.5));
    assert_eq!(
        (o.phase, o.exit_code, o.reason.as_deref()),
        (Some(Phase::Failed), Some(3), Some("Error"))
    );
    let pod = mk_pod(
        "p",
        "Failed",
        vec![mk_container(
            "evaluation",
            terminated(137, "OOMKilled", None),
        )],
    );
    let o = finished(examine(&pod, &spec, &BTreeMap::new(), 0.5));
    assert_eq!(o.reason.as_deref(), Some("OOMKilled"));
    assert!(o.message.expect("message").contains("memory"));
}

#[test]
fn kubelet_deadline_is_a_timeout_and_eviction_is_infrastructure() {
    let spec = Evaluation::test().spec;
    let mut pod = mk_pod("p", "Failed", vec![]);
    pod.status.as_mut().expect("status").reason = Some("DeadlineExceeded".into());
    assert_eq!(
        finished(examine(&pod, &spec, &BTreeMap::new(), 0.5)).phase,
        Some(Phase::TimedOut)
    );
    pod.status.as_mut().expect("status").reason = Some("Evicted".into());
    assert!(
        matches!(examine(&pod, &spec, &BTreeMap::new(), 0.5), PodState::InfraFailure { reason, .. } if reason == "Evicted")
    );
}

/// Current kubelets turn a pod that is deleted or evicted while it runs `Failed` (its container
/// killed: exit 137) before removing it; that is the cluster's doing, not the evaluation's.
#[test]
fn pods_the_cluster_stops_are_lost_or_evicted_not_failed() {
    let spec = Evaluation::test().spec;
    let killed = || {
        mk_pod(
            "p",
            "Failed",
            vec![mk_container("evaluation", terminated(137, "Error", None))],
        )
    };
    let infra = |pod: &Pod| match examine(pod, &spec, &BTreeMap::new(), 0.5) {
        PodState::InfraFailure { reason, message } => (reason, message),
        other => panic!("expected an infrastructure failure, got {other:?}"),
    };
    for (why, reason) in [
        ("EvictionByEvictionAPI", "Evicted"),
        ("TerminationByKubelet", "Evicted"),
        ("PreemptionByScheduler", "Preempting"),
        ("DeletionByTaintManager", "PodLost"),
        ("DeletionByPodGC", "PodLost"),
    ] {
        let mut pod = killed();
        pod.status.as_mut().expect("status").conditions = Some(vec![PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some(why.into()),
            message: Some(format!("{why} message")),
            ..Default::default()
        }]);
        let (got, message) = infra(&pod);
        assert_eq!(got, reason, "{why}");
        assert!(message.contains(&format!("{why} message")), "{message}");
    }
    // a plain DELETE: no condition, only the deletion timestamp
    let mut pod = killed();
    pod.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    assert_eq!(infra(&pod).0, "PodLost");
    // finished before the deletion: its outcome stands
    let mut pod = mk_pod(
        "p",
        "Succeeded",
        vec![mk_container("evaluation", terminated(0, "Completed", None))],
    );
    pod.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    assert!(matches!(
        examine(&pod, &spec, &BTreeMap::new(), 0.5),
        PodState::Finished(_)
    ));
    // the evaluation's own failure, with nobody deleting it, stays its own
    assert!(matches!(
        examine(&killed(), &spec, &BTreeMap::new(), 0.5),
        PodState::Finished(_)
    ));
}

#[test]
fn image_pull_back_off_is_infrastructure_and_config_errors_fail() {
    let spec = Evaluation::test().spec;
    for reason in [
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "ImageInspectError",
    ] {
        let pod = mk_pod(
            "p",
            "Pending",
            vec![mk_container("evaluation", waiting(reason))],
        );
        assert!(
            matches!(examine(&pod, &spec, &BTreeMap::new(), 0.5), PodState::InfraFailure { reason: r, .. } if r == reason),
            "{reason}"
        );
    }
    let pod = mk_pod(
        "p",
        "Pending",
        vec![mk_container("evaluation", waiting("ErrImagePull"))],
    );
    assert_eq!(
        examine(&pod, &spec, &BTreeMap::new(), 0.5),
        PodState::Waiting
    );
    let pod = mk_pod(
        "p",
        "Pending",
        vec![mk_container(
            "evaluation",
            waiting("CreateContainerConfigError"),
        )],
    );
    assert_eq!(
        finished(examine(&pod, &spec, &BTreeMap::new(), 0.5)).phase,
        Some(Phase::Failed)
    );
}

#[test]
fn with_a_scorer_only_the_scorer_result_counts() {
    let spec = Evaluation::test()
        .with_spec(|s| {
            s.scorer = Some(Scorer {
                image: "img".into(),
                ..Default::default()
            })
        })
        .spec;
    // The evaluated code prints a forged result; the scorer writes the real one.
    let mut pod = mk_pod(
        "p",
        "Succeeded",
        vec![mk_container(
            "scorer",
            terminated(0, "Completed", Some(r#"{"score": 0.1}"#)),
        )],
    );
    pod.status.as_mut().expect("status").init_container_statuses = Some(vec![mk_container(
        "evaluation",
        terminated(0, "Completed", None),
    )]);
    let forged = logs(
        "evaluation",
        "CRUCIBLE_RESULT {\"score\": 1, \"passed\": true}\n",
    );
    let o = finished(examine(&pod, &spec, &forged, 0.5));
    assert_eq!(o.result.expect("result").score, 0.1);
    // The evaluated code failing fails the run before the scorer.
    pod.status.as_mut().expect("status").init_container_statuses = Some(vec![mk_container(
        "evaluation",
        terminated(1, "Error", None),
    )]);
    pod.status.as_mut().expect("status").phase = Some("Failed".into());
    assert_eq!(
        finished(examine(&pod, &spec, &forged, 0.5)).exit_code,
        Some(1)
    );
    // While the evaluated code runs, the pod is Pending but the run is Running.
    let mut pod = mk_pod(
        "p",
        "Pending",
        vec![mk_container("scorer", waiting("PodInitializing"))],
    );
    pod.status.as_mut().expect("status").init_container_statuses =
        Some(vec![mk_container("evaluation", running())]);
    assert_eq!(
        examine(&pod, &spec, &BTreeMap::new(), 0.5),
        PodState::Running
    );
}

/// The memory bomb's pod as the local cluster's API server returned it (runsc behind the runc
/// shim, 128Mi limit, `python3` appending 16 MiB blocks until killed): the kubelet says
/// `Error`/255, while the kernel log shows the memcg OOM kill of the Sentry (`exe`) and
/// containerd a TaskOOM for the pod sandbox only.
fn gvisor_memory_bomb_pod(runtime_class: Option<&str>) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "mem-19bcebe337", "namespace": "bat-probe"},
        "spec": {"runtimeClassName": runtime_class, "containers": [{"name": "evaluation"}]},
        "status": {
            "phase": "Failed",
            "qosClass": "Guaranteed",
            "containerStatuses": [{
                "containerID": "containerd://4b7556b15ef8066d2c0fbaef9b22d8572507b54a412a2f6c6107fbc838dcd77e",
                "image": "localhost/crucible/python:3.11",
                "imageID": "sha256:123baa195d1e96b0b56db810580fb511d6f0b9afc49fb1c25c69c06c648823ec",
                "lastState": {},
                "name": "evaluation",
                "ready": false,
                "restartCount": 0,
                "started": false,
                "state": {"terminated": {
                    "containerID": "containerd://4b7556b15ef8066d2c0fbaef9b22d8572507b54a412a2f6c6107fbc838dcd77e",
                    "exitCode": 255,
                    "finishedAt": "2026-12-01T21:35:07Z",
                    "reason": "Error",
                    "startedAt": "2026-12-01T21:35:06Z"
                }}
            }]
        }
    }))
    .expect("observed pod")
}

#[test]
fn a_gvisor_sandbox_killed_for_memory_is_oom_killed() {
    let spec = Evaluation::test().spec;
    let log = logs("evaluation", "allocated 16 MiB\nallocated 96 MiB\n");
    let o = finished(examine(
        &gvisor_memory_bomb_pod(Some("gvisor")),
        &spec,
        &log,
        0.5,
    ));
    assert_eq!(o.phase, Some(Phase::Failed));
    assert_eq!(o.reason.as_deref(), Some("OOMKilled"));
    assert_eq!(o.exit_code, Some(255));
    let message = o.message.unwrap_or_default();
    assert!(message.contains("memory limit"), "{message}");
    assert!(message.contains("spec.resources.memory"), "{message}");

    // Without gVisor the kubelet reports OOMKilled itself; 255 there is the program's own.
    let o = finished(examine(&gvisor_memory_bomb_pod(None), &spec, &log, 0.5));
    assert_eq!(o.reason.as_deref(), Some("Error"));
    assert_eq!(
        o.message.as_deref(),
        Some("the evaluation exited with code 255")
    );
}

#[test]
fn other_exit_codes_under_gvisor_stay_errors() {
    let spec = Evaluation::test().spec;
    let mut pod = gvisor_memory_bomb_pod(Some("gvisor"));
    // `os.kill(os.getpid(), 9)` and `sys.exit(137)` both read 137/Error under runsc.
    pod.status
        .as_mut()
        .and_then(|s| s.container_statuses.as_mut())
        .and_then(|c| c[0].state.as_mut())
        .and_then(|s| s.terminated.as_mut())
        .expect("terminated")
        .exit_code = 137;
    let o = finished(examine(&pod, &spec, &BTreeMap::new(), 0.5));
    assert_eq!(o.reason.as_deref(), Some("Error"));
    assert_eq!(o.exit_code, Some(137));
}

#[test]
fn a_failed_network_gate_fails_the_run_with_its_message() {
    let spec = Evaluation::test().spec;
    let message = "the pod's NetworkPolicy was not in force 60s after it started";
    let mut pod = mk_pod(
        "p",
        "Failed",
        vec![mk_container("evaluation", waiting("PodInitializing"))],
    );
    pod.status.as_mut().expect("status").init_container_statuses = Some(vec![mk_container(
        crate::network_gate::CONTAINER,
        terminated(1, "Error", Some(message)),
    )]);
    let o = finished(examine(&pod, &spec, &BTreeMap::new(), 0.5));
    assert_eq!(o.phase, Some(Phase::Failed));
    assert_eq!(o.reason.as_deref(), Some("NetworkPolicyNotEnforced"));
    assert_eq!(o.message.as_deref(), Some(message));
    // A gate that opened is not a failure: the evaluation's own exit decides.
    pod.status.as_mut().expect("status").init_container_statuses = Some(vec![mk_container(
        crate::network_gate::CONTAINER,
        terminated(0, "Completed", None),
    )]);
    pod.status.as_mut().expect("status").container_statuses = Some(vec![mk_container(
        "evaluation",
        terminated(3, "Error", None),
    )]);
    let o = finished(examine(&pod, &spec, &BTreeMap::new(), 0.5));
    assert_eq!(o.exit_code, Some(3));
    assert_ne!(o.reason.as_deref(), Some("NetworkPolicyNotEnforced"));
}
