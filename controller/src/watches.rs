//! The watches both controllers share: one watcher per kind and watched namespace feeds the
//! [`Caches`], and each event is routed as a key to the work queue of the controller that must
//! look: an Evaluation's spec or metadata changed (its own controller; its suite for any
//! change), a sandbox pod changed (its Evaluation), a suite changed (the suite controller).
//! A deleted Evaluation is forgotten here at once (metrics, queue place); its admission is
//! freed when its last pod is gone.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::admission::Gate;
use crate::cache::{Caches, Change, key_of, lean};
use crate::crd::{Evaluation, EvaluationSuite};
use crate::labels::{MANAGED_LABEL, SUITE_LABEL};
use crate::metrics::Metrics;
use crate::ownership;
use crate::run::liveness;
use crate::runner::{Key, Trigger};
use crate::ssa;

/// Where the watches send keys and what they update on a deletion.
#[derive(Clone)]
pub struct Routes {
    /// The caches.
    pub caches: Arc<Caches>,
    /// The Evaluation controller's work queue.
    pub evaluations: Trigger,
    /// The suite controller's work queue.
    pub suites: Trigger,
    /// The admission gate.
    pub admission: Arc<Gate>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Starts the watches of `scopes` (namespaces; `None` is all) in the background.
pub fn spawn(client: &Client, scopes: &[Option<String>], routes: &Routes) {
    for scope in scopes {
        let managed = watcher::Config::default().labels(&format!("{MANAGED_LABEL}=true"));
        let evaluations = watch(client, scope, watcher::Config::default(), lean::evaluation);
        let suites = watch(client, scope, watcher::Config::default(), |_| {});
        let pods = watch(client, scope, managed, lean::pod);
        let (r, s) = (routes.clone(), scope.clone());
        tokio::spawn(evaluations.for_each(move |event| {
            for change in r.caches.evaluations.apply(s.as_deref(), event) {
                r.evaluation_changed(change);
            }
            async {}
        }));
        let (r, s) = (routes.clone(), scope.clone());
        tokio::spawn(suites.for_each(move |event| {
            for change in r.caches.suites.apply(s.as_deref(), event) {
                r.suite_changed(change);
            }
            async {}
        }));
        let (r, s) = (routes.clone(), scope.clone());
        tokio::spawn(pods.for_each(move |event| {
            for change in r.caches.pods.apply(s.as_deref(), event) {
                r.pod_changed(change);
            }
            async {}
        }));
    }
}

/// The events of one watcher (retried with backoff forever), each object made lean.
pub fn watch<K>(
    client: &Client,
    scope: &Option<String>,
    config: watcher::Config,
    lean: fn(&mut K),
) -> impl Stream<Item = watcher::Event<K>> + Send + 'static
where
    K: ssa::Object + Resource<Scope = kube::core::NamespaceResourceScope> + Send + Sync + 'static,
{
    let api = ssa::scoped::<K>(client, scope.as_deref());
    watcher(api, config)
        .default_backoff()
        .filter_map(move |event| async move {
            match event {
                Ok(event) => Some(event.modify(lean)),
                Err(error) => {
                    tracing::warn!(%error, "watch failed; retrying");
                    None
                }
            }
        })
}

impl Routes {
    fn evaluation_changed(&self, change: Change<Evaluation>) {
        match change {
            Change::Applied { old, new } => {
                if needs_reconcile(old.as_deref(), &new) {
                    let _ = self.evaluations.send(key_of(new.as_ref()));
                }
                self.wake_suite(&new);
            }
            Change::Deleted(ev) => {
                self.forget(&ev);
                self.wake_suite(&ev);
            }
            Change::None => {}
        }
    }

    fn suite_changed(&self, change: Change<EvaluationSuite>) {
        match change {
            Change::Applied { new, .. } => {
                let _ = self.suites.send(key_of(new.as_ref()));
            }
            // Gone from the cache, so never reconciled again: its series go now.
            Change::Deleted(suite) => self
                .metrics
                .forget_suite(&suite.namespace().unwrap_or_default(), &suite.name_any()),
            Change::None => {}
        }
    }

    fn wake_suite(&self, ev: &Evaluation) {
        if let Some(suite) = ev.labels().get(SUITE_LABEL) {
            let _ = self
                .suites
                .send(Key::new(ev.namespace().unwrap_or_default(), suite.clone()));
        }
    }

