use super::*;
use crate::crd::conditions::find;
use crate::crd::evaluation::{EvaluationResult, HistoryEntry, Source};
use crate::evaluation::identity::RERUN_ANNOTATION;
use crate::evaluation::results::LogScanner;
use crate::fixtures::{at, mk_container, mk_pod, running, terminated, waiting};

fn run(ev: &Evaluation, obs: &Observed) -> Plan {
    plan(ev, obs, &Config::default()).expect("plan")
}

/// The Evaluation as it reads after the plan's status was written.
fn after(ev: &Evaluation, plan: &Plan) -> Evaluation {
    ev.clone().with_status(plan.status.clone())
}

fn condition(plan: &Plan, type_: &str) -> (String, String) {
    let c = find(&plan.status.conditions, type_).unwrap_or_else(|| panic!("{type_} missing"));
    (c.status.clone(), c.reason.clone())
}

fn pod_of(plan: &Plan) -> &Pod {
    plan.create
        .iter()
        .find_map(|c| match c {
            Child::Pod(p) => Some(p.as_ref()),
            _ => None,
        })
        .expect("a pod is created")
}

fn with_pods(pods: Vec<Pod>) -> Observed {
    Observed {
        pods,
        ..Observed::empty()
    }
}

fn log(text: &str) -> BTreeMap<String, LogCapture> {
    let mut s = LogScanner::default();
    s.feed(text.as_bytes());
    BTreeMap::from([(EVALUATION_CONTAINER.to_string(), s.finish())])
}

/// An Evaluation whose first attempt has been started, and the name of its pod.
fn started() -> (Evaluation, String) {
    let ev = Evaluation::test();
    let p = run(&ev, &Observed::empty());
    let name = p.status.pod_name.clone().expect("pod name");
    (after(&ev, &p), name)
}

