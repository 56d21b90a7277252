//! The admission ledger behind a mutex, shared by every reconcile: the one place where runs
//! are admitted, queued and freed.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::admission::candidate::{candidate, namespace_limits};
use crate::admission::holds::Holds;
use crate::admission::{Decision, Ledger, Usage};
use crate::config::Config;
use crate::config::Limits;
use crate::crd::{Evaluation, EvaluationQuota};
use crate::metrics::Metrics;
use crate::run::state;
use crate::runner::{Key, Trigger};

/// The admission ledger of the controller. Queued runs wait for a change: every change of
/// the ledger that may admit a queued run or move its reported position sends that run's key
/// to the Evaluation controller's work queue ([`Gate::connect`]).
///
/// Admissions are held by runs (`crucible.dev/run-id`), not by Evaluations: a run holds its
/// share while any pod of it is alive ([`crate::run::liveness`]), even after its Evaluation was
/// deleted or replaced by a new run.
#[derive(Default)]
pub struct Gate {
    ledger: Mutex<Ledger>,
    wake: Mutex<Option<Trigger>>,
    /// Signalled when a namespace's usage, queue or limits changed ([`Gate::touched`]).
    touched: tokio::sync::Notify,
}

/// What [`Gate::ask`] answers.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// Admit, queue or hold.
    pub decision: Decision,
    /// Whether this admits a new run (its git source is read now: a queued run costs no
    /// fetch).
    pub starts_run: bool,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A panic while holding the lock cannot leave the ledger half-updated in a way that
        // matters more than stopping admission altogether would.
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the ledger, then sends the runs it woke and signals touched namespaces.
    pub(super) fn with_ledger<R>(&self, f: impl FnOnce(&mut Ledger) -> R) -> R {
        let (out, wakes, touched) = {
            let mut ledger = self.lock();
            let out = f(&mut ledger);
            (out, ledger.take_wakes(), ledger.is_touched())
        };
        if touched {
            // Stores a permit when nobody waits: no change is missed.
            self.touched.notify_one();
        }
        if wakes.is_empty() {
            return out;
        }
        let wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(trigger) = wake.as_ref() {
            for (namespace, name) in wakes {
                // The receiver is gone only at shutdown.
                let _ = trigger.send(Key::new(namespace, name));
            }
        }
        out
    }

    /// Sends woken runs to `trigger` from now on.
    pub fn connect(&self, trigger: Trigger) {
        *self.wake.lock().unwrap_or_else(|e| e.into_inner()) = Some(trigger);
    }

    /// The limits of `namespace` (its EvaluationQuotas) changed.
    pub fn limits_changed(&self, quotas: &[&EvaluationQuota], namespace: &str, config: &Config) {
        let limits = namespace_limits(quotas, config);
        self.with_ledger(|l| l.set_limits(namespace, limits));
    }

    /// A hold was lifted (the emergency stop cleared, the sandbox verified): wakes the runs
    /// that may start now.
    pub fn wake_all(&self) {
        self.with_ledger(Ledger::wake_all);
    }

    /// The one question a reconcile asks: what admission decides for `ev`'s run now, given
    /// the followed branch's `head`, the holds that may apply and the namespace's quotas.
    /// A run that is over asks nothing (admitted); a new or queued run, or a started one
    /// whose next attempt needs room, is decided by the ledger.
    pub fn ask(
        &self,
        ev: &Evaluation,
        head: Option<&str>,
        holds: &Holds<'_>,
        quotas: &[&EvaluationQuota],
        config: &Config,
        metrics: &Metrics,
    ) -> Answer {
        let awaits = state::awaits_admission(ev, head);
        if !awaits && state::run_is_over(ev) {
            return Answer {
                decision: Decision::Admit,
                starts_run: false,
            };
        }
        let run = state::admission_run_id(ev, head);
        let hold = holds.reason();
        let decision = self.decide(ev, &run, quotas, config, hold.as_deref(), metrics);
        Answer {
            starts_run: awaits && decision == Decision::Admit,
            decision,
        }
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
        let decision = self.with_ledger(|l| l.decide(&c, &limits, &config.global_limits, hold));
        self.publish_metrics(&c.namespace, &limits, !quotas.is_empty(), metrics);
        decision
    }

    /// After a reconcile of Evaluation `uid` of `namespace`: frees every run of it that `keep`
    /// (the runs of its live pods, and the run just started) does not name, and gives up its
    /// queue place unless it still waits in the queue. Nothing changes when `uid` holds or
    /// waits in another namespace: a uid is one object's, so a claim from elsewhere is false.
    pub fn settle(&self, namespace: &str, uid: &str, keep: &BTreeSet<String>, waiting: bool) {
        self.with_ledger(|ledger| {
            if ledger.namespace_of(uid).is_some_and(|ns| ns != namespace) {
                return;
            }
            ledger.settle(uid, |run| keep.contains(run));
            if !waiting {
                ledger.dequeue(uid);
            }
        });
    }

    /// Evaluation `uid` is gone: it gives up its queue place. Its admissions stay until the
    /// sweep sees its pods gone.
    pub fn withdraw(&self, uid: &str) {
        self.with_ledger(|l| l.dequeue(uid));
    }

    /// Waits until some namespace's usage, queue or limits changed, then returns those
    /// namespaces (each once, however many changes came meanwhile).
    pub async fn touched(&self) -> BTreeSet<String> {
        loop {
            let touched = self.lock().take_touched();
            if !touched.is_empty() {
                return touched;
            }
            self.touched.notified().await;
        }
    }

    /// Marks `namespace` as changed again (its quota status could not be written).
    pub fn touch(&self, namespace: &str) {
        self.with_ledger(|l| l.touch(namespace));
    }

    /// Usage figures and queue length of a namespace.
    pub fn status_of(&self, namespace: &str) -> (Usage, usize) {
        let ledger = self.lock();
        (ledger.usage(Some(namespace)), ledger.queued(namespace))
    }

    /// Sets `namespace`'s queue and quota gauges; drops them once it has nothing queued or
    /// admitted and no quota, so tenant churn does not grow the series without bound.
    pub fn publish_metrics(
        &self,
        namespace: &str,
        limits: &Limits,
        has_quota: bool,
        metrics: &Metrics,
    ) {
        let (usage, queued) = self.status_of(namespace);
        if queued == 0 && usage == Usage::default() && !has_quota {
            metrics.forget_namespace(namespace);
            return;
        }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A namespace's queue and quota series go once it has nothing queued or admitted and no
    /// quota: tenants coming and going do not grow the series count.
    #[test]
    fn namespace_gauges_are_dropped_when_the_namespace_is_idle_without_a_quota() {
        use prometheus_client::encoding::text::encode;
        use prometheus_client::registry::Registry;
        let mut registry = Registry::with_prefix("crucible");
        let metrics = Metrics::default().register(&mut registry);
        let text = |registry: &Registry| {
            let mut text = String::new();
            encode(&mut text, registry).expect("encodes");
            text
        };
        let gate = Gate::default();
        let config = Config::default();
        let ev = Evaluation::test();
        let namespace = ev.metadata.namespace.clone().unwrap_or_default();
        let uid = ev.metadata.uid.clone().unwrap_or_default();
        let run = crate::run::state::admission_run_id(&ev, None);
        assert_eq!(
            gate.decide(&ev, &run, &[], &config, None, &metrics),
            Decision::Admit
        );
        let series =
            format!("crucible_quota_used{{namespace=\"{namespace}\",resource=\"running\"}} 1");
        assert!(text(&registry).contains(&series), "{}", text(&registry));
        // The run finished: nothing queued or admitted, no quota.
        gate.settle(&namespace, &uid, &BTreeSet::new(), false);
        let limits = namespace_limits(&[], &config);
        gate.publish_metrics(&namespace, &limits, true, &metrics);
        let idle =
            format!("crucible_quota_used{{namespace=\"{namespace}\",resource=\"running\"}} 0");
        assert!(text(&registry).contains(&idle), "a quota keeps its series");
        gate.publish_metrics(&namespace, &limits, false, &metrics);
        let after = text(&registry);
        assert!(
            !after.contains(&format!("namespace=\"{namespace}\"")),
            "{after}"
        );
    }

    #[tokio::test]
    async fn touched_waits_for_a_change_and_reports_each_namespace_once() {
        let gate = Gate::default();
        let config = Config::default();
        gate.limits_changed(&[], "a", &config);
        gate.limits_changed(&[], "a", &config);
        gate.limits_changed(&[], "b", &config);
        let first: Vec<String> = gate.touched().await.into_iter().collect();
        assert_eq!(first, ["a", "b"]);
        let idle = tokio::time::timeout(Duration::from_millis(50), gate.touched()).await;
        assert!(idle.is_err(), "nothing changed: it waits");
        gate.touch("c");
        let next = tokio::time::timeout(Duration::from_secs(5), gate.touched())
            .await
            .expect("a change ends the wait");
        assert_eq!(next.into_iter().collect::<Vec<_>>(), ["c"]);
    }
}
