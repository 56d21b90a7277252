//! Rebuilds the admission ledger from the cluster before the controller acts (start, and
//! takeover after leader election).

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::admission::Gate;
use crate::admission::candidate::candidate;
use crate::config::Config;
use crate::crd::Evaluation;
use crate::crd::evaluation::Phase;
use crate::labels::{EVALUATION_UID_LABEL, MANAGED_LABEL};
use crate::liveness;
use crate::ssa;

impl Gate {
    /// Rebuilds the ledger from the cluster before any reconcile runs: runs whose status says
    /// Pending or Running, and runs with a live pod (a crash between creating the pod and
    /// writing status), hold their admission; queued runs take their queue places.
    ///
    /// # Errors
    /// Listing Evaluations or pods failed.
    pub async fn restore(
        &self,
        client: &Client,
        namespace: Option<&str>,
        config: &Config,
    ) -> Result<usize, kube::Error> {
        let evaluations: Api<Evaluation> = ssa::scoped(client, namespace);
        let pods: Api<Pod> = ssa::scoped(client, namespace);
        let evaluations = evaluations.list(&ListParams::default()).await?.items;
        let managed = ListParams::default().labels(&format!("{MANAGED_LABEL}=true"));
        let live_pods: HashSet<String> = pods
            .list(&managed)
            .await?
            .items
            .iter()
            .filter(|p| !liveness::is_terminal(p))
            .filter_map(|p| p.labels().get(EVALUATION_UID_LABEL).cloned())
            .collect();
        let mut ledger = self.ledger();
        let mut restored = 0;
        for ev in &evaluations {
            let (Some(c), Some(uid)) = (candidate(ev, config), ev.uid()) else {
                continue;
            };
            let phase = ev.status.as_ref().and_then(|s| s.phase);
            if matches!(phase, Some(Phase::Pending | Phase::Running)) || live_pods.contains(&uid) {
                ledger.restore(&uid, &c.namespace, c.request);
                restored += 1;
            } else if matches!(phase, None | Some(Phase::Queued)) {
                // Take the queue place now, so that priorities hold from the first decision.
                ledger.queue(&c);
            }
        }
        Ok(restored)
    }
}
