use super::*;
use crate::crd::evaluation::{EvaluationStatus, Phase};
use crate::fixtures::at;
use crate::lifecycle::suite::plan;
use crate::lifecycle::suite::tests::suite;
use crate::run::state;

/// The suite's eight children, every first run finished.
fn finished_children() -> Vec<Evaluation> {
    plan(&suite(8, 8), &[], &at(0))
        .apply
        .into_iter()
        .map(|mut c| {
            c.status = Some(EvaluationStatus {
                phase: Some(Phase::Succeeded),
                ..Default::default()
            });
            c
        })
        .collect()
}

fn rerun_by_hand(child: &mut Evaluation, value: &str) {
    child
        .annotations_mut()
        .insert(RERUN_ANNOTATION.into(), value.into());
}

fn names(children: &[Evaluation]) -> Vec<String> {
    children.iter().map(ResourceExt::name_any).collect()
}

/// The race CI met: the user re-runs all eight children by hand at once; the first reconcile's
/// cache has seen only the last five annotations and lets three of them start; the next
/// reconcile's cache has all eight annotations but not yet the three go-aheads. Planned from
/// the cache alone it lets three more start (six at once under `parallelism: 3`); with the
/// go-aheads given it lets none.
#[test]
fn a_cache_behind_the_last_go_aheads_starts_no_more_than_parallelism() {
    let s = suite(8, 3);
    let mut kids = finished_children();
    for kid in &mut kids[3..] {
        rerun_by_hand(kid, "x");
    }
    let first = plan(&s, &kids, &at(1));
    assert_eq!(names(&first.apply), ["s-c3", "s-c4", "s-c5"]);
    let given: GoAheads = first.apply.iter().filter_map(go_ahead_of).collect();
    assert_eq!(given.len(), 3);

    for kid in &mut kids[..3] {
        rerun_by_hand(kid, "x");
    }
    assert!(kids.iter().all(|k| state::awaits_suite(k).is_some()));
    let from_cache = plan(&s, &kids, &at(2));
    assert_eq!(
        names(&from_cache.apply),
        ["s-c0", "s-c1", "s-c2"],
        "the cache alone starts three more (the race)"
    );

    let (seen, unseen) = with_given(kids, &given);
    assert_eq!(unseen, given, "the cache shows none of them yet");
    let planned = plan(&s, &seen, &at(2));
    let started: Vec<String> = names(&planned.apply)
        .into_iter()
        .filter(|n| !given.contains_key(n))
        .collect();
    assert!(
        started.is_empty(),
        "three already have the go-ahead: {started:?}"
    );
}

/// A go-ahead is forgotten once the cache shows it, once the child asks for another rerun
/// value, and once the child is gone; until then it is kept.
#[test]
fn go_aheads_are_forgotten_once_seen_superseded_or_gone() {
    let mut kids = finished_children();
    for kid in &mut kids {
        rerun_by_hand(kid, "x");
    }
    let given: GoAheads = ["s-c0", "s-c1", "s-c2", "s-gone"]
        .into_iter()
        .map(|n| (n.to_string(), "x".to_string()))
        .collect();
    kids[0]
        .annotations_mut()
        .insert(GO_AHEAD_ANNOTATION.into(), "x".into());
    rerun_by_hand(&mut kids[1], "y");
    let (seen, unseen) = with_given(kids, &given);
    assert_eq!(unseen.keys().collect::<Vec<_>>(), ["s-c2"]);
    assert_eq!(
        state::awaits_suite(&seen[2]),
        None,
        "s-c2 carries its go-ahead"
    );
    assert!(
        state::awaits_suite(&seen[1]).is_some(),
        "s-c1 asks for y, which no go-ahead answered"
    );
    assert!(
        state::awaits_suite(&seen[3]).is_some(),
        "s-c3 was given none"
    );
}
