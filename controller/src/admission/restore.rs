//! Rebuilds the admission ledger from the cluster before the controller acts (start, and
//! takeover after leader election), and the paginated LIST it uses.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::admission::candidate::candidate;
use crate::admission::{Gate, Ledger};
use crate::config::Config;
use crate::crd::Evaluation;
use crate::crd::evaluation::Phase;
use crate::evaluation::plan::admission_run_id;
use crate::labels::{EVALUATION_UID_LABEL, MANAGED_LABEL};
use crate::liveness;
use crate::ssa;

impl Gate {
    /// Rebuilds the ledger from the cluster before any reconcile runs (start, and each
    /// takeover of the leader Lease): every live pod holds its run's admission (what its
    /// limits say, even when its Evaluation is gone); queued runs take their queue places.
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
        let evaluations = list_all(&evaluations, ListParams::default()).await?;
        let managed = ListParams::default().labels(&format!("{MANAGED_LABEL}=true"));
        let pods = list_all(&pods, managed).await?;
        let now = Time(jiff::Timestamp::now());
        let mut ledger = self.ledger();
        *ledger = Ledger::default();
        let mut restored = 0;
        for pod in pods.iter().filter(|p| liveness::holds_capacity(p, &now)) {
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
        for ev in &evaluations {
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
        Ok(restored)
    }
}

/// Pages of this size keep each LIST (and the memory it needs at once) bounded.
const PAGE: u32 = 500;

/// Every object `api` lists with `params`, a page at a time.
///
/// # Errors
/// A page could not be read.
pub async fn list_all<K: ssa::Object>(
    api: &Api<K>,
    params: ListParams,
) -> Result<Vec<K>, kube::Error> {
    let mut out = Vec::new();
    let mut params = params.limit(PAGE);
    loop {
        let page = api.list(&params).await?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}
