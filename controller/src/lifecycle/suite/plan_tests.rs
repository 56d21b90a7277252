use super::*;
use crate::crd::evaluation::{EvaluationResult, EvaluationStatus};
use crate::crd::suite::{EvaluationSuiteSpec, SuiteCase};
use crate::fixtures::at;
use crate::labels::{GO_AHEAD_ANNOTATION, RERUN_ANNOTATION};

fn suite(cases: usize, parallelism: i32) -> EvaluationSuite {
    let mut s = EvaluationSuite::new(
        "s",
        EvaluationSuiteSpec {
            template: Evaluation::test().spec,
            cases: (0..cases)
                .map(|i| SuiteCase {
                    name: format!("c{i}"),
                    ..Default::default()
                })
                .collect(),
            parallelism: Some(parallelism),
            ..Default::default()
        },
    );
    s.metadata.namespace = Some("team-a".into());
    s.metadata.uid = Some("suite-uid".into());
    s.metadata.generation = Some(1);
    s
}

/// The children a plan applied, as the API server would return them, with `phase` and
/// `passed` in status.
fn children(planned: &SuitePlan, outcome: Option<(Phase, bool)>) -> Vec<Evaluation> {
    planned
        .apply
        .iter()
        .cloned()
        .map(|mut c| {
            c.status = Some(EvaluationStatus {
                // The child's controller answered the rerun value it carries.
                rerun: rerun_of(&c).cloned(),
                phase: Some(outcome.map_or(Phase::Running, |o| o.0)),
                result: outcome.map(|(_, passed)| EvaluationResult {
                    score: if passed { 1.0 } else { 0.0 },
                    passed,
                    ..Default::default()
                }),
                ..Default::default()
            });
            c
        })
        .collect()
}

fn names(planned: &SuitePlan) -> Vec<String> {
    planned.apply.iter().map(|c| c.name_any()).collect()
}

#[test]
fn parallelism_bounds_the_unfinished_children() {
    let s = suite(10, 3);
    let first = plan(&s, &[], &at(0));
    assert_eq!(names(&first), ["s-c0", "s-c1", "s-c2"]);
    assert_eq!((first.status.total, first.status.queued), (10, 10));
    let running = children(&first, None);
    assert!(
        plan(&s, &running, &at(1)).apply.is_empty(),
        "three unfinished: no room"
    );
    let mut one_done = running.clone();
    one_done[0] = children(
        &SuitePlan {
            apply: vec![first.apply[0].clone()],
            ..first.clone()
        },
        Some((Phase::Succeeded, true)),
    )[0]
    .clone();
    let next = plan(&s, &one_done, &at(2));
    assert_eq!(names(&next), ["s-c3"]);
    assert_eq!(next.status.running, 2);
    assert_eq!(next.status.succeeded, 1);
}

#[test]
fn children_are_owned_labelled_and_carry_the_merged_spec() {
    let s = suite(1, 1);
    let child = &plan(&s, &[], &at(0)).apply[0];
    assert_eq!(
        child.labels().get(SUITE_LABEL).map(String::as_str),
        Some("s")
    );
    let owner = &child.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("EvaluationSuite", "suite-uid", Some(true))
    );
    assert_eq!(child.spec, s.spec.template);
    assert_eq!(child.namespace().as_deref(), Some("team-a"));
}

#[test]
fn every_case_finished_gives_the_pass_rate_and_phase() {
    let mut s = suite(4, 4);
    let first = plan(&s, &[], &at(0));
    let mut done = children(&first, Some((Phase::Succeeded, true)));
    done[3] = children(&first, Some((Phase::Failed, false)))[3].clone();
    s.spec.pass_threshold = Some(0.75);
    let p = plan(&s, &done, &at(5));
    assert_eq!(p.status.phase, Some(SuitePhase::Succeeded));
    assert_eq!(p.status.pass_rate, Some(0.75));
    assert_eq!(p.status.mean_score, Some(0.75));
    // Scores 1, 1, 1, 0: sd 0.5, stderr 0.25, t(0.975, 3) = 3.182446: half-width 0.795612.
    let ci95 = p.status.ci95.expect("an interval over the cases");
    assert!((ci95.low - (0.75 - 0.795612)).abs() < 1e-6, "{ci95:?}");
    assert!((ci95.high - (0.75 + 0.795612)).abs() < 1e-6, "{ci95:?}");
    assert_eq!(p.status.shown_mean_score.as_deref(), Some("0.75 ±0.796"));
    assert_eq!(p.status.shown_pass_rate.as_deref(), Some("0.75"));
    assert_eq!((p.status.succeeded, p.status.failed), (3, 1));
    let ready = conditions::find(&p.status.conditions, conditions::READY).expect("Ready");
    assert_eq!(ready.status, "True");
    s.spec.pass_threshold = Some(0.8);
    let p = plan(&s, &done, &at(5));
    assert_eq!(p.status.phase, Some(SuitePhase::Failed));
    let stalled = conditions::find(&p.status.conditions, conditions::STALLED).expect("Stalled");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", conditions::NOT_PASSED)
    );
}

