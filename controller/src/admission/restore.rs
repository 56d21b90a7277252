//! Rebuilds the admission ledger from the cluster before the controller acts (start, and
//! takeover after leader election): one snapshot, read once, also serves the orphan sweep.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::admission::candidate::{candidate, request};
use crate::admission::{Gate, Ledger};
use crate::cache::Caches;
use crate::config::Config;
use crate::crd::Evaluation;
use crate::crd::evaluation::Phase;
use crate::ownership;
use crate::run::liveness;
use crate::run::state::admission_run_id;

/// What the controller reads once at start (and each leader takeover), for the ledger and the
/// orphan sweep: the managed pods, then the Evaluations (pods first, so that an Evaluation
/// created between the two reads cannot be mistaken for missing).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Sandbox pods (`crucible.dev/managed=true`).
    pub pods: Vec<Pod>,
    /// Evaluations.
    pub evaluations: Vec<Evaluation>,
}

impl Snapshot {
    /// The snapshot of the synced caches.
    pub fn of(caches: &Caches) -> Self {
        let clone = |v: Vec<std::sync::Arc<Pod>>| {
            v.into_iter().map(std::sync::Arc::unwrap_or_clone).collect()
        };
        Snapshot {
            pods: clone(caches.pods.objects()),
            evaluations: caches
                .evaluations
                .objects()
                .into_iter()
                .map(std::sync::Arc::unwrap_or_clone)
                .collect(),
        }
    }
}

impl Snapshot {
    /// The [`ownership::run_key`]s of its Evaluations.
    pub fn live(&self) -> HashSet<String> {
        self.evaluations
            .iter()
            .filter_map(|ev| Some(ownership::run_key(&ev.namespace()?, &ev.uid()?)))
            .collect()
    }
}

impl Gate {
    /// Adds to the ledger what `snapshot` holds, before any reconcile runs: every live pod
    /// of an existing Evaluation holds its run's admission (what its limits say); every
    /// Pending or Running run holds its own, even when its pod vanished meanwhile (its retry
    /// must not start beside the runs admitted in its place); queued runs take their queue
    /// places. Pods that no existing Evaluation controls ([`ownership`]) count for nothing.
    /// Returns how many admissions were restored.
    pub fn restore(&self, snapshot: &Snapshot, config: &Config, now: &Time) -> usize {
        self.with_ledger(|ledger| restore(ledger, snapshot, config, now))
    }
}

