//! Queued runs, the emergency stop, queueTimeout, who asks for admission.

use super::test_support::*;
use super::*;
use crate::crd::conditions::{self};
use crate::fixtures::{at, mk_container, mk_pod, running};

#[test]
fn queued_runs_wait_without_children() {
    let queued = wait(4, "QuotaExceeded: maxRunning 5 reached");
    let p = run_with(&Evaluation::test(), &Observed::empty(), &queued);
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
    let full = wait(1, "QuotaExceeded: maxRunning 1 reached");
    let queued = after(&ev, &run_with(&ev, &Observed::empty(), &full));
    let since = queued
        .status
        .as_ref()
        .and_then(|s| s.queue.as_ref())
        .and_then(|q| q.since.clone());
    assert_eq!(since, Some(at(0)));
    let still = run_with(
        &queued,
        &Observed {
            now: at(30),
            ..Observed::empty()
        },
        &full,
    );
    assert_eq!(still.status.phase, Some(Phase::Queued));
    assert_eq!(
        still.status.queue.and_then(|q| q.since),
        Some(at(0)),
        "the wait keeps its start"
    );
    let late = run_with(
        &queued,
        &Observed {
            now: at(61),
            ..Observed::empty()
        },
        &full,
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