fn succeeded_pod(name: &str, message: &str) -> Pod {
    mk_pod(
        name,
        "Succeeded",
        vec![mk_container(
            "evaluation",
            terminated(0, "Completed", Some(message)),
        )],
    )
}

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
    let p = plan(&Evaluation::test(), &obs, &config).expect("plan");
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
fn spec_change_stops_the_old_run_and_keeps_its_result_in_history() {
    let (ev, name) = started();
    let done = after(
        &ev,
        &run(
            &ev,
            &Observed {
                now: at(10),
                ..with_pods(vec![succeeded_pod(&name, r#"{"score": 0.7}"#)])
            },
        ),
    );
    let changed = done
        .clone()
        .with_spec(|s| s.args = Some(vec!["--hard".into()]))
        .at_generation(2);
    let p = run(
        &changed,
        &Observed {
            now: at(20),
            ..with_pods(vec![succeeded_pod(&name, "")])
        },
    );
    assert_eq!(p.status.phase, Some(Phase::Pending));
    assert_eq!(p.status.run_generation, Some(2));
    assert!(p.status.result.is_none());
    assert_eq!(
        p.status.history,
        [HistoryEntry {
            generation: Some(1),
            commit: None,
            phase: Some(Phase::Succeeded),
            score: Some(0.7),
            passed: Some(true),
            completion_time: Some(at(10)),
        }]
    );
    assert!(
        p.delete.contains(&(ChildKind::Pod, name.clone())),
        "old pod deleted"
    );
    assert_ne!(pod_of(&p).metadata.name.as_deref(), Some(name.as_str()));
}

#[test]
fn spec_change_while_running_supersedes_the_running_pod() {
    let (ev, name) = started();
    let changed = ev
        .with_spec(|s| s.image = "localhost/other:1".into())
        .at_generation(2);
    let p = run(
        &changed,
        &with_pods(vec![mk_pod(
            &name,
            "Running",
            vec![mk_container("evaluation", running())],
        )]),
    );
    assert!(p.delete.contains(&(ChildKind::Pod, name)));
    assert_eq!(p.status.history[0].phase, Some(Phase::Cancelled));
    assert_eq!(p.status.phase, Some(Phase::Pending));
}

#[test]
fn ttl_or_cancel_edits_do_not_start_a_new_run() {
    let (ev, name) = started();
    let done = after(
        &ev,
        &run(
            &ev,
            &with_pods(vec![succeeded_pod(&name, r#"{"score": 1}"#)]),
        ),
    );
    let edited = done
        .clone()
        .with_spec(|s| s.ttl_seconds_after_finished = Some(3600))
        .at_generation(2);
    let p = run(&edited, &Observed::empty());
    assert!(p.create.is_empty());
    assert_eq!(p.status.phase, Some(Phase::Succeeded));
    assert_eq!(
        p.status.observed_generation,
        Some(2),
        "observedGeneration follows every write"
    );
}

#[test]
fn rerun_annotation_starts_a_new_run_once() {
    let (ev, name) = started();
    let done = after(
        &ev,
        &run(
            &ev,
            &with_pods(vec![succeeded_pod(&name, r#"{"score": 1}"#)]),
        ),
    );
    let rerun = done.annotated(RERUN_ANNOTATION, "2026-11-22");
    let p = run(&rerun, &Observed::empty());
    assert_eq!(p.status.phase, Some(Phase::Pending));
    assert_eq!(p.status.rerun.as_deref(), Some("2026-11-22"));
    assert_eq!(p.status.history.len(), 1);
    let again = run(&after(&rerun, &p), &Observed::empty());
    assert_eq!(
        again.status.history.len(),
        1,
        "same annotation value: same run"
    );
}

#[test]
fn history_keeps_the_last_ten_runs() {
    let mut ev = Evaluation::test();
    for generation in 1..=13 {
        ev = ev
            .with_spec(|s| s.args = Some(vec![generation.to_string()]))
            .at_generation(generation);
        ev = after(&ev, &run(&ev, &Observed::empty()));
    }
    let history = &ev.status.as_ref().expect("status").history;
    assert_eq!(history.len(), HISTORY_LIMIT);
    assert_eq!(history[0].generation, Some(12), "newest first");
}

#[test]
fn cancel_keeps_the_log_tail_and_deletes_the_pod() {
    let (ev, name) = started();
    let cancelled = ev.with_spec(|s| s.cancel = Some(true)).at_generation(2);
    let pods = vec![mk_pod(
        &name,
        "Running",
        vec![mk_container("evaluation", running())],
    )];
    let (needed_pod, containers) =
        logs_needed(&cancelled, &pods, &at(5), false, &Config::default()).expect("logs needed");
    assert_eq!(
        (needed_pod.as_str(), containers),
        (name.as_str(), vec![EVALUATION_CONTAINER])
    );
    let p = run(
        &cancelled,
        &Observed {
            now: at(5),
            logs: log("step 1\n"),
            ..with_pods(pods)
        },
    );
    assert_eq!(p.status.phase, Some(Phase::Cancelled));
    assert_eq!(p.status.log_tail.as_deref(), Some("step 1\n"));
    assert_eq!(
        condition(&p, conditions::STALLED),
        ("True".into(), "Cancelled".into())
    );
    assert_eq!(p.delete, [(ChildKind::Pod, name)]);
}

#[test]
fn cancel_before_start_creates_no_pod() {
    let ev = Evaluation::test().with_spec(|s| s.cancel = Some(true));
    let p = run(&ev, &Observed::empty());
    assert!(p.create.is_empty());
    assert_eq!(p.status.phase, Some(Phase::Cancelled));
}

#[test]
fn controller_deadline_times_out_a_stuck_pod() {
    let (ev, name) = started();
    let pods = vec![mk_pod(&name, "Pending", vec![])];
    let late = at(600 + 15);
    assert!(
        logs_needed(&ev, &pods, &at(100), false, &Config::default()).is_none(),
        "no log read while running normally"
    );
    assert!(logs_needed(&ev, &pods, &late, false, &Config::default()).is_some());
    let p = run(
        &ev,
        &Observed {
            now: late,
            ..with_pods(pods)
        },
    );
    assert_eq!(p.status.phase, Some(Phase::TimedOut));
    assert_eq!(p.status.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(p.delete, [(ChildKind::Pod, name)]);
    assert_eq!(p.notes[0].reason, "TimedOut");
}

#[test]
fn infrastructure_failures_retry_with_a_new_pod_then_give_up() {
    let ev = Evaluation::test().with_spec(|s| s.retries = Some(1));
    let ev = after(&ev, &run(&ev, &Observed::empty()));
    let first = ev
        .status
        .as_ref()
        .and_then(|s| s.pod_name.clone())
        .expect("pod");
    let pulled = |name: &str| {
        mk_pod(
            name,
            "Pending",
            vec![mk_container("evaluation", waiting("ImagePullBackOff"))],
        )
    };
    let p = run(&ev, &with_pods(vec![pulled(&first)]));
    assert_eq!(p.status.attempts, Some(2));
    let second = p.status.pod_name.clone().expect("pod");
    assert_ne!(first, second);
    assert!(p.delete.contains(&(ChildKind::Pod, first)));
    assert!(p.notes.iter().any(|n| n.reason == "Retrying"));
    let ev = after(&ev, &p);
    let p = run(&ev, &with_pods(vec![pulled(&second)]));
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.status.reason.as_deref(), Some("ImagePullBackOff"));
    assert!(p.create.is_empty());
}

#[test]
fn evaluation_failures_are_never_retried() {
    let ev = Evaluation::test().with_spec(|s| s.retries = Some(3));
    let ev = after(&ev, &run(&ev, &Observed::empty()));
    let name = ev
        .status
        .as_ref()
        .and_then(|s| s.pod_name.clone())
        .expect("pod");
    let p = run(
        &ev,
        &with_pods(vec![mk_pod(
            &name,
            "Failed",
            vec![mk_container("evaluation", terminated(1, "Error", None))],
        )]),
    );
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.status.attempts, Some(1));
    assert!(p.create.is_empty());
}

#[test]
fn a_lost_pod_is_an_infrastructure_failure() {
    let (ev, _) = started();
    let p = run(&ev, &Observed::empty());
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.status.reason.as_deref(), Some("PodLost"));
}

#[test]
fn ttl_removes_every_child_after_it_expires_and_keeps_the_status() {
    let ev = Evaluation::test().with_spec(|s| s.ttl_seconds_after_finished = Some(60));
    let ev = after(&ev, &run(&ev, &Observed::empty()));
    let name = ev
        .status
        .as_ref()
        .and_then(|s| s.pod_name.clone())
        .expect("pod");
    let done = after(
        &ev,
        &run(
            &ev,
            &Observed {
                now: at(10),
                ..with_pods(vec![succeeded_pod(&name, r#"{"score": 1}"#)])
            },
        ),
    );
    let early = run(
        &done,
        &Observed {
            now: at(40),
            ..Observed::empty()
        },
    );
    assert!(early.delete.is_empty());
    assert_eq!(early.requeue, Requeue::After(Duration::from_secs(30)));
    let expired = run(
        &done,
        &Observed {
            now: at(70),
            ..Observed::empty()
        },
    );
    assert_eq!(
        expired.delete,
        [
            (ChildKind::NetworkPolicy, "arith-sandbox".to_string()),
            (ChildKind::ConfigMap, "arith-workspace".to_string())
        ]
    );
    assert_eq!(Some(&expired.status), done.status.as_ref());
}

#[test]
fn keep_pod_on_failure_keeps_a_failed_pod_only() {
    let ev = Evaluation::test().with_spec(|s| s.keep_pod_on_failure = Some(true));
    let ev = after(&ev, &run(&ev, &Observed::empty()));
    let name = ev
        .status
        .as_ref()
        .and_then(|s| s.pod_name.clone())
        .expect("pod");
    let failed = mk_pod(
        &name,
        "Failed",
        vec![mk_container("evaluation", terminated(2, "Error", None))],
    );
    assert!(run(&ev, &with_pods(vec![failed])).delete.is_empty());
    let ok = succeeded_pod(&name, r#"{"score": 1}"#);
    assert_eq!(
        run(&ev, &with_pods(vec![ok])).delete,
        [(ChildKind::Pod, name)]
    );
}

#[test]
fn queued_runs_wait_without_children() {
    let obs = Observed {
        admission: Admission::Wait {
            position: 4,
            reason: "QuotaExceeded: maxRunning 5 reached".into(),
        },
        ..Observed::empty()
    };
    let p = run(&Evaluation::test(), &obs);
    assert!(p.create.is_empty());
    assert_eq!(p.status.phase, Some(Phase::Queued));
    assert_eq!(p.status.queue.as_ref().and_then(|q| q.position), Some(4));
    assert_eq!(
        condition(&p, conditions::ADMITTED),
        ("False".into(), "Queued".into())
    );
    assert_eq!(condition(&p, conditions::RECONCILING).0, "True");
    assert_eq!(p.requeue, Requeue::After(QUEUE_RECHECK));
    assert_eq!(p.notes[0].reason, "Queued");
}

#[test]
fn refused_policy_fails_closed_without_a_pod() {
    let ev = Evaluation::test();
    let p = run(&ev, &Observed::empty());
    let refusal = Refusal {
        reason: "SandboxUnavailable",
        message: "NetworkPolicy refused: forbidden".into(),
    };
    let p = refused(&ev, p, refusal, &at(0));
    assert!(p.create.is_empty());
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(
        condition(&p, conditions::STALLED),
        ("True".into(), "SandboxUnavailable".into())
    );
    assert_eq!(
        p.notes.iter().map(|n| n.reason).collect::<Vec<_>>(),
        ["SandboxUnavailable"]
    );
}

#[test]
fn status_without_a_result_never_claims_a_pass() {
    let status = EvaluationStatus {
        phase: Some(Phase::Failed),
        reason: Some("InvalidResult".into()),
        result: None::<EvaluationResult>,
        ..Default::default()
    };
    let mut s = status.clone();
    set_conditions(&mut s, Some(1), &at(0));
    assert_eq!(
        find(&s.conditions, conditions::PASSED).map(|c| c.status.as_str()),
        Some("False")
    );
    assert_eq!(
        find(&s.conditions, conditions::STALLED).map(|c| c.reason.as_str()),
        Some("InvalidResult")
    );
}

#[test]
fn no_condition_ever_has_an_empty_message_or_reason() {
    // A 1.20 API server turns "" into null under server-side apply and rejects the status.
    let (ev, name) = started();
    let finished = run(
        &ev,
        &with_pods(vec![succeeded_pod(&name, r#"{"score": 0.1}"#)]),
    );
    let queued = run(
        &Evaluation::test(),
        &Observed {
            admission: Admission::Wait {
                position: 1,
                reason: "QuotaExceeded".into(),
            },
            ..Observed::empty()
        },
    );
    let invalid = run(
        &Evaluation::test().with_spec(|s| s.image = String::new()),
        &Observed::empty(),
    );
    for p in [
        run(&Evaluation::test(), &Observed::empty()),
        finished,
        queued,
        invalid,
    ] {
        for c in &p.status.conditions {
            assert!(!c.message.is_empty() && !c.reason.is_empty(), "{c:?}");
        }
    }
}

#[test]
fn a_pod_created_before_a_lost_status_write_is_adopted_not_deleted() {
    // The controller created the pod, then crashed before writing status.
    let ev = Evaluation::test();
    let first = run(&ev, &Observed::empty());
    let name = first.status.pod_name.clone().expect("pod");
    let running = mk_pod(
        &name,
        "Running",
        vec![mk_container("evaluation", running())],
    );
    let p = run(&ev, &with_pods(vec![running]));
    assert_eq!(p.status.pod_name.as_deref(), Some(name.as_str()));
    assert!(
        p.delete.is_empty(),
        "the running pod is kept: {:?}",
        p.delete
    );
}

#[test]
fn an_emergency_stop_cancels_running_runs_and_keeps_their_log() {
    let (ev, name) = started();
    let pods = vec![mk_pod(
        &name,
        "Running",
        vec![mk_container("evaluation", running())],
    )];
    assert!(logs_needed(&ev, &pods, &at(5), true, &Config::default()).is_some());
    let obs = Observed {
        stop: Some("stopped by `crucible stop`: incident".into()),
        logs: log("partial\n"),
        ..with_pods(pods)
    };
    let p = run(&ev, &obs);
    assert_eq!(p.status.phase, Some(Phase::Cancelled));
    assert_eq!(p.status.reason.as_deref(), Some("EmergencyStop"));
    assert_eq!(p.status.log_tail.as_deref(), Some("partial\n"));
    assert_eq!(p.delete, [(ChildKind::Pod, name)]);
}

#[test]
fn queued_runs_time_out_after_queue_timeout() {
    let ev = Evaluation::test().with_spec(|s| s.queue_timeout = Some("1m".into()));
    let wait = Admission::Wait {
        position: 1,
        reason: "QuotaExceeded: maxRunning 1 reached".into(),
    };
    let queued = after(
        &ev,
        &run(
            &ev,
            &Observed {
                admission: wait.clone(),
                ..Observed::empty()
            },
        ),
    );
    let since = queued
        .status
        .as_ref()
        .and_then(|s| s.queue.as_ref())
        .and_then(|q| q.since.clone());
    assert_eq!(since, Some(at(0)));
    let still = run(
        &queued,
        &Observed {
            now: at(30),
            admission: wait.clone(),
            ..Observed::empty()
        },
    );
    assert_eq!(still.status.phase, Some(Phase::Queued));
    assert_eq!(
        still.status.queue.and_then(|q| q.since),
        Some(at(0)),
        "the wait keeps its start"
    );
    let late = run(
        &queued,
        &Observed {
            now: at(61),
            admission: wait,
            ..Observed::empty()
        },
    );
    assert_eq!(late.status.phase, Some(Phase::Failed));
    assert_eq!(late.status.reason.as_deref(), Some("QueueTimeout"));
    assert!(late.create.is_empty());
}

#[test]
fn only_new_or_queued_runs_ask_for_admission() {
    let ev = Evaluation::test();
    assert!(awaits_admission(&ev, None));
    let (started, _) = started();
    assert!(!awaits_admission(&started, None));
    let changed = started
        .with_spec(|s| s.args = Some(vec!["x".into()]))
        .at_generation(2);
    assert!(awaits_admission(&changed, None), "a new run asks again");
}

fn git_ev(follow: bool) -> Evaluation {
    Evaluation::test().with_spec(|s| {
        s.source = Some(Source::Git(crate::crd::evaluation::GitSource {
            url: "file:///repos/evals".into(),
            r#ref: Some("main".into()),
            path: Some("arith".into()),
            follow: Some(follow),
            ..Default::default()
        }))
    })
}

fn fetched(commit: &str) -> Option<Result<FetchedSource, SourceProblem>> {
    Some(Ok(FetchedSource {
        repo: "file:///repos/evals".into(),
        commit: commit.into(),
        files: BTreeMap::from([("eval.py".to_string(), b"print(1)".to_vec())]),
    }))
}

#[test]
fn a_git_run_is_pinned_to_the_commit_it_started_from() {
    let ev = git_ev(false);
    assert_eq!(source_reference(&ev, None), Some(Some("main".into())));
    let p = run(
        &ev,
        &Observed {
            source: fetched("aaaa"),
            ..Observed::empty()
        },
    );
    let prov = p.status.provenance.clone().expect("provenance");
    assert_eq!(
        (prov.repo.as_deref(), prov.commit.as_deref()),
        (Some("file:///repos/evals"), Some("aaaa"))
    );
    let cm = p
        .create
        .iter()
        .find_map(|c| match c {
            Child::ConfigMap(cm) => Some(cm.clone()),
            _ => None,
        })
        .expect("workspace ConfigMap");
    assert_eq!(
        cm.binary_data.expect("binaryData")["eval.py"].0,
        b"print(1)"
    );
    // While it runs, the source is read at the pinned commit, not at the branch.
    let started = after(&ev, &p);
    assert_eq!(source_reference(&started, None), Some(Some("aaaa".into())));
}

#[test]
fn source_problems_create_no_pod_and_transient_ones_retry() {
    let ev = git_ev(false);
    let unreachable = SourceProblem {
        reason: "SourceUnreachable",
        message: "connection refused".into(),
        transient: true,
    };
    let p = run(
        &ev,
        &Observed {
            source: Some(Err(unreachable)),
            ..Observed::empty()
        },
    );
    assert!(p.create.is_empty());
    assert_eq!(p.status.phase, Some(Phase::Queued));
    assert!(
        p.status
            .queue
            .and_then(|q| q.reason)
            .is_some_and(|r| r.starts_with("SourceUnreachable"))
    );
    assert_eq!(p.requeue, Requeue::After(SOURCE_RETRY));
    let unknown = SourceProblem {
        reason: "UnknownRef",
        message: "no branch nope".into(),
        transient: false,
    };
    let p = run(
        &ev,
        &Observed {
            source: Some(Err(unknown)),
            ..Observed::empty()
        },
    );
    assert!(p.create.is_empty());
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(
        condition(&p, conditions::STALLED),
        ("True".into(), "UnknownRef".into())
    );
    assert_eq!(p.notes[0].severity, Severity::Warning);
}

#[test]
fn follow_starts_a_new_run_when_the_branch_moves() {
    let ev = git_ev(true);
    let started = after(
        &ev,
        &run(
            &ev,
            &Observed {
                source: fetched("aaaa"),
                ..Observed::empty()
            },
        ),
    );
    let name = started
        .status
        .as_ref()
        .and_then(|s| s.pod_name.clone())
        .expect("pod");
    let done_plan = run(
        &started,
        &with_pods(vec![succeeded_pod(&name, r#"{"score": 0.5}"#)]),
    );
    assert_eq!(
        done_plan.requeue,
        Requeue::After(Config::default().follow_interval),
        "checks the branch again"
    );
    let done = after(&started, &done_plan);
    // Same head: nothing happens.
    assert!(!awaits_admission(&done, Some("aaaa")));
    assert_eq!(source_reference(&done, Some("aaaa")), None);
    // The branch moved: a new run from the new head, the old one in history.
    assert!(awaits_admission(&done, Some("bbbb")));
    assert_eq!(
        source_reference(&done, Some("bbbb")),
        Some(Some("bbbb".into()))
    );
    let p = run(
        &done,
        &Observed {
            head: Some("bbbb".into()),
            source: fetched("bbbb"),
            ..Observed::empty()
        },
    );
    assert_eq!(p.status.phase, Some(Phase::Pending));
    assert_eq!(
        p.status.provenance.and_then(|p| p.commit).as_deref(),
        Some("bbbb")
    );
    assert_eq!(p.status.history[0].commit.as_deref(), Some("aaaa"));
    assert_eq!(p.status.history[0].score, Some(0.5));
}

/// kstatus (Argo CD, Flux): Reconciling while in progress, Ready when finished and passed,
/// Stalled when finished otherwise; never two of them True; observedGeneration everywhere.
#[test]
fn every_phase_obeys_the_kstatus_rules() {
    let (ev, name) = started();
    let ev = ev.at_generation(3);
    let pod = |phase: &str, state| mk_pod(&name, phase, vec![mk_container("evaluation", state)]);
    let queued = Observed {
        admission: Admission::Wait {
            position: 2,
            reason: "QuotaExceeded".into(),
        },
        ..Observed::empty()
    };
    let cases: Vec<(&str, Plan)> = vec![
        ("Queued", run(&Evaluation::test().at_generation(3), &queued)),
        (
            "Pending",
            run(&ev, &with_pods(vec![mk_pod(&name, "Pending", vec![])])),
        ),
        (
            "Running",
            run(&ev, &with_pods(vec![pod("Running", running())])),
        ),
        (
            "Succeeded",
            run(
                &ev,
                &with_pods(vec![succeeded_pod(&name, r#"{"score": 1}"#)]),
            ),
        ),
        (
            "NotPassed",
            run(
                &ev,
                &with_pods(vec![succeeded_pod(&name, r#"{"score": 0}"#)]),
            ),
        ),
        (
            "Failed",
            run(
                &ev,
                &with_pods(vec![pod("Failed", terminated(1, "Error", None))]),
            ),
        ),
        (
            "TimedOut",
            run(
                &ev,
                &Observed {
                    now: at(10_000),
                    ..with_pods(vec![pod("Running", running())])
                },
            ),
        ),
        (
            "Cancelled",
            run(
                &ev.clone().with_spec(|s| s.cancel = Some(true)),
                &Observed::empty(),
            ),
        ),
        (
            "InvalidSpec",
            run(
                &Evaluation::test()
                    .with_spec(|s| s.image = String::new())
                    .at_generation(3),
                &Observed::empty(),
            ),
        ),
        (
            "SandboxUnavailable",
            run(
                &Evaluation::test().at_generation(3),
                &Observed {
                    runtime_class: Some(RuntimeClassCheck::Missing),
                    ..Observed::empty()
                },
            ),
        ),
    ];
    for (label, p) in cases {
        let s = &p.status;
        let get = |t: &str| {
            find(&s.conditions, t)
                .map(|c| c.status.clone())
                .unwrap_or_default()
        };
        let finished = s.phase.is_some_and(Phase::is_finished);
        let passed = s.result.as_ref().is_some_and(|r| r.passed);
        assert_eq!(
            get(conditions::RECONCILING) == "True",
            !finished,
            "{label}: Reconciling"
        );
        assert_eq!(
            get(conditions::READY) == "True",
            finished && passed,
            "{label}: Ready"
        );
        assert_eq!(
            get(conditions::STALLED) == "True",
            finished && !passed,
            "{label}: Stalled"
        );
        assert_eq!(
            s.observed_generation,
            Some(3),
            "{label}: observedGeneration"
        );
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(3)),
            "{label}"
        );
        let expected_phase = match label {
            "NotPassed" => "Succeeded",
            "InvalidSpec" | "SandboxUnavailable" => "Failed",
            other => other,
        };
        assert_eq!(s.phase.map(Phase::as_str), Some(expected_phase), "{label}");
    }
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
