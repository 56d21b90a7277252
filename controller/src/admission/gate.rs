//! The admission ledger behind a mutex, shared by every reconcile: the one place where runs
//! are admitted, queued and freed.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use crate::admission::candidate::{candidate, namespace_limits};
use crate::admission::{Decision, Ledger, Limits, Usage};
use crate::config::Config;
use crate::crd::{Evaluation, EvaluationQuota};
use crate::metrics::Metrics;

/// The admission ledger of the controller. Queued runs ask again every
/// `plan::QUEUE_RECHECK`, so freed capacity is taken within that time.
///
/// Admissions are held by runs (`crucible.dev/run-id`), not by Evaluations: a run holds its
/// share while any pod of it is alive ([`crate::liveness`]), even after its Evaluation was
/// deleted or replaced by a new run.
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

    /// Decides whether `ev`'s run `run` may start now.
    pub fn decide(
        &self,
        ev: &Evaluation,
        run: &str,
        quotas: &[&EvaluationQuota],
        config: &Config,
        hold: Option<&str>,
        metrics: &Metrics,
    ) -> Decision {
        let Some(c) = candidate(ev, run, config) else {
            return Decision::Admit;
        };
        let limits = namespace_limits(quotas, config);
        let decision = self
            .ledger()
            .decide(&c, &limits, &config.global_limits, hold);
        self.publish_metrics(&c.namespace, &limits, metrics);
        decision
    }

    /// After a reconcile of Evaluation `uid`: frees every run of it that `keep` (the runs of
    /// its live pods, and the run just started) does not name, and gives up its queue place
    /// unless it still waits in the queue.
    pub fn settle(&self, uid: &str, keep: &BTreeSet<String>, waiting: bool) {
        let mut ledger = self.ledger();
        ledger.settle(uid, |run| keep.contains(run));
        if !waiting {
            ledger.dequeue(uid);
        }
    }

    /// Evaluation `uid` is gone: it gives up its queue place. Its admissions stay until the
    /// sweep sees its pods gone.
    pub fn withdraw(&self, uid: &str) {
        self.ledger().dequeue(uid);
    }

    /// The sweep of `scope` (a namespace, or all): Evaluations not in `live` lose their queue
    /// places; returns those (uid, namespace) that still hold admissions, whose pods the
    /// caller must look at (see [`Gate::settle`]).
    pub fn gone(&self, scope: Option<&str>, live: &HashSet<String>) -> Vec<(String, String)> {
        let keep = |uid: &str, ns: &str| live.contains(uid) || scope.is_some_and(|s| s != ns);
        let mut ledger = self.ledger();
        ledger.retain_queued(keep);
        ledger.holders_not(keep)
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
