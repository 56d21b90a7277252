//! Conditions and fail-closed refusals.

use super::test_support::*;
use super::*;
use crate::crd::conditions::{self, find};
use crate::crd::evaluation::EvaluationResult;
use crate::fixtures::{at, mk_container, mk_pod, running, terminated};

#[test]
fn a_namespace_policy_that_failed_to_apply_keeps_the_run_waiting_without_a_pod() {
    let ev = Evaluation::test();
    let p = run(&ev, &Observed::empty());
    let refusal = Refusal {
        reason: "SandboxUnavailable",
        message: "the namespace's deny-all NetworkPolicy could not be applied: timeout".into(),
        retry: true,
    };
    let p = refused(&ev, p, refusal.clone(), &at(0));
    assert!(p.create.is_empty(), "fail closed: no pod");
    assert_eq!(p.status.phase, Some(Phase::Queued));
    assert_eq!(p.status.pod_name, None);
    assert!(
        !p.in_queue && p.holds().is_empty(),
        "no slot held while waiting"
    );
    let queue_reason = p.status.queue.as_ref().and_then(|q| q.reason.clone());
    assert!(
        queue_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("SandboxUnavailable: ") && r.ends_with("(retrying)")),
        "{queue_reason:?}"
    );
    let admitted = find(&p.status.conditions, conditions::ADMITTED).expect("Admitted");
    assert_eq!(admitted.status, "False");
    assert_eq!(Some(&admitted.message), queue_reason.as_ref());
    assert_eq!(condition(&p, conditions::STALLED).0, "False");
    assert_eq!(p.requeue, Requeue::After(SANDBOX_RETRY));
    assert_eq!(
        p.notes.iter().map(|n| n.reason).collect::<Vec<_>>(),
        ["Queued"]
    );
    // Retried and failing the same way: the same status, no new Event.
    let waiting = after(&ev, &p);
    let again = refused(
        &waiting,
        run(&waiting, &Observed::empty()),
        refusal,
        &at(10),
    );
    assert_eq!(again.status, p.status);
    assert!(again.notes.is_empty(), "{:?}", again.notes);
}

#[test]
fn refused_policy_fails_closed_without_a_pod() {
    let ev = Evaluation::test();
    let p = run(&ev, &Observed::empty());
    let refusal = Refusal {
        reason: "SandboxUnavailable",
        message: "NetworkPolicy refused: forbidden".into(),
        retry: false,
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
    let queued = run_with(
        &Evaluation::test(),
        &Observed::empty(),
        &wait(1, "QuotaExceeded"),
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

/// kstatus (Argo CD, Flux): Reconciling while in progress, Ready when finished and passed,
/// Stalled when finished otherwise; never two of them True; observedGeneration everywhere.
#[test]
fn every_phase_obeys_the_kstatus_rules() {
    let (ev, name) = started();
    let ev = ev.at_generation(3);
    let pod = |phase: &str, state| mk_pod(&name, phase, vec![mk_container("evaluation", state)]);
    let queued = wait(2, "QuotaExceeded");
    let cases: Vec<(&str, Plan)> = vec![
        (
            "Queued",
            run_with(
                &Evaluation::test().at_generation(3),
                &Observed::empty(),
                &queued,
            ),
        ),
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
fn a_run_that_ended_while_queued_was_never_admitted() {
    let ev = Evaluation::test().with_spec(|s| s.queue_timeout = Some("1s".into()));
    let queued = run_with(
        &ev,
        &Observed::empty(),
        &wait(3, "QuotaExceeded: maxRunning 1 reached"),
    );
    let timed_out = run_with(
        &ev.clone().with_status(queued.status),
        &Observed {
            now: crate::fixtures::at(60),
            ..Observed::empty()
        },
        &wait(3, "QuotaExceeded: maxRunning 1 reached"),
    );
    assert_eq!(timed_out.status.reason.as_deref(), Some("QueueTimeout"));
    assert_eq!(
        condition(&timed_out, conditions::ADMITTED),
        ("False".into(), "QueueTimeout".into())
    );
}
