//! Rebuilds the admission ledger from the cluster before the controller acts (start, and
//! takeover after leader election): one snapshot, read once, also serves the orphan sweep.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::admission::candidate::candidate;
use crate::admission::{Gate, Ledger};
use crate::config::Config;
use crate::crd::Evaluation;
use crate::crd::evaluation::Phase;
use crate::evaluation::plan::admission_run_id;
use crate::labels::EVALUATION_UID_LABEL;
use crate::liveness;
use crate::watches::Caches;

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

impl Gate {
    /// Adds to the ledger what `snapshot` holds, before any reconcile runs: every live pod
    /// holds its run's admission (what its limits say, even when its Evaluation is gone);
    /// queued runs take their queue places. Returns how many admissions were restored.
    pub fn restore(&self, snapshot: &Snapshot, config: &Config, now: &Time) -> usize {
        self.with_ledger(|ledger| restore(ledger, snapshot, config, now))
    }
}

fn restore(ledger: &mut Ledger, snapshot: &Snapshot, config: &Config, now: &Time) -> usize {
    {
        let mut restored = 0;
        for pod in snapshot
            .pods
            .iter()
            .filter(|p| liveness::holds_capacity(p, now))
        {
            let (Some(run), Some(uid), Some(ns)) = (
                liveness::run_of(pod),
                pod.labels().get(EVALUATION_UID_LABEL),
                pod.namespace(),
            ) else {
                continue;
            };
            ledger.restore(&run, uid, &ns, liveness::request_of(pod));
            restored += 1;
        }
        for ev in &snapshot.evaluations {
            let phase = ev.status.as_ref().and_then(|s| s.phase);
            let holds = ev
                .uid()
                .is_some_and(|uid| ledger.runs_of(&uid).next().is_some());
            if holds || !matches!(phase, None | Some(Phase::Queued)) {
                continue;
            }
            // Take the queue place now, so that priorities hold from the first decision.
            let run = admission_run_id(ev, None);
            if let Some(c) = candidate(ev, &run, config) {
                ledger.queue(&c);
            }
        }
        restored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{at, mk_pod};
    use crate::labels::RUN_ID_LABEL;

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
        pod
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
            evaluations: vec![],
        };
        let b = Snapshot {
            pods: vec![pod_of("b", "uid-3", "run-3", "Pending")],
            evaluations: vec![],
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
}
