//! When the lean cache's copy of an Evaluation can stand in for a fresh read. A reconcile
//! must plan from the latest status (the cache may not hold the controller's own last write
//! yet, and it keeps a status only in part: no conditions, log tail or history), so a status
//! is always read fresh. A new Evaluation has no status to miss: its cached copy is as good as
//! a read unless this process has seen a status of it (its own write, or a read) that the
//! cache does not show yet. That saves the GET before the first decision of every run: 10,000
//! queued runs, 10,000 GETs fewer; one fewer before each first pod.
//!
//! Anything newer than the cached copy (a spec edit) reaches the cache as a watch event and
//! triggers another reconcile, as it would after a GET.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::crd::Evaluation;

/// The uids of the Evaluations this process has seen a status of.
#[derive(Debug, Default)]
pub struct SeenStatuses {
    seen: Mutex<HashSet<String>>,
}

impl SeenStatuses {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `cached` is as good as a fresh read of it.
    pub fn current(&self, cached: &Evaluation) -> bool {
        let Some(uid) = cached.metadata.uid.as_deref() else {
            return false;
        };
        cached.status.is_none() && !self.lock().contains(uid)
    }

    /// The API server returned a status of Evaluation `uid` (a read, or the answer to a
    /// status write).
    pub fn saw(&self, uid: &str) {
        self.lock().insert(uid.to_string());
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

    const UID: &str = "11111111-2222-3333-4444-555555555555";

    #[test]
    fn a_new_evaluation_is_read_from_the_cache_until_its_status_is_written() {
        let seen = SeenStatuses::default();
        let new = Evaluation::test();
        assert!(seen.current(&new));
        let written = Evaluation::test().with_status(EvaluationStatus {
            message: Some("queued".into()),
            ..Default::default()
        });
        seen.saw(UID);
        assert!(!seen.current(&new), "the cache has not shown the write yet");
        assert!(!seen.current(&written), "a status is always read fresh");
        assert!(!seen.current(&new), "a status once seen stays seen");
    }

    #[test]
    fn a_status_this_process_never_saw_is_read_fresh_and_forgetting_resets() {
        let seen = SeenStatuses::default();
        let restored = Evaluation::test().with_status(EvaluationStatus::default());
        assert!(!seen.current(&restored));
        seen.saw(UID);
        seen.forget("00000000-0000-0000-0000-000000000000");
        assert!(!seen.current(&Evaluation::test()));
        seen.forget(UID);
        assert!(seen.current(&Evaluation::test()));
    }
}
