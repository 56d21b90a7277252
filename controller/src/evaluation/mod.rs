//! The Evaluation controller: watches Evaluations and the pods they own, and runs each
//! reconcile through observe → plan → apply → report.

pub mod apply;
pub mod identity;
pub mod observe;
pub mod phase;
pub mod plan;
pub mod pod;
pub mod reconcile;
pub mod report;
pub mod results;
pub mod validate;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::config::Config;
use crate::crd::Evaluation;
use crate::metrics::Metrics;

/// How often readiness of the cache is re-checked.
const READY_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// How often metrics of deleted Evaluations are dropped.
const METRICS_SWEEP: std::time::Duration = std::time::Duration::from_secs(30);

/// Everything a reconcile needs.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Planning settings.
    pub config: Config,
    /// Event recorder shared by all reconciles (it de-duplicates repeated Events).
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// A context reporting Events as `crucible-controller` from `instance`.
    pub fn new(
        client: Client,
        config: Config,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: "crucible-controller".into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
        }
    }
}

/// Runs the Evaluation controller for one namespace (or all, with `None`) until shutdown.
/// `on_ready` fires once the Evaluation cache has synced.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    concurrency: u16,
    on_ready: impl FnOnce() + Send + 'static,
) {
    let (evaluations, pods): (Api<Evaluation>, Api<Pod>) = match namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    let managed = watcher::Config::default().labels(&format!("{}=true", identity::MANAGED_LABEL));
    let controller = Controller::new(evaluations, watcher::Config::default())
        .owns(pods, managed)
        .with_config(controller::Config::default().concurrency(concurrency))
        .shutdown_on_signal();
    let store = controller.store();
    let (sweep_store, metrics) = (store.clone(), ctx.metrics.clone());
    let scope = namespace.map(str::to_string);
    tokio::spawn(async move {
        // Deleted Evaluations never reach the reconciler; drop their series periodically.
        let mut tick = tokio::time::interval(METRICS_SWEEP);
        loop {
            tick.tick().await;
            let live = sweep_store
                .state()
                .iter()
                .filter_map(|e| e.metadata.uid.clone())
                .collect();
            metrics.retain_evaluations(scope.as_deref(), &live);
        }
    });
    tokio::spawn(async move {
        // NB: the store's readiness is a oneshot that wakes only its last poller, and the
        // controller polls it too; re-poll on a short timeout instead of waiting once.
        loop {
            match tokio::time::timeout(READY_POLL, store.wait_until_ready()).await {
                Ok(Ok(())) => return on_ready(),
                Ok(Err(_)) => return,
                Err(_) => continue,
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
