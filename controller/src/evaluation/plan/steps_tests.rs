//! Starting and finishing a run.

use super::test_support::*;
use super::*;
use crate::crd::conditions::{self};
use crate::fixtures::{at, mk_container, mk_pod, running};

#[test]
fn first_reconcile_creates_policy_then_workspace_then_pod() {
    let ev = Evaluation::test();
    let p = run(&ev, &Observed::empty());
    let kinds: Vec<_> = p
        .create
        .iter()
        .map(|c| match c {
            Child::NetworkPolicy(_) => "NetworkPolicy",
            Child::ConfigMap(_) => "ConfigMap",
            Child::Pod(_) => "Pod",
        })
        .collect();
    assert_eq!(kinds, ["NetworkPolicy", "ConfigMap", "Pod"]);
    assert_eq!(p.status.phase, Some(Phase::Pending));
    assert_eq!(p.status.attempts, Some(1));
    assert_eq!(p.status.observed_generation, Some(1));
    assert_eq!(p.status.start_time, Some(at(0)));
    assert_eq!(
        p.status.pod_name.as_deref(),
        pod_of(&p).metadata.name.as_deref()
    );
    assert_eq!(p.status.sandbox.as_ref().map(|s| s.sandboxed), Some(true));
    assert_eq!(condition(&p, conditions::RECONCILING).0, "True");
    assert_eq!(condition(&p, conditions::ADMITTED).0, "True");
    assert_eq!(condition(&p, conditions::READY).0, "False");
    assert_eq!(condition(&p, conditions::STALLED).0, "False");
    assert_eq!(condition(&p, conditions::PASSED).0, "Unknown");
    assert_eq!(
        p.notes.iter().map(|n| n.reason).collect::<Vec<_>>(),
        ["Admitted"]
    );
    assert!(p.delete.is_empty());
}

#[test]
fn invalid_spec_creates_nothing_and_stalls() {
    let ev = Evaluation::test().with_spec(|s| s.timeout = Some("0s".into()));
    let p = run(&ev, &Observed::empty());
    assert!(p.create.is_empty());
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.status.reason.as_deref(), Some("InvalidSpec"));
    assert_eq!(
        condition(&p, conditions::STALLED),
        ("True".into(), "InvalidSpec".into())
    );
    assert_eq!(condition(&p, conditions::READY).0, "False");
    assert_eq!(condition(&p, conditions::RECONCILING).0, "False");
    assert_eq!(p.notes[0].reason, "InvalidSpec");
    assert_eq!(p.notes[0].severity, Severity::Warning);
}

#[test]
fn missing_runtime_class_fails_closed() {
    let obs = Observed {
        runtime_class: Some(RuntimeClassCheck::Missing),
        ..Observed::empty()
    };
    let p = run(&Evaluation::test(), &obs);
    assert!(p.create.is_empty(), "no children without the sandbox");
    assert_eq!(p.status.reason.as_deref(), Some("SandboxUnavailable"));
    assert_eq!(
        condition(&p, conditions::STALLED),
        ("True".into(), "SandboxUnavailable".into())
    );
    assert_eq!(p.notes[0].reason, "SandboxUnavailable");
}

#[test]
fn allow_unsandboxed_runs_without_runtime_class_and_says_so() {
    let obs = Observed {
        runtime_class: Some(RuntimeClassCheck::Missing),
        ..Observed::empty()
    };
    let config = Config {
        allow_unsandboxed: true,
        ..Config::default()
    };
    let p = plan(&Evaluation::test(), &obs, &Decision::Admit, &config).expect("plan");
    assert_eq!(
        pod_of(&p)
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.clone()),
        None
    );
    assert_eq!(p.status.sandbox.as_ref().map(|s| s.sandboxed), Some(false));
    assert!(
        p.notes
            .iter()
            .any(|n| n.reason == "Unsandboxed" && n.severity == Severity::Warning)
    );
}

#[test]
fn running_pod_moves_to_running_and_requeues_before_the_deadline() {
    let (ev, name) = started();
    let obs = Observed {
        now: at(30),
        ..with_pods(vec![mk_pod(
            &name,
            "Running",
            vec![mk_container("evaluation", running())],
        )])
    };
    let p = run(&ev, &obs);
    assert_eq!(p.status.phase, Some(Phase::Running));
    assert_eq!(condition(&p, conditions::RUNNING).0, "True");
    assert_eq!(p.notes[0].reason, "Started");
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(p.requeue, Requeue::After(MAX_RESYNC));
    let short = ev.clone().with_spec(|s| s.timeout = Some("1m".into()));
    // The spec changed: a new run. Use a fresh one with a short timeout instead.
    let short_started = after(&short, &run(&short, &Observed::empty()));
    let name = short_started
        .status
        .as_ref()
        .and_then(|s| s.pod_name.clone())
        .expect("pod");
    let obs = Observed {
        now: at(30),
        ..with_pods(vec![mk_pod(
            &name,
            "Running",
            vec![mk_container("evaluation", running())],
        )])
    };
    assert_eq!(
        run(&short_started, &obs).requeue,
        Requeue::After(Duration::from_secs(60 + 15 - 30))
    );
}