fn restore(ledger: &mut Ledger, snapshot: &Snapshot, config: &Config, now: &Time) -> usize {
    let live = snapshot.live();
    let mut restored = 0;
    for pod in snapshot
        .pods
        .iter()
        .filter(|p| liveness::holds_capacity(p, now))
    {
        let (Some(run), Some(key), Some(owner), Some(ns)) = (
            liveness::run_of(pod),
            ownership::pod_index(pod),
            ownership::controller::<Evaluation>(&pod.metadata),
            pod.namespace(),
        ) else {
            continue;
        };
        if live.contains(&key) {
            ledger.restore(&run, &owner.uid, &ns, liveness::request_of(pod));
            restored += 1;
        }
    }
    for ev in &snapshot.evaluations {
        let (Some(uid), Some(ns)) = (ev.uid(), ev.namespace()) else {
            continue;
        };
        let status = ev.status.as_ref();
        match status.and_then(|s| s.phase) {
            Some(Phase::Pending | Phase::Running) => {
                let run = status
                    .and_then(|s| s.run_id.clone())
                    .unwrap_or_else(|| admission_run_id(ev, None));
                if !ledger.is_admitted(&run) {
                    ledger.restore(&run, &uid, &ns, request(&ev.spec, config));
                    restored += 1;
                }
            }
            None | Some(Phase::Queued) if ledger.runs_of(&uid).next().is_none() => {
                // Take the queue place now, so that priorities hold from the first decision.
                let run = admission_run_id(ev, None);
                if let Some(c) = candidate(ev, &run, config) {
                    ledger.queue(&c);
                }
            }
            _ => {}
        }
    }
    restored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::evaluation::EvaluationStatus;
    use crate::fixtures::{at, mk_pod, owned_by};
    use crate::labels::{EVALUATION_UID_LABEL, RUN_ID_LABEL};

    fn pod_of(ns: &str, uid: &str, run: &str, phase: &str) -> Pod {
        let mut pod = mk_pod(&format!("{uid}-pod"), phase, vec![]);
        pod.metadata.namespace = Some(ns.into());
        pod.metadata.labels = Some(
            [
                (EVALUATION_UID_LABEL.to_string(), uid.to_string()),
                (RUN_ID_LABEL.to_string(), run.to_string()),
            ]
            .into(),
        );
        owned_by(pod, uid)
    }

    fn evaluation(ns: &str, uid: &str, phase: Phase, run: &str) -> Evaluation {
        let mut ev = Evaluation::test().with_status(EvaluationStatus {
            phase: Some(phase),
            run_id: Some(run.into()),
            ..Default::default()
        });
        ev.metadata.namespace = Some(ns.into());
        ev.metadata.name = Some(uid.into());
        ev.metadata.uid = Some(uid.into());
        ev
    }

    /// Watched namespaces are restored one after the other: each adds to the ledger.
    #[test]
    fn every_live_pod_holds_its_run_and_namespaces_add_up() {
        let gate = Gate::default();
        let config = Config::default();
        let a = Snapshot {
            pods: vec![
                pod_of("a", "uid-1", "run-1", "Running"),
                pod_of("a", "uid-2", "run-2", "Succeeded"),
            ],
            evaluations: vec![
                evaluation("a", "uid-1", Phase::Running, "run-1"),
                evaluation("a", "uid-2", Phase::Succeeded, "run-2"),
            ],
        };
        let b = Snapshot {
            pods: vec![pod_of("b", "uid-3", "run-3", "Pending")],
            evaluations: vec![evaluation("b", "uid-3", Phase::Pending, "run-3")],
        };
        assert_eq!(
            gate.restore(&a, &config, &at(0)),
            1,
            "a finished pod holds nothing"
        );
        assert_eq!(gate.restore(&b, &config, &at(0)), 1);
        assert_eq!(gate.status_of("a").0.running, 1);
        assert_eq!(gate.status_of("b").0.running, 1, "b does not wipe a");
    }

    /// Pods no existing Evaluation of their namespace controls hold nothing: a tenant cannot
    /// take capacity with decoys (a copied uid label, or a controller reference to another
    /// namespace's Evaluation).
    #[test]
    fn decoy_pods_hold_nothing() {
        let gate = Gate::default();
        let mut label_only = pod_of("a", "uid-1", "run-x", "Running");
        label_only.metadata.owner_references = None;
        let snapshot = Snapshot {
            pods: vec![
                label_only,
                pod_of("a", "uid-2", "run-y", "Running"),
                pod_of("a", "gone", "run-z", "Running"),
            ],
            evaluations: vec![
                evaluation("b", "uid-1", Phase::Succeeded, "run-1"),
                evaluation("b", "uid-2", Phase::Succeeded, "run-2"),
            ],
        };
        assert_eq!(gate.restore(&snapshot, &Config::default(), &at(0)), 0);
        assert_eq!(gate.status_of("a").0.running, 0);
        assert_eq!(gate.status_of("b").0.running, 0);
    }

    /// A Running run whose pod vanished while the controller was down holds its admission:
    /// its retry must not start beside a run admitted in its place.
    #[test]
    fn a_running_run_without_a_pod_holds_its_admission() {
        let gate = Gate::default();
        let snapshot = Snapshot {
            pods: vec![],
            evaluations: vec![
                evaluation("a", "uid-1", Phase::Running, "run-1"),
                evaluation("a", "uid-2", Phase::Pending, "run-2"),
                evaluation("a", "uid-3", Phase::Failed, "run-3"),
            ],
        };
        assert_eq!(gate.restore(&snapshot, &Config::default(), &at(0)), 2);
        assert_eq!(gate.status_of("a").0.running, 2);
    }
}
