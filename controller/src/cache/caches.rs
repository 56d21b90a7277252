//! The caches of the watched objects both controllers read, fed by the watches (`watches.rs`).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::cache::expectations::Expectations;
use crate::cache::seen_statuses::SeenStatuses;
use crate::cache::waiters::Waiters;
use crate::cache::{Indexed, key_of};
use crate::crd::evaluation::Phase;
use crate::crd::{Evaluation, EvaluationSuite};
use crate::labels::SUITE_LABEL;
use crate::ownership;
use crate::runner::Key;

/// The caches of the watched objects.
pub struct Caches {
    /// Evaluations (lean), indexed by suite (`namespace/suite`).
    pub evaluations: Indexed<Evaluation>,
    /// EvaluationSuites.
    pub suites: Indexed<EvaluationSuite>,
    /// Sandbox pods (lean), indexed by their controlling Evaluation ([`ownership::pod_index`]).
    pub pods: Indexed<Pod>,
    /// Pods created that the pod cache has not shown yet.
    pub expected: Expectations,
    /// When a cached Evaluation is as good as a fresh read.
    pub statuses: SeenStatuses,
    /// Runs waiting for a ModelEndpoint to become Ready.
    pub waiters: Waiters,
}

impl Caches {
    /// Empty caches fed by `scopes` watchers each.
    pub fn new(scopes: usize) -> Self {
        Caches {
            evaluations: Indexed::new(scopes, suite_of),
            suites: Indexed::new(scopes, |_| None),
            pods: Indexed::new(scopes, ownership::pod_index),
            expected: Expectations::default(),
            statuses: SeenStatuses::default(),
            waiters: Waiters::default(),
        }
    }

    /// Whether every cache has listed once in every scope.
    pub fn is_ready(&self) -> bool {
        self.evaluations.is_ready() && self.suites.is_ready() && self.pods.is_ready()
    }

    /// Waits until every cache has listed once in every scope.
    pub async fn synced(&self) {
        self.evaluations.synced().await;
        self.suites.synced().await;
        self.pods.synced().await;
    }

    /// The pods of Evaluation `uid` in `namespace`: in its namespace and controlled by it.
    pub fn pods_of(&self, namespace: &str, uid: &str) -> Vec<Pod> {
        self.pods
            .indexed(&ownership::run_key(namespace, uid))
            .into_iter()
            .map(Arc::unwrap_or_clone)
            .collect()
    }

    /// Every Evaluation's key, those whose run has a pod (Pending or Running) first: after an
    /// emergency stop, their cancellations come before the queued runs' new reasons.
    pub fn evaluation_keys_running_first(&self) -> Vec<Key> {
        let (running, rest): (Vec<_>, Vec<_>) =
            self.evaluations.objects().into_iter().partition(|ev| {
                let phase = ev.status.as_ref().and_then(|s| s.phase);
                matches!(phase, Some(Phase::Pending | Phase::Running))
            });
        running
            .iter()
            .chain(&rest)
            .map(|ev| key_of(ev.as_ref()))
            .collect()
    }

    /// The children of suite `name` in `namespace` (by label; the caller checks ownership).
    pub fn children_of(&self, namespace: &str, name: &str) -> Vec<Evaluation> {
        self.evaluations
            .indexed(&format!("{namespace}/{name}"))
            .into_iter()
            .map(Arc::unwrap_or_clone)
            .collect()
    }
}

/// The suite index of an Evaluation: `namespace/suite`.
fn suite_of(ev: &Evaluation) -> Option<String> {
    let suite = ev.labels().get(SUITE_LABEL)?;
    Some(format!("{}/{suite}", ev.namespace().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::evaluation::EvaluationStatus;

    #[test]
    fn running_evaluations_come_first() {
        let caches = Caches::new(1);
        let with_phase = |name: &str, phase: Option<Phase>| {
            let mut ev = Evaluation::test();
            ev.metadata.name = Some(name.into());
            ev.status = phase.map(|phase| EvaluationStatus {
                phase: Some(phase),
                ..Default::default()
            });
            ev
        };
        let objects = [
            with_phase("a-queued", Some(Phase::Queued)),
            with_phase("b-new", None),
            with_phase("c-running", Some(Phase::Running)),
            with_phase("d-done", Some(Phase::Succeeded)),
            with_phase("e-pending", Some(Phase::Pending)),
        ];
        caches
            .evaluations
            .apply(None, kube::runtime::watcher::Event::Init);
        for ev in objects {
            caches
                .evaluations
                .apply(None, kube::runtime::watcher::Event::InitApply(ev));
        }
        caches
            .evaluations
            .apply(None, kube::runtime::watcher::Event::InitDone);
        let keys = caches.evaluation_keys_running_first();
        let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names.len(), 5);
        let mut first: Vec<&str> = names[..2].to_vec();
        first.sort_unstable();
        assert_eq!(first, ["c-running", "e-pending"], "{names:?}");
    }
}