    /// A deleted Evaluation: its metric series and queue place go now, its admissions once
    /// its pods are gone.
    fn forget(&self, ev: &Evaluation) {
        let (Some(uid), Some(ns)) = (ev.uid(), ev.namespace()) else {
            return;
        };
        self.metrics.forget_evaluation(&uid, &ns, &ev.name_any());
        self.admission.withdraw(&uid);
        self.caches.expected.forget(&uid);
        self.caches.statuses.forget(&uid);
        self.caches.waiters.forget(&key_of(ev));
        self.free_gone(&ns, &uid);
    }

    /// Frees the admissions of deleted Evaluation `uid` of `namespace` whose pods are gone
    /// (from the cache: every pod change of it comes here again).
    fn free_gone(&self, namespace: &str, uid: &str) {
        self.free_gone_at(namespace, uid, Time(jiff::Timestamp::now()));
    }

    /// [`Routes::free_gone`] at `now`. A pod being deleted that still holds its run looks
    /// again at its release time ([`liveness::release_at`]): on a lost node no event ever
    /// comes to say it is gone.
    fn free_gone_at(&self, namespace: &str, uid: &str, now: Time) {
        let pods = self.caches.pods_of(namespace, uid);
        let live: Vec<&Pod> = pods
            .iter()
            .filter(|p| liveness::holds_capacity(p, &now))
            .collect();
        let keep: BTreeSet<String> = live.iter().filter_map(|p| liveness::run_of(p)).collect();
        self.admission.settle(namespace, uid, &keep, false);
        let Some(at) = live
            .iter()
            .filter_map(|p| liveness::release_at(p))
            .min_by_key(|t| t.0)
        else {
            return;
        };
        let wait = std::time::Duration::try_from(at.0.duration_since(now.0)).unwrap_or_default();
        let (routes, namespace, uid) = (self.clone(), namespace.to_string(), uid.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            // At least the release time, whatever the wall clock says.
            let now = Time(jiff::Timestamp::now().max(at.0));
            tracing::info!(
                %namespace, evaluation_uid = %uid,
                "a deleted run's pod is past its release time: its admission is looked at again"
            );
            routes.free_gone_at(&namespace, &uid, now);
        });
    }

    fn pod_changed(&self, change: Change<Pod>) {
        let (pod, applied) = match change {
            Change::Applied { new, .. } => (new, true),
            Change::Deleted(pod) => (pod, false),
            Change::None => return,
        };
        // Only a pod its Evaluation controls, in that Evaluation's namespace, is looked at.
        let Some(owner) = ownership::controller::<Evaluation>(pod.meta()) else {
            return;
        };
        let namespace = pod.namespace().unwrap_or_default();
        let key = Key::new(namespace.clone(), owner.name.clone());
        match self.caches.evaluations.get(&key) {
            Some(ev) if ev.uid().as_deref() == Some(owner.uid.as_str()) => {
                if applied {
                    self.caches.expected.observed(&owner.uid, &pod.name_any());
                }
                let _ = self.evaluations.send(key);
            }
            // Its Evaluation is gone (or replaced by a new one of the same name). Freed only
            // in this pod's namespace: a pod elsewhere naming the uid frees nothing.
            _ => self.free_gone(&namespace, &owner.uid),
        }
    }
}

