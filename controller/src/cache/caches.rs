//! The caches of the watched objects both controllers read, fed by the watches (`watches.rs`).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::cache::Indexed;
use crate::cache::expectations::Expectations;
use crate::cache::seen_statuses::SeenStatuses;
use crate::crd::{Evaluation, EvaluationSuite};
use crate::labels::SUITE_LABEL;
use crate::ownership;

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
