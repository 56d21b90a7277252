//! New runs, reruns, history, cancel, deadlines, retries, TTL.

use super::test_support::*;
use super::*;
use crate::crd::conditions::{self};
use crate::crd::evaluation::HistoryEntry;
use crate::fixtures::{at, mk_container, mk_pod, running, terminated, waiting};
use crate::labels::RERUN_ANNOTATION;
use crate::run::pod::EVALUATION_CONTAINER;

#[test]
fn history_keeps_a_runs_samples_mean_interval_and_bundle() {
    let (ev, name) = started();
    let mut done = after(
        &ev,
        &run(
            &ev,
            &Observed {
                now: at(10),
                ..with_pods(vec![succeeded_pod(&name, r#"{"score": 0.7}"#)])
            },
        ),
    );
    let samples = crate::crd::samples::SamplesStatus {
        mean: 0.7,
        ci95: Some(crate::crd::samples::Interval {
            low: 0.6,
            high: 0.8,
        }),
        digest: Some("sha256:ab".into()),
        uri: Some("file:///r/ns/ev/run/samples.jsonl.zst".into()),
        ..Default::default()
    };
    if let Some(status) = done.status.as_mut() {
        status.samples = Some(samples.clone());
    }
    let changed = done.with_spec(|s| s.epochs = Some(3)).at_generation(2);
    let p = run(
        &changed,
        &Observed {
            now: at(20),
            ..with_pods(vec![succeeded_pod(&name, "")])
        },
    );
    assert!(
        p.status.samples.is_none(),
        "a new run starts without samples"
    );
    let kept = p.status.history[0]
        .samples
        .clone()
        .expect("history samples");
    assert_eq!(
        (kept.mean, kept.ci95, kept.digest, kept.uri),
        (samples.mean, samples.ci95, samples.digest, samples.uri)
    );
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
            samples: None,
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
    let needed =
        logs_needed(&cancelled, &pods, &at(5), false, &Config::default()).expect("logs needed");
    assert_eq!(
        needed,
        LogsNeeded {
            pod: name.clone(),
            containers: vec![EVALUATION_CONTAINER],
            stopping: true,
            overdue: false,
        }
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
    // One Event for the new attempt: Retrying (not also Admitted).
    assert_eq!(
        p.notes.iter().map(|n| n.reason).collect::<Vec<_>>(),
        ["Retrying"]
    );
    let ev = after(&ev, &p);
    let p = run(&ev, &with_pods(vec![pulled(&second)]));
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.status.reason.as_deref(), Some("ImagePullBackOff"));
    assert!(p.create.is_empty());
}

/// A retry is admitted like any run: when the gate does not admit it (its run lost its
/// admission in a restart), the lost pod goes, no new pod is made and the run waits in the
/// queue; once admitted, it starts the next attempt.
#[test]
fn a_retry_the_gate_does_not_admit_waits_in_the_queue() {
    let ev = Evaluation::test().with_spec(|s| s.retries = Some(1));
    let ev = after(&ev, &run(&ev, &Observed::empty()));
    let first = ev
        .status
        .as_ref()
        .and_then(|s| s.pod_name.clone())
        .expect("pod");
    let p = run_with(
        &ev,
        &with_pods(vec![]),
        &wait(1, "QuotaExceeded: maxRunning 1 reached"),
    );
    assert_eq!(p.status.phase, Some(Phase::Queued));
    assert!(
        p.create.is_empty(),
        "no second pod beside the admitted ones"
    );
    assert!(p.in_queue);
    assert_eq!(p.status.attempts, Some(1));
    assert!(p.status.pod_name.is_none());
    assert_eq!(p.holds(), Default::default(), "holds nothing while queued");
    let p = run(&after(&ev, &p), &with_pods(vec![]));
    assert_eq!(p.status.phase, Some(Phase::Pending));
    assert_eq!(p.status.attempts, Some(2));
    assert_ne!(p.status.pod_name, Some(first));
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
    // Its own workspace goes; the namespace's deny-all policy is not the run's (network None
    // has no policy of its own).
    let digest = done
        .status
        .as_ref()
        .and_then(|s| s.provenance.clone())
        .and_then(|p| p.source_digest)
        .expect("digest");
    assert_eq!(
        expired.delete,
        [(
            ChildKind::ConfigMap,
            crate::run::workspace::workspace_name(
                "arith",
                "11111111-2222-3333-4444-555555555555",
                &digest
            )
        )]
    );
    let mut kept = done.status.clone().expect("status");
    kept.children_removed = Some(true);
    assert_eq!(
        expired.status, kept,
        "the status stays, and remembers the cleanup"
    );
    let again = run(
        &after(&done, &expired),
        &Observed {
            now: at(90),
            ..Observed::empty()
        },
    );
    assert!(again.delete.is_empty(), "no DELETE is sent twice");
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
fn a_pod_that_finished_by_itself_is_not_being_stopped() {
    let (ev, name) = started();
    let pods = vec![succeeded_pod(&name, r#"{"score": 1}"#)];
    let needed = logs_needed(&ev, &pods, &at(5), false, &Config::default()).expect("logs");
    assert!(
        !needed.stopping,
        "its log may hold the result: a failed read is retried"
    );
}

/// A pod that finished by itself on a node that is gone: its log cannot be read. Within
/// [`LOG_WAIT`] the read is retried (the reconcile fails); past it the run ends without the
/// log, says so in its message, and frees its slot.
#[test]
fn a_finished_pod_whose_log_stays_unreadable_ends_the_run_after_the_wait() {
    let (ev, name) = started();
    let mut pod = succeeded_pod(&name, r#"{"score": 1}"#);
    if let Some(c) = pod
        .status
        .as_mut()
        .and_then(|s| s.container_statuses.as_mut())
        .and_then(|cs| cs.first_mut())
        .and_then(|c| c.state.as_mut())
        .and_then(|s| s.terminated.as_mut())
    {
        c.finished_at = Some(at(10));
    }
    let pods = vec![pod];
    let config = Config::default();
    let wait = i64::try_from(LOG_WAIT.as_secs()).expect("small");
    let soon = logs_needed(&ev, &pods, &at(10 + wait - 1), false, &config).expect("logs");
    assert!(!soon.overdue, "its log may still come back");
    let late = logs_needed(&ev, &pods, &at(10 + wait), false, &config).expect("logs");
    assert!(late.overdue);
    let unread = crate::run::results::LogCapture::unavailable(&"dial tcp: i/o timeout");
    let p = run(
        &ev,
        &Observed {
            now: at(10 + wait),
            logs: [(EVALUATION_CONTAINER.to_string(), unread)].into(),
            ..with_pods(pods)
        },
    );
    assert_eq!(
        p.status.phase,
        Some(Phase::Succeeded),
        "the result came from the pod"
    );
    let message = p.status.message.clone().unwrap_or_default();
    assert!(
        message.contains("log could not be read") && message.contains("i/o timeout"),
        "{message}"
    );
    assert!(p.holds().is_empty(), "its slot is free");
}

#[test]
fn ttl_removes_an_allowlist_policy_but_not_what_a_suite_shares() {
    let expire = |ev: Evaluation| {
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
        let expired = run(
            &done,
            &Observed {
                now: at(70),
                ..Observed::empty()
            },
        );
        assert_eq!(expired.status.children_removed, Some(true));
        expired.delete
    };
    let ttl = |ev: Evaluation| ev.with_spec(|s| s.ttl_seconds_after_finished = Some(60));
    let child = ttl(Evaluation::test().child_of("s", "a", "uid-a"));
    assert!(
        expire(child).is_empty(),
        "the suite's shared workspace stays"
    );
    let allowlist = ttl(Evaluation::test().with_spec(|s| {
        s.source = None;
        s.sandbox = Some(crate::crd::evaluation::Sandbox {
            network: Some(crate::crd::evaluation::NetworkMode::Allowlist),
            egress: Some(vec![crate::crd::evaluation::EgressRule {
                cidr: "10.88.0.1/32".into(),
                ports: None,
            }]),
            ..Default::default()
        })
    }));
    assert_eq!(
        expire(allowlist),
        [(ChildKind::NetworkPolicy, "arith-sandbox".to_string())]
    );
}

/// A pod resized in place (`pods/resize`) past its admission fails the run and is stopped,
/// even under keepPodOnFailure; the pod as created keeps running.
#[test]
fn a_pod_resized_past_its_admission_is_stopped() {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let ev = Evaluation::test().with_spec(|s| s.keep_pod_on_failure = Some(true));
    let first = run(&ev, &Observed::empty());
    let ev = after(&ev, &first);
    let mut pod = pod_of(&first).clone();
    pod.status = mk_pod("x", "Running", vec![mk_container("evaluation", running())]).status;
    let name = pod.name_any();
    let as_created = run(&ev, &with_pods(vec![pod.clone()]));
    assert_eq!(as_created.status.phase, Some(Phase::Running));
    assert!(as_created.delete.is_empty());
    for container in &mut pod.spec.as_mut().expect("spec").containers {
        let resources = container.resources.as_mut().expect("resources");
        for amounts in [resources.requests.as_mut(), resources.limits.as_mut()] {
            amounts
                .expect("amounts")
                .insert("memory".into(), Quantity("64Gi".into()));
        }
    }
    let p = run(&ev, &with_pods(vec![pod]));
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.status.reason.as_deref(), Some("PodResized"));
    let message = p.status.message.clone().unwrap_or_default();
    assert!(message.contains("memory 68719476736"), "{message}");
    assert_eq!(p.delete, [(ChildKind::Pod, name)]);
}