#[test]
fn the_pass_rate_is_empty_until_a_case_finished() {
    let s = suite(3, 3);
    let first = plan(&s, &[], &at(0));
    let running = plan(&s, &children(&first, None), &at(1));
    assert_eq!(running.status.pass_rate, None);
    assert_eq!(running.status.shown_pass_rate, None);
    let mut one_done = children(&first, None);
    one_done[0] = children(&first, Some((Phase::Failed, false)))[0].clone();
    let p = plan(&s, &one_done, &at(2));
    assert_eq!(p.status.pass_rate, Some(0.0));
    assert_eq!(p.status.shown_pass_rate.as_deref(), Some("0"));
}

#[test]
fn a_rerun_suite_reruns_its_cases_under_its_parallelism() {
    let all_at_once = suite(5, 5);
    let done = children(
        &plan(&all_at_once, &[], &at(0)),
        Some((Phase::Succeeded, true)),
    );
    let mut s = suite(5, 2);
    let unchanged = plan(&s, &done, &at(1));
    assert!(unchanged.apply.is_empty(), "no rerun asked: nothing to do");
    s.metadata.annotations = Some([(RERUN_ANNOTATION.to_string(), "1".to_string())].into());
    let first = plan(&s, &done, &at(2));
    assert_eq!(names(&first), ["s-c0", "s-c1"], "two at a time");
    assert!(
        first
            .apply
            .iter()
            .all(|c| rerun_of(c) == Some(&"1".to_string()))
    );
    assert_eq!(
        first.status.succeeded, 0,
        "the old results are not this run's"
    );
    // As the API server returns them: the new annotation, the old run's status.
    let mut applied = done.clone();
    for (i, child) in first.apply.iter().enumerate() {
        applied[i].metadata.annotations = child.metadata.annotations.clone();
    }
    let waiting = plan(&s, &applied, &at(3));
    assert!(
        waiting.apply.is_empty(),
        "the re-run children hold their slots until their new run ends"
    );
    let mut rerun_done = applied.clone();
    for child in rerun_done.iter_mut().take(2) {
        child.status.as_mut().expect("status").rerun = Some("1".into());
    }
    let next = plan(&s, &rerun_done, &at(4));
    assert_eq!(names(&next), ["s-c2", "s-c3"]);
    assert_eq!(next.status.succeeded, 2);
}

/// `child` as the API server returns it after the user's `kubectl annotate ... rerun=<value>`.
fn rerun_by_hand(child: &Evaluation, value: &str) -> Evaluation {
    let mut asked = child.clone();
    asked
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(RERUN_ANNOTATION.into(), value.into());
    asked
}

/// Plays the suite's children after a plan: an applied child takes the plan's annotations and
/// spec; one the suite let start runs (its controller answers the rerun value it carries).
fn take(kids: &mut [Evaluation], planned: &SuitePlan) {
    for applied in &planned.apply {
        let kid = kids
            .iter_mut()
            .find(|k| k.name_any() == applied.name_any())
            .expect("an existing child");
        kid.metadata.annotations = applied.metadata.annotations.clone();
        kid.spec = applied.spec.clone();
        assert_eq!(state::awaits_suite(kid), None, "applied to let it run");
        kid.status = Some(EvaluationStatus {
            rerun: rerun_of(kid).cloned(),
            phase: Some(Phase::Running),
            ..Default::default()
        });
    }
}

