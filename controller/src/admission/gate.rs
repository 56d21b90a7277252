//! The admission ledger behind a mutex, shared by every reconcile: the one place where runs
//! are admitted, queued and freed.

use std::collections::HashSet;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::admission::candidate::{candidate, namespace_limits};
use crate::admission::{Decision, Ledger, Limits, Usage};
use crate::config::Config;
use crate::crd::evaluation::{EvaluationStatus, Phase};
use crate::crd::{Evaluation, EvaluationQuota};
use crate::liveness;
use crate::metrics::Metrics;

/// The admission ledger of the controller. Queued runs ask again every
/// `plan::QUEUE_RECHECK`, so freed capacity is taken within that time.
#[derive(Default)]
pub struct Gate {
    ledger: Mutex<Ledger>,
}

impl Gate {
    pub(super) fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A panic while holding the lock cannot leave the ledger half-updated in a way that
        // matters more than stopping admission altogether would.
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides whether `ev`'s run may start now.
    pub fn decide(
        &self,
        ev: &Evaluation,
        quotas: &[&EvaluationQuota],
        config: &Config,
        hold: Option<&str>,
        metrics: &Metrics,
    ) -> Decision {
        let Some(c) = candidate(ev, config) else {
            return Decision::Admit;
        };
        let limits = namespace_limits(quotas, config);
        let decision = self
            .ledger()
            .decide(&c, &limits, &config.global_limits, hold);
        self.publish_metrics(&c.namespace, &limits, metrics);
        decision
    }

    /// After a reconcile: a run that finished and has no live pod left frees its admission
    /// (and its queue place).
    pub fn settle(&self, ev: &Evaluation, status: &EvaluationStatus, pods: &[Pod]) {
        let finished = status.phase.is_some_and(Phase::is_finished);
        let alive = pods.iter().any(|p| !liveness::is_terminal(p));
        if finished && !alive {
            self.forget(&ev.uid().unwrap_or_default());
        }
    }

    /// Frees everything `uid` holds.
    pub fn forget(&self, uid: &str) {
        self.ledger().release(uid);
    }

    /// Forgets runs of Evaluations of `scope` (a namespace, or all) that no longer exist.
    pub fn retain(&self, scope: Option<&str>, live: &HashSet<String>) {
        self.ledger()
            .retain(|uid, ns| live.contains(uid) || scope.is_some_and(|s| s != ns));
    }

    /// Usage figures and queue length of a namespace.
    pub fn status_of(&self, namespace: &str) -> (Usage, usize) {
        let ledger = self.ledger();
        (ledger.usage(Some(namespace)), ledger.queued(namespace))
    }

    fn publish_metrics(&self, namespace: &str, limits: &Limits, metrics: &Metrics) {
        let (usage, queued) = self.status_of(namespace);
        metrics.set_queue_depth(namespace, queued);
        metrics.set_quota(
            namespace,
            "running",
            f64::from(usage.running),
            limits.max_running.map(f64::from),
        );
        metrics.set_quota(namespace, "cpu", usage.cpu, limits.cpu);
        metrics.set_quota(namespace, "memory", usage.memory, limits.memory);
        metrics.set_quota(namespace, "gpu", usage.gpu, limits.gpu);
    }
}