#[test]
fn finished_pod_succeeds_records_everything_then_deletes_the_pod() {
    let (ev, name) = started();
    let obs = Observed {
        now: at(12),
        logs: log("working\nall done\n"),
        ..with_pods(vec![succeeded_pod(
            &name,
            r#"{"score": 0.93, "metrics": {"n": 100}}"#,
        )])
    };
    let p = run(&ev, &obs);
    let s = &p.status;
    assert_eq!(s.phase, Some(Phase::Succeeded));
    assert_eq!(
        s.result.as_ref().map(|r| (r.score, r.passed)),
        Some((0.93, true))
    );
    assert_eq!(s.exit_code, Some(0));
    assert_eq!(s.duration.as_deref(), Some("12s"));
    assert_eq!(s.completion_time, Some(at(12)));
    assert_eq!(s.log_tail.as_deref(), Some("working\nall done\n"));
    let prov = s.provenance.as_ref().expect("provenance");
    assert_eq!(prov.image_id.as_deref(), Some("sha256:abc"));
    assert!(
        prov.spec_hash
            .as_deref()
            .is_some_and(|h| h.starts_with("sha256:"))
    );
    assert!(prov.result_digest.is_some());
    assert_eq!(
        condition(&p, conditions::READY),
        ("True".into(), "Passed".into())
    );
    assert_eq!(condition(&p, conditions::STALLED).0, "False");
    assert_eq!(condition(&p, conditions::RECONCILING).0, "False");
    assert_eq!(condition(&p, conditions::PASSED).0, "True");
    assert_eq!(p.delete, [(ChildKind::Pod, name)]);
    assert_eq!(p.notes[0].reason, "Succeeded");
}

#[test]
fn a_finished_run_is_never_started_again() {
    let (ev, name) = started();
    let obs = Observed {
        now: at(12),
        ..with_pods(vec![succeeded_pod(&name, r#"{"score": 1}"#)])
    };
    let done = after(&ev, &run(&ev, &obs));
    // A restarted controller sees the finished status and no pod: nothing to do.
    let again = run(
        &done,
        &Observed {
            now: at(500),
            ..Observed::empty()
        },
    );
    assert!(again.create.is_empty());
    assert!(again.notes.is_empty());
    assert_eq!(
        Some(&again.status),
        done.status.as_ref(),
        "status write is a no-op"
    );
    assert_eq!(again.requeue, Requeue::AwaitChange);
}

#[test]
fn below_threshold_is_stalled_with_evaluation_failed() {
    let (ev, name) = started();
    let ev = ev.with_spec(|s| s.pass_threshold = Some(0.95));
    // passThreshold is part of the run: changing it started a new run; take its pod.
    let ev = after(&ev, &run(&ev, &Observed::empty()));
    let name2 = ev
        .status
        .as_ref()
        .and_then(|s| s.pod_name.clone())
        .expect("pod");
    assert_ne!(name, name2);
    let p = run(
        &ev,
        &with_pods(vec![succeeded_pod(&name2, r#"{"score": 0.9}"#)]),
    );
    assert_eq!(p.status.phase, Some(Phase::Succeeded));
    assert_eq!(
        condition(&p, conditions::STALLED),
        ("True".into(), "EvaluationFailed".into())
    );
    assert_eq!(condition(&p, conditions::READY).0, "False");
    assert_eq!(condition(&p, conditions::PASSED).0, "False");
}

#[test]
fn gpu_runs_use_the_nvproxy_class_and_fail_closed_without_it() {
    let ev = Evaluation::test().with_spec(|s| {
        s.resources = Some(crate::crd::evaluation::Resources {
            gpu: Some(2),
            ..Default::default()
        })
    });
    let p = run(&ev, &Observed::empty());
    let spec = pod_of(&p).spec.clone().expect("pod spec");
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor-nvproxy"));
    let resources = spec.containers[0].resources.clone().expect("resources");
    assert_eq!(
        resources
            .limits
            .as_ref()
            .map(|l| l["nvidia.com/gpu"].0.as_str()),
        Some("2")
    );
    assert_eq!(
        p.status.sandbox.and_then(|s| s.runtime_class_name),
        Some("gvisor-nvproxy".into())
    );

    let missing = Observed {
        runtime_class: Some(RuntimeClassCheck::Missing),
        ..Observed::empty()
    };
    let p = run(&ev, &missing);
    assert!(
        p.create.is_empty(),
        "no GPU pod without the nvproxy sandbox"
    );
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.status.reason.as_deref(), Some("SandboxUnavailable"));
    let message = p.status.message.unwrap_or_default();
    assert!(message.contains("gvisor-nvproxy"), "{message}");
}

#[test]
fn a_pod_no_node_can_take_says_why_until_it_is_placed() {
    use k8s_openapi::api::core::v1::PodCondition;
    let (ev, name) = started();
    let mut pod = mk_pod(&name, "Pending", vec![]);
    if let Some(status) = pod.status.as_mut() {
        status.conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.".into()),
            ..Default::default()
        }]);
    }
    let waiting = run(&ev, &with_pods(vec![pod]));
    assert_eq!(waiting.status.phase, Some(Phase::Pending));
    assert_eq!(
        waiting.status.message.as_deref(),
        Some("waiting for a node: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    );
    let placed = mk_pod(
        &name,
        "Running",
        vec![mk_container("evaluation", running())],
    );
    let later = run(&after(&ev, &waiting), &with_pods(vec![placed]));
    assert_eq!(later.status.phase, Some(Phase::Running));
    assert_eq!(later.status.message, None);
}