/// Eight children re-run by hand under `parallelism: 3`: each waits for the suite's go-ahead
/// (its controller holds it), the suite lets three start, and one more each time one ends;
/// never more than three run, and every one runs once.
#[test]
fn children_rerun_by_hand_start_only_as_the_suites_parallelism_allows() {
    let s = suite(8, 3);
    let done = children(
        &plan(&suite(8, 8), &[], &at(0)),
        Some((Phase::Succeeded, true)),
    );
    let mut kids: Vec<Evaluation> = done.iter().map(|c| rerun_by_hand(c, "x")).collect();
    assert!(
        kids.iter().all(|k| state::awaits_suite(k) == Some("s")),
        "a child re-run by hand waits for its suite"
    );
    let first = plan(&s, &kids, &at(1));
    assert_eq!(names(&first), ["s-c0", "s-c1", "s-c2"]);
    assert!(first.apply.iter().all(|c| {
        annotation(c, GO_AHEAD_ANNOTATION) == Some(&"x".to_string())
            && rerun_of(c) == Some(&"x".to_string())
    }));
    assert_eq!(
        (first.status.succeeded, first.status.queued),
        (0, 8),
        "the old results are not the re-runs'"
    );
    let mut planned = first;
    for step in 2..20 {
        take(&mut kids, &planned);
        let running = kids
            .iter()
            .filter(|k| k.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running))
            .count();
        assert!(running <= 3, "{running} running at step {step}");
        // The first running child ends.
        if let Some(kid) = kids
            .iter_mut()
            .find(|k| k.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running))
        {
            let status = kid.status.as_mut().expect("status");
            status.phase = Some(Phase::Succeeded);
            status.result = Some(EvaluationResult {
                score: 1.0,
                passed: true,
                ..Default::default()
            });
        }
        planned = plan(&s, &kids, &at(step));
        assert!(planned.apply.len() <= 1, "one ended, one starts");
    }
    assert!(
        kids.iter()
            .all(|k| finished(k) && rerun_of(k) == Some(&"x".to_string())),
        "every child ran its re-run"
    );
    assert_eq!(planned.status.succeeded, 8);
}

/// After the suite's own re-run, a child re-run by hand keeps the user's value: the suite lets
/// it start and does not re-run it again for its own value afterwards.
#[test]
fn a_rerun_by_hand_after_the_suites_rerun_is_not_undone() {
    let mut s = suite(2, 2);
    s.metadata.annotations = Some([(RERUN_ANNOTATION.to_string(), "1".to_string())].into());
    let mut kids = children(&plan(&s, &[], &at(0)), Some((Phase::Succeeded, true)));
    assert!(plan(&s, &kids, &at(1)).apply.is_empty(), "both answered 1");
    kids[0] = rerun_by_hand(&kids[0], "x");
    let granted = plan(&s, &kids, &at(2));
    assert_eq!(names(&granted), ["s-c0"]);
    assert_eq!(rerun_of(&granted.apply[0]), Some(&"x".to_string()));
    take(&mut kids, &granted);
    kids[0].status.as_mut().expect("status").phase = Some(Phase::Succeeded);
    assert!(
        plan(&s, &kids, &at(3)).apply.is_empty(),
        "the suite's 1 was answered already"
    );
}

#[test]
fn max_failures_stops_new_cases_and_fails_the_suite() {
    let mut s = suite(6, 2);
    s.spec.max_failures = Some(2);
    let first = plan(&s, &[], &at(0));
    let failed = children(&first, Some((Phase::Failed, false)));
    let p = plan(&s, &failed, &at(1));
    assert!(p.apply.is_empty(), "no new case after two failures");
    assert_eq!(p.status.phase, Some(SuitePhase::Failed));
    let stalled = conditions::find(&p.status.conditions, conditions::STALLED).expect("Stalled");
    assert_eq!(stalled.reason, "MaxFailuresReached");
}

#[test]
fn a_spec_change_reruns_exactly_the_cases_it_changes() {
    let mut s = suite(3, 3);
    let first = plan(&s, &[], &at(0));
    let done = children(&first, Some((Phase::Succeeded, true)));
    assert!(
        plan(&s, &done, &at(1)).apply.is_empty(),
        "nothing changed: nothing applied"
    );
    s.spec.cases[1]
        .overrides
        .insert("args".into(), serde_json::json!(["--harder"]));
    let p = plan(&s, &done, &at(2));
    assert_eq!(names(&p), ["s-c1"]);
    assert_eq!(
        p.status.queued, 1,
        "the changed case waits for its new result"
    );
    // A template change touches every case.
    s.spec.template.timeout = Some("5m".into());
    assert_eq!(plan(&s, &done, &at(3)).apply.len(), 3);
}

#[test]
fn cancel_cancels_unfinished_children_only() {
    let mut s = suite(3, 3);
    let first = plan(&s, &[], &at(0));
    let mut kids = children(&first, None);
    kids[0] = children(&first, Some((Phase::Succeeded, true)))[0].clone();
    s.spec.cancel = Some(true);
    let p = plan(&s, &kids, &at(1));
    assert_eq!(names(&p), ["s-c1", "s-c2"]);
    assert!(p.apply.iter().all(|c| c.spec.cancel == Some(true)));
    assert_eq!(p.status.phase, Some(SuitePhase::Cancelled));
}