/// Whether a change of an Evaluation needs its reconcile: not for the controller's own status
/// writes (the plan asked for its next look itself), but for anything else.
fn needs_reconcile(old: Option<&Evaluation>, new: &Evaluation) -> bool {
    let Some(old) = old else {
        return true;
    };
    let (o, n) = (old.meta(), new.meta());
    o.uid != n.uid
        || o.generation != n.generation
        || o.labels != n.labels
        || o.annotations != n.annotations
        || o.deletion_timestamp != n.deletion_timestamp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::fixtures::{mk_pod, owned_by};

    fn routes() -> Routes {
        Routes {
            caches: Arc::new(Caches::new(1)),
            evaluations: crate::runner::channel().0,
            suites: crate::runner::channel().0,
            admission: Arc::default(),
            metrics: Arc::default(),
        }
    }

    /// A pod in another namespace naming a running Evaluation's uid as its controller is not
    /// that Evaluation's: its events free nothing, and the pod cache does not list it as the
    /// run's pod.
    #[test]
    fn a_pod_elsewhere_claiming_an_evaluation_frees_nothing_and_is_not_its_pod() {
        let r = routes();
        let victim = Evaluation::test();
        let uid = victim.uid().unwrap_or_default();
        let run = crate::run::state::admission_run_id(&victim, None);
        let decision = r.admission.decide(
            &victim,
            &run,
            &[],
            &Config::default(),
            None,
            &Metrics::default(),
        );
        assert_eq!(decision, crate::admission::Decision::Admit);
        let mut spoof = owned_by(mk_pod("decoy", "Succeeded", vec![]), &uid);
        spoof.metadata.namespace = Some("team-b".into());
        spoof
            .labels_mut()
            .insert(crate::labels::EVALUATION_UID_LABEL.into(), uid.clone());
        for change in r
            .caches
            .pods
            .apply(None, watcher::Event::Apply(spoof.clone()))
        {
            r.pod_changed(change);
        }
        for change in r.caches.pods.apply(None, watcher::Event::Delete(spoof)) {
            r.pod_changed(change);
        }
        assert_eq!(r.admission.status_of("team-a").0.running, 1, "still held");
        let mut label_only = mk_pod("stray", "Running", vec![]);
        label_only
            .labels_mut()
            .insert(crate::labels::EVALUATION_UID_LABEL.into(), uid.clone());
        r.caches.pods.apply(None, watcher::Event::Apply(label_only));
        assert!(r.caches.pods_of("team-a", &uid).is_empty());
    }

    /// A deleted Evaluation whose pod stays Terminating on a lost node: its slot is freed at
    /// the pod's release time, by a timer, though no pod event ever comes.
    #[tokio::test(start_paused = true)]
    async fn a_deleted_evaluations_stuck_pod_frees_its_slot_at_its_release_time() {
        let r = routes();
        let ev = Evaluation::test();
        let uid = ev.uid().unwrap_or_default();
        let run = crate::run::state::admission_run_id(&ev, None);
        let config = Config::default();
        let decision = r
            .admission
            .decide(&ev, &run, &[], &config, None, &Metrics::default());
        assert_eq!(decision, crate::admission::Decision::Admit);
        let mut pod = owned_by(mk_pod("arith-pod", "Running", vec![]), &uid);
        pod.labels_mut()
            .insert(crate::labels::RUN_ID_LABEL.into(), run.clone());
        // Deleted just now with a 10 s grace: released 10 s + DELETION_SLACK from now.
        let deadline = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(10);
        pod.metadata.deletion_timestamp = Some(Time(deadline));
        r.caches.pods.apply(None, watcher::Event::Apply(pod));
        r.evaluation_changed(Change::Deleted(Arc::new(ev)));
        assert_eq!(r.admission.status_of("team-a").0.running, 1, "still held");
        tokio::time::sleep(liveness::DELETION_SLACK).await;
        assert_eq!(
            r.admission.status_of("team-a").0.running,
            1,
            "before its release"
        );
        tokio::time::sleep(std::time::Duration::from_secs(11)).await;
        assert_eq!(
            r.admission.status_of("team-a").0.running,
            0,
            "freed by the timer"
        );
    }

    #[test]
    fn only_status_writes_are_not_reconciled() {
        let ev = Evaluation::test();
        assert!(needs_reconcile(None, &ev));
        let mut status_only = ev.clone();
        status_only.status = Some(Default::default());
        assert!(!needs_reconcile(Some(&ev), &status_only));
        let mut respec = ev.clone();
        respec.metadata.generation = Some(2);
        assert!(needs_reconcile(Some(&ev), &respec));
        let rerun = ev.clone().annotated(crate::labels::RERUN_ANNOTATION, "1");
        assert!(needs_reconcile(Some(&ev), &rerun));
    }

    /// A deleted suite is never reconciled again (it is gone from the cache): its watch event
    /// itself drops the suite's series.
    #[test]
    fn a_deleted_suite_leaves_no_series() {
        use prometheus_client::encoding::text::encode;
        use prometheus_client::registry::Registry;
        let mut registry = Registry::with_prefix("crucible");
        let metrics = Arc::new(Metrics::default().register(&mut registry));
        let routes = Routes {
            caches: Arc::new(Caches::new(1)),
            evaluations: crate::runner::channel().0,
            suites: crate::runner::channel().0,
            admission: Arc::default(),
            metrics: metrics.clone(),
        };
        let mut suite = EvaluationSuite::new("s", Default::default());
        suite.metadata.namespace = Some("team-a".into());
        metrics.set_suite("team-a", "s", Some(0.5), 1.0);
        let rendered = |registry: &Registry| {
            let mut text = String::new();
            encode(&mut text, registry).expect("encodes");
            text
        };
        assert!(rendered(&registry).contains("suite=\"s\""));
        routes.suite_changed(Change::Deleted(Arc::new(suite)));
        let text = rendered(&registry);
        assert!(!text.contains("suite=\"s\""), "{text}");
    }
}
