//! Watch wiring of the Evaluation controller: Evaluations, the pods they own, the
//! emergency-stop switch, and the sweep of deleted Evaluations.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{self, Controller};
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::crd::Evaluation;
use crate::evaluation::{Context, reconcile};
use crate::labels::{EVALUATION_UID_LABEL, MANAGED_LABEL};
use crate::liveness;
use crate::ssa::{self, list_all};

/// How often readiness of the cache is re-checked.
const READY_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// How often metrics and admissions of deleted Evaluations are dropped.
const SWEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the Evaluation controller for one namespace (or all, with `None`) until shutdown.
/// `on_ready` fires once the Evaluation cache has synced; every change of `stop_changes`
/// reconciles everything.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    concurrency: u16,
    stop_changes: watch::Receiver<()>,
    on_ready: impl FnOnce() + Send + 'static,
) {
    let evaluations: Api<Evaluation> = ssa::scoped(&ctx.client, namespace);
    let pods: Api<Pod> = ssa::scoped(&ctx.client, namespace);
    let managed = watcher::Config::default().labels(&format!("{MANAGED_LABEL}=true"));
    let stop_changes = futures::stream::unfold(stop_changes, |mut rx| async move {
        rx.changed().await.ok().map(|()| ((), rx))
    });
    let controller = Controller::new(evaluations, watcher::Config::default())
        .owns(pods, managed)
        .reconcile_all_on(stop_changes)
        .with_config(controller::Config::default().concurrency(concurrency))
        .shutdown_on_signal();
    let store = controller.store();
    let policies = ctx.sandbox_policies.clone();
    tokio::spawn(policies.watch(ctx.client.clone(), namespace.map(str::to_string)));
    let (sweep_ctx, scope) = (ctx.clone(), namespace.map(str::to_string));
    tokio::spawn(async move {
        // NB: the store's readiness is a oneshot that wakes only its last poller, and the
        // controller polls it too; re-poll on a short timeout instead of waiting once.
        loop {
            match tokio::time::timeout(READY_POLL, store.wait_until_ready()).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return,
                Err(_) => continue,
            }
        }
        on_ready();
        // Deleted Evaluations never reach the reconciler: drop their metric series and queue
        // places periodically, and their admissions once their pods are gone (only once the
        // cache is complete, or restored admissions would be dropped).
        let mut tick = tokio::time::interval(SWEEP);
        loop {
            tick.tick().await;
            let state = store.state();
            let live = state
                .iter()
                .filter_map(|e| e.metadata.uid.clone())
                .collect();
            let names = state
                .iter()
                .map(|e| (e.namespace().unwrap_or_default(), e.name_any()))
                .collect();
            sweep_ctx
                .metrics
                .retain_evaluations(scope.as_deref(), &live, &names);
            let holders = sweep_ctx.admission.gone(scope.as_deref(), &live);
            if !holders.is_empty() {
                free_gone(&sweep_ctx, scope.as_deref(), &holders).await;
            }
        }
    });
    controller
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "controller stream error");
            }
        })
        .await;
}

/// Frees the admissions of deleted Evaluations (`holders`: uid, namespace) whose pods are
/// gone. Runs only while such admissions exist; the LIST is served from the API server's
/// watch cache (`resourceVersion=0`), not from etcd.
async fn free_gone(ctx: &Context, scope: Option<&str>, holders: &[(String, String)]) {
    let api: Api<Pod> = ssa::scoped(&ctx.client, scope);
    let managed = ListParams::default()
        .labels(&format!("{MANAGED_LABEL}=true"))
        .match_any();
    let pods = match list_all(&api, managed).await {
        Ok(pods) => pods,
        Err(error) => {
            tracing::warn!(%error, "cannot list sandbox pods to free deleted runs");
            return;
        }
    };
    let now = Time(jiff::Timestamp::now());
    for (uid, _) in holders {
        let keep: BTreeSet<String> = pods
            .iter()
            .filter(|p| p.labels().get(EVALUATION_UID_LABEL) == Some(uid))
            .filter(|p| liveness::holds_capacity(p, &now))
            .filter_map(liveness::run_of)
            .collect();
        ctx.admission.settle(uid, &keep, false);
    }
}