#[test]
fn removed_cases_are_deleted_and_rows_are_bounded() {
    let s = suite(2, 2);
    let first = plan(&s, &[], &at(0));
    let kids = children(&first, None);
    let fewer = suite(1, 2);
    assert_eq!(plan(&fewer, &kids, &at(1)).delete, ["s-c1"]);
    let big = suite(250, 1);
    let p = plan(&big, &[], &at(0));
    assert_eq!(p.status.cases.len(), MAX_CASE_ROWS);
    assert_eq!(p.status.cases_omitted, Some(50));
    assert_eq!(p.status.total, 250);
}

#[test]
fn an_invalid_suite_creates_nothing() {
    let s = suite(0, 1);
    let p = plan(&s, &[], &at(0));
    assert!(p.apply.is_empty());
    assert_eq!(p.status.phase, Some(SuitePhase::Failed));
    assert!(
        p.status
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("InvalidSpec"))
    );
}

/// A suite refused before any child exists: Failed, `Stalled=True, reason=InvalidSpec`
/// naming `expected`, nothing applied or deleted.
fn assert_refused(s: &EvaluationSuite, expected: &str) {
    let p = plan(s, &[], &at(0));
    assert!(p.apply.is_empty() && p.delete.is_empty());
    assert_eq!(p.status.phase, Some(SuitePhase::Failed));
    let stalled = conditions::find(&p.status.conditions, conditions::STALLED).expect("Stalled");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert!(stalled.message.contains(expected), "{}", stalled.message);
}

#[test]
fn a_matrix_bomb_is_invalid_and_creates_nothing() {
    let mut s = suite(0, 4);
    s.spec.matrix = (0..30)
        .map(|k| (format!("k{k}"), vec!["a".to_string(), "b".to_string()]))
        .collect();
    assert_refused(&s, "1073741824 cases, at most 5000");
}

#[test]
fn a_suite_name_too_long_for_the_label_is_invalid_and_creates_nothing() {
    let mut s = suite(2, 4);
    s.metadata.name = Some("s".repeat(64));
    assert_refused(&s, "at most 63 characters");
    s.metadata.name = Some("s".repeat(63));
    let p = plan(&s, &[], &at(0));
    assert_eq!(p.apply.len(), 2);
    assert!(p.apply.iter().all(|c| c.name_any().len() <= 63 + 1 + 40));
}

#[test]
fn an_invalid_suite_warns_once_per_problem() {
    let s = suite(0, 1);
    let first = plan(&s, &[], &at(0));
    assert_eq!(
        first.notes.iter().map(|n| n.reason).collect::<Vec<_>>(),
        ["InvalidSpec"]
    );
    assert_eq!(first.notes[0].severity, Severity::Warning);
    let mut again = s.clone();
    again.status = Some(first.status);
    assert!(plan(&again, &[], &at(5)).notes.is_empty(), "no Event storm");
}

#[test]
fn an_existing_evaluation_of_a_childs_name_is_reported_not_taken_over() {
    let s = suite(2, 4);
    let p = plan(&s, &[], &at(0));
    assert!(p.notes.is_empty());
    let taken = vec![p.apply[0].name_any()];
    let p = with_name_conflicts(&s, p, &taken);
    let message = p.status.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("NameConflict: Evaluation s-c0 already exists"),
        "{message}"
    );
    assert_eq!(p.notes.len(), 1);
    assert_eq!(p.notes[0].reason, "NameConflict");
}

#[test]
fn after_a_spec_change_the_suite_keeps_exactly_the_workspaces_its_cases_use() {
    use crate::admission::Decision;
    use crate::config::Config;
    use crate::lifecycle::{Child, Observed};
    let mut s = suite(3, 3);
    s.spec.cases[2].overrides = serde_json::json!({
        "source": {"inline": {"files": {"eval.py": "print(2)"}}}
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    let first = plan(&s, &[], &at(0));
    assert_eq!(
        first.keep_sources, None,
        "a new suite has nothing to remove"
    );
    s.status = Some(first.status.clone());
    assert_eq!(plan(&s, &[], &at(1)).keep_sources, None, "no spec change");
    s.metadata.generation = Some(2);
    let keep = plan(&s, &[], &at(2))
        .keep_sources
        .expect("after a spec change");
    // The names the Evaluation controller gives the children's workspaces.
    let used: BTreeSet<String> = first
        .apply
        .iter()
        .filter_map(|child| {
            let mut child = child.clone();
            child.metadata.uid = Some(format!("uid-{}", child.name_any()));
            let p = crate::lifecycle::plan(
                &child,
                &Observed::empty(),
                &Decision::Admit,
                &Config::default(),
            )
            .expect("plan");
            p.create.into_iter().find_map(|c| match c {
                Child::ConfigMap(cm) => cm.metadata.name,
                _ => None,
            })
        })
        .collect();
    assert_eq!(
        used.len(),
        2,
        "two cases share the template's files: {used:?}"
    );
    assert_eq!(keep, used);
}
