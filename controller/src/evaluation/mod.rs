//! The Evaluation controller: watches Evaluations and the pods they own, and runs each
//! reconcile through observe → plan → apply → report.

pub mod admit;
pub mod apply;
pub mod credentials;
pub mod identity;
pub mod observe;
pub mod orphans;
pub mod phase;
pub mod plan;
pub mod pod;
pub mod reconcile;
pub mod report;
pub mod results;
pub mod validate;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::config::Config;
use crate::crd::{Evaluation, EvaluationQuota};
use crate::evaluation::admit::Admission;
use crate::metrics::Metrics;
use crate::source::GitCache;
use crate::stop::{STOP_CONFIGMAP, Switch};

/// How often readiness of the cache is re-checked.
const READY_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// How often metrics and admissions of deleted Evaluations are dropped.
const SWEEP: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// The admission ledger.
    pub admission: Arc<Admission>,
    /// Cache of EvaluationQuotas.
    pub quotas: Store<EvaluationQuota>,
    /// Cache of the emergency-stop ConfigMap.
    pub stop_switch: Store<ConfigMap>,
    /// Namespace of the emergency-stop ConfigMap.
    pub system_namespace: String,
    /// Cache of git repositories.
    pub git: GitCache,
}

/// The shared state a [`Context`] is built from, besides the client.
pub struct Shared {
    /// Planning settings.
    pub config: Config,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The admission ledger.
    pub admission: Arc<Admission>,
    /// Cache of EvaluationQuotas.
    pub quotas: Store<EvaluationQuota>,
    /// Cache of the emergency-stop ConfigMap.
    pub stop_switch: Store<ConfigMap>,
    /// Namespace of the emergency-stop ConfigMap.
    pub system_namespace: String,
    /// Pod name of this replica, for Event reporting.
    pub instance: Option<String>,
    /// Cache of git repositories.
    pub git: GitCache,
}

impl Context {
    /// A context reporting Events as `crucible-controller`.
    pub fn new(client: Client, shared: Shared) -> Self {
        let Shared {
            config,
            metrics,
            admission,
            quotas,
            stop_switch,
            system_namespace,
            instance,
            git,
        } = shared;
        let reporter = Reporter {
            controller: "crucible-controller".into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            admission,
            quotas,
            stop_switch,
            system_namespace,
            git,
        }
    }

    /// The emergency-stop switch as the cache holds it.
    pub fn stop_switch(&self) -> Switch {
        let key = ObjectRef::new(STOP_CONFIGMAP).within(&self.system_namespace);
        Switch::from_configmap(self.stop_switch.get(&key).as_deref())
    }
}

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
    let (evaluations, pods): (Api<Evaluation>, Api<Pod>) = match namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    let managed = watcher::Config::default().labels(&format!("{}=true", identity::MANAGED_LABEL));
    let stop_changes = futures::stream::unfold(stop_changes, |mut rx| async move {
        rx.changed().await.ok().map(|()| ((), rx))
    });
    let controller = Controller::new(evaluations, watcher::Config::default())
        .owns(pods, managed)
        .reconcile_all_on(stop_changes)
        .with_config(controller::Config::default().concurrency(concurrency))
        .shutdown_on_signal();
    let store = controller.store();
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
        // Deleted Evaluations never reach the reconciler: drop their metric series and
        // admissions periodically (only once the cache is complete, or restored admissions
        // would be dropped).
        let mut tick = tokio::time::interval(SWEEP);
        loop {
            tick.tick().await;
            let live = store
                .state()
                .iter()
                .filter_map(|e| e.metadata.uid.clone())
                .collect();
            sweep_ctx
                .metrics
                .retain_evaluations(scope.as_deref(), &live);
            sweep_ctx.admission.retain(scope.as_deref(), &live);
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
