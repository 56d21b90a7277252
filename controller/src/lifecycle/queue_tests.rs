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
    assert_eq!(p.requeue, Requeue::AwaitChange);
    assert_eq!(p.notes[0].reason, "Queued");
}

#[test]
fn a_queued_run_shows_why_in_its_reason_until_admitted() {
    let ev = Evaluation::test();
    let queued = run_with(
        &ev,
        &Observed::empty(),
        &wait(4, "QuotaExceeded: maxRunning 5 reached"),
    );
    // The Reason column reads status.reason; the sentence stays in queue.reason.
    assert_eq!(queued.status.reason.as_deref(), Some("QuotaExceeded"));
    assert_eq!(
        queued
            .status
            .queue
            .as_ref()
            .and_then(|q| q.reason.as_deref()),
        Some("QuotaExceeded: maxRunning 5 reached")
    );
    let admitted = run(&after(&ev, &queued), &Observed::empty());
    assert_eq!(admitted.status.phase, Some(Phase::Pending));
    assert_eq!(admitted.status.reason, None);
}

#[test]
fn a_queued_reason_is_the_code_opening_its_sentence() {
    assert_eq!(
        queued_reason("Paused: the namespace's EvaluationQuota is paused"),
        "Paused"
    );
    assert_eq!(queued_reason("no code here: just words"), "Queued");
    assert_eq!(queued_reason("no colon"), "Queued");
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

/// The pod the plan asked for, as the API server would list it a moment later.
fn created(plan: &Plan, phase: &str) -> Pod {
    let mut pod = pod_of(plan).clone();
    pod.status = mk_pod("x", phase, vec![]).status;
    pod
}

#[test]
fn a_spec_change_is_a_new_run_that_asks_while_the_old_pod_still_holds_its_share() {
    let ev = Evaluation::test().at_generation(1);
    let first = run(&ev, &Observed::empty());
    let old_run = first.status.run_id.clone().expect("run id");
    assert_eq!(first.holds(), BTreeSet::from([old_run.clone()]));
    let old_pod = created(&first, "Running");
    assert_eq!(
        old_pod.labels().get(crate::labels::RUN_ID_LABEL),
        Some(&old_run),
        "the pod carries its run"
    );
    let changed = after(&ev, &first)
        .with_spec(|s| s.args = Some(vec!["--harder".into()]))
        .at_generation(2);
    let new_run = admission_run_id(&changed, None);
    assert_ne!(new_run, old_run, "a spec change is a new run");
    assert!(awaits_admission(&changed, None), "and asks the gate");
    let queued = run_with(
        &changed,
        &with_pods(vec![old_pod.clone()]),
        &wait(1, "QuotaExceeded: maxRunning 1 reached"),
    );
    assert_eq!(queued.status.phase, Some(Phase::Queued));
    assert!(queued.in_queue);
    assert!(queued.create.is_empty(), "no pod before admission");
    assert_eq!(
        queued.holds(),
        BTreeSet::from([old_run.clone()]),
        "the superseded pod holds its share until it is gone"
    );
    // The old pod is being deleted on a lost node: it stops counting past its deadline, and
    // the plan looks again then without waiting for an event.
    let mut stuck = old_pod;
    stuck.metadata.deletion_timestamp = Some(at(100));
    let later = run_with(
        &after(&changed, &queued),
        &Observed {
            now: at(110),
            ..with_pods(vec![stuck.clone()])
        },
        &wait(1, "QuotaExceeded: maxRunning 1 reached"),
    );
    assert_eq!(later.holds(), BTreeSet::from([old_run.clone()]));
    // Looked at again when the stuck pod stops holding its share (30 s after its deletion).
    assert_eq!(later.requeue, Requeue::After(Duration::from_secs(21)));
    let overdue = run_with(
        &after(&changed, &queued),
        &Observed {
            now: at(131),
            ..with_pods(vec![stuck])
        },
        &Decision::Admit,
    );
    assert_eq!(overdue.holds(), BTreeSet::from([new_run]));
    assert_eq!(overdue.status.phase, Some(Phase::Pending));
    assert_eq!(
        queue_wait(&after(&changed, &queued), &overdue, &at(131)),
        Some(Duration::from_secs(131)),
        "queued at 0, started at 131"
    );
    assert_eq!(queue_wait(&changed, &queued, &at(0)), None);
}

#[test]
fn a_source_that_cannot_be_read_after_admission_gives_up_its_queue_place() {
    let ev = Evaluation::test().with_spec(|s| {
        s.source = Some(crate::crd::evaluation::Source::Git(
            crate::crd::evaluation::GitSource {
                url: "https://git.example/evals".into(),
                ..Default::default()
            },
        ))
    });
    let obs = Observed {
        source: Some(Err(SourceProblem {
            reason: "SourceUnreachable",
            message: "cannot resolve git.example".into(),
            transient: true,
        })),
        ..Observed::empty()
    };
    let p = run(&ev, &obs);
    assert_eq!(p.status.phase, Some(Phase::Queued));
    assert!(!p.in_queue, "it must not hold up the runs behind it");
}

#[test]
fn evaluations_with_the_same_spec_are_different_runs() {
    let a = Evaluation::test();
    let mut b = Evaluation::test();
    b.metadata.name = Some("twin".into());
    b.metadata.uid = Some("uid-twin".into());
    assert_eq!(a.spec, b.spec);
    assert_ne!(admission_run_id(&a, None), admission_run_id(&b, None));
}
