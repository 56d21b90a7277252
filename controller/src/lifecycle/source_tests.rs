//! Git sources: pinning, source problems, follow.

use super::test_support::*;
use super::*;
use crate::crd::conditions::{self};

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

#[test]
fn a_source_still_being_fetched_waits_for_the_fetch_not_for_a_timer() {
    let ev = git_ev(false);
    let p = run(
        &ev,
        &Observed {
            source: Some(Err(SourceProblem::pending(
                "fetching https://git.example/r".into(),
            ))),
            ..Observed::empty()
        },
    );
    assert!(p.create.is_empty());
    assert_eq!(p.status.phase, Some(Phase::Queued));
    let reason = p.status.queue.and_then(|q| q.reason).unwrap_or_default();
    assert_eq!(reason, "FetchingSource: fetching https://git.example/r");
    // Out of the admission queue, and the fetch's end (not a clock) brings it back.
    assert!(!p.in_queue);
    assert_eq!(p.requeue, Requeue::AwaitChange);
}

#[test]
fn a_started_run_reads_its_source_only_when_its_pod_is_gone_or_failed() {
    let ev = git_ev(false);
    let p = run(
        &ev,
        &Observed {
            source: fetched("aaaa"),
            ..Observed::empty()
        },
    );
    let started = after(&ev, &p);
    let mut pod = pod_of(&p).clone();
    assert!(!started_run_needs_source(&started, &[pod.clone()]));
    assert!(started_run_needs_source(&started, &[]));
    pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Failed".into()),
        ..Default::default()
    });
    assert!(started_run_needs_source(&started, &[pod]));
}
