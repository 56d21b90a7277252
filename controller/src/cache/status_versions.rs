//! When the lean cache's copy of an Evaluation can stand in for a fresh read. A reconcile
//! must plan from the latest status (the cache may not hold the controller's own last write
//! yet), which used to cost one GET per reconcile: 10,000 queued runs, 10,000 GETs, and a GET
//! before every pod. The cached copy is as good as a fresh read when
//! - it carries the resourceVersion at which this process last knew the whole status (its
//!   own status write, or a fresh read) and that status holds nothing the lean cache drops;
//! - or it has no status at all and this process never wrote one (a new Evaluation).
//!
//! Anything newer than the cached copy (a spec edit) reaches the cache as a watch event and
//! triggers another reconcile, as it would after a GET.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::cache::lean;
use crate::crd::Evaluation;

/// Per Evaluation uid, the resourceVersion at which its whole status is known to equal the
/// cached copy's; `None` once this process wrote or read a status the cache keeps only in
/// part (a log tail, a history).
#[derive(Debug, Default)]
pub struct StatusVersions {
    known: Mutex<HashMap<String, Option<String>>>,
}

impl StatusVersions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `cached` is as good as a fresh read of it.
    pub fn current(&self, cached: &Evaluation) -> bool {
        let Some(uid) = cached.metadata.uid.as_deref() else {
            return false;
        };
        match self.lock().get(uid) {
            Some(known) => known.is_some() && *known == cached.metadata.resource_version,
            None => cached.status.is_none(),
        }
    }

    /// The API server returned `ev` (a read, or the answer to a status write) for Evaluation
    /// `uid`: its status as of its resourceVersion.
    pub fn saw(&self, uid: &str, ev: &Evaluation) {
        let whole = ev.status.as_ref().is_none_or(lean::keeps_whole);
        let version = ev.metadata.resource_version.clone().filter(|_| whole);
        self.lock().insert(uid.to_string(), version);
    }

    /// Evaluation `uid` is gone.
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::evaluation::EvaluationStatus;
    use crate::fixtures::at;

    const UID: &str = "11111111-2222-3333-4444-555555555555";

    fn at_version(mut ev: Evaluation, version: &str) -> Evaluation {
        ev.metadata.resource_version = Some(version.into());
        ev
    }

    #[test]
    fn a_new_evaluation_is_read_from_the_cache_until_its_status_is_written() {
        let versions = StatusVersions::default();
        let new = at_version(Evaluation::test(), "1");
        assert!(versions.current(&new));
        let written = at_version(
            Evaluation::test().with_status(EvaluationStatus {
                message: Some("queued".into()),
                ..Default::default()
            }),
            "2",
        );
        versions.saw(UID, &written);
        assert!(
            !versions.current(&new),
            "the cache has not shown the write yet"
        );
        assert!(versions.current(&written), "now it has");
        let edited = at_version(written.clone(), "3");
        assert!(!versions.current(&edited), "someone else changed it since");
    }

    #[test]
    fn a_status_the_cache_keeps_in_part_is_always_read_fresh() {
        let versions = StatusVersions::default();
        let finished = at_version(
            Evaluation::test().with_status(EvaluationStatus {
                log_tail: Some("last lines".into()),
                completion_time: Some(at(0)),
                ..Default::default()
            }),
            "7",
        );
        versions.saw(UID, &finished);
        let mut cached = finished.clone();
        lean::evaluation(&mut cached);
        assert!(!versions.current(&cached));
        let mut gone = finished;
        gone.status = None;
        assert!(
            !versions.current(&gone),
            "a stale copy without status is not new"
        );
    }

    #[test]
    fn a_status_this_process_never_saw_is_read_fresh() {
        let versions = StatusVersions::default();
        let restored = at_version(
            Evaluation::test().with_status(EvaluationStatus::default()),
            "4",
        );
        assert!(!versions.current(&restored));
        versions.saw(UID, &restored);
        assert!(versions.current(&restored));
        versions.forget("00000000-0000-0000-0000-000000000000");
        versions.forget(UID);
        assert!(!versions.current(&restored));
    }
}
