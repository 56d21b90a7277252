//! Which run of an Evaluation is current, and what it still needs: questions `observe`,
//! `reconcile`, admission and the planner all ask. Pure.

use kube::Resource;

use crate::crd::EvaluationSuite;
use crate::crd::evaluation::{Evaluation, EvaluationStatus, Phase, Source};
use crate::labels::{GO_AHEAD_ANNOTATION, RERUN_ANNOTATION};
use crate::ownership;
use crate::run::identity::RunKey;

/// The name of the suite whose go-ahead `ev`'s requested run waits for: `ev` is controlled by
/// an EvaluationSuite (its controller ownerReference; a label proves nothing), its
/// `crucible.dev/rerun` is not the value that suite let start (`crucible.dev/go-ahead`), so it
/// was re-run by hand and starts only when the suite's `parallelism` has room, and that run has
/// not started (a child written before go-ahead existed goes on).
pub fn awaits_suite(ev: &Evaluation) -> Option<&str> {
    let suite = ownership::controller::<EvaluationSuite>(ev.meta())?;
    let annotation = |key: &str| ev.meta().annotations.as_ref()?.get(key);
    if annotation(RERUN_ANNOTATION) == annotation(GO_AHEAD_ANNOTATION) {
        return None;
    }
    let started = ev.status.as_ref().is_some_and(|s| {
        is_current_run(s, &RunKey::of(ev)) && !matches!(s.phase, None | Some(Phase::Queued))
    });
    (!started).then_some(suite.name.as_str())
}

/// Whether the status belongs to the run `key` names.
pub fn is_current_run(status: &EvaluationStatus, key: &RunKey) -> bool {
    status.phase.is_some()
        && status
            .provenance
            .as_ref()
            .and_then(|p| p.spec_hash.as_ref())
            == Some(&key.spec_hash)
        && status.rerun == key.rerun
}

/// Whether a followed branch has moved past the run's commit (a new run is due).
pub fn head_moved(status: &EvaluationStatus, head: Option<&str>) -> bool {
    let commit = status.provenance.as_ref().and_then(|p| p.commit.as_deref());
    matches!((head, commit), (Some(h), Some(c)) if h != c)
}

/// Whether `ev` follows its git ref (`source.git.follow: true`).
pub fn follows(ev: &Evaluation) -> bool {
    matches!(&ev.spec.source, Some(Source::Git(g)) if g.follow == Some(true))
}

/// Whether `ev`'s current run has finished: nothing will start, so no sandbox lookup is needed.
pub fn run_is_over(ev: &Evaluation) -> bool {
    ev.status.as_ref().is_some_and(|s| {
        is_current_run(s, &RunKey::of(ev)) && s.phase.is_some_and(Phase::is_finished)
    })
}

/// Whether `ev`'s run still needs an admission decision: a new run (also when a followed
/// branch moved to `head`), or one still queued.
pub fn awaits_admission(ev: &Evaluation, head: Option<&str>) -> bool {
    match &ev.status {
        Some(s) if is_current_run(s, &RunKey::of(ev)) && !head_moved(s, head) => {
            matches!(s.phase, None | Some(Phase::Queued))
        }
        _ => true,
    }
}

/// Whether `reconcile` asks the admission gate for `ev`: while its run awaits admission, and
/// while it is Pending or Running, since a lost attempt may start another (admitted again at
/// once while the run holds its admission, queued when it does not).
pub fn asks_admission(ev: &Evaluation, head: Option<&str>) -> bool {
    awaits_admission(ev, head) || !run_is_over(ev)
}

/// The id of the run `ev` asks to start (or runs): what its admission is held by and its pods
/// are labelled with. The current run keeps the id in its status; a new run's id comes from
/// the Evaluation's generation (and the new head of a followed branch).
pub fn admission_run_id(ev: &Evaluation, head: Option<&str>) -> String {
    let key = RunKey::of(ev);
    let uid = ev.meta().uid.as_deref().unwrap_or_default();
    let current = ev
        .status
        .as_ref()
        .filter(|s| is_current_run(s, &key) && !head_moved(s, head));
    match current {
        Some(status) => status
            .run_id
            .clone()
            // Statuses written before run ids existed.
            .unwrap_or_else(|| key.run_id(uid, status.run_generation, None)),
        None => key.run_id(uid, ev.meta().generation, head),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::SUITE_LABEL;

    /// Only a suite that controls the child (its controller ownerReference) holds a re-run by
    /// hand; a label naming a suite holds nothing.
    #[test]
    fn a_child_rerun_by_hand_awaits_only_the_suite_that_controls_it() {
        let mut ev = Evaluation::test();
        ev.metadata.annotations = Some([(RERUN_ANNOTATION.into(), "x".into())].into());
        ev.metadata.labels = Some([(SUITE_LABEL.into(), "wide".into())].into());
        assert_eq!(awaits_suite(&ev), None, "a label proves nothing");
        let mut ev = crate::fixtures::suite_child(ev, "wide");
        assert_eq!(awaits_suite(&ev), Some("wide"));
        // Its run started already (written before go-ahead existed): it goes on.
        ev.status = Some(EvaluationStatus {
            phase: Some(Phase::Running),
            rerun: Some("x".into()),
            provenance: Some(crate::crd::evaluation::Provenance {
                spec_hash: Some(RunKey::of(&ev).spec_hash),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(awaits_suite(&ev), None);
        ev.status = None;
        ev.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(GO_AHEAD_ANNOTATION.into(), "x".into());
        assert_eq!(awaits_suite(&ev), None, "the suite let it start");
    }
}
