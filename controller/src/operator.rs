//! Starts the operator: caches (quotas, the emergency-stop switch), the admission ledger rebuilt
//! from the cluster, the quota status writer, the HTTP endpoints and one Evaluation controller
//! and one EvaluationSuite controller per watched namespace. Talks to the API server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::admission::restore::Snapshot;
use crate::admission::{self, Gate};
use crate::config::{Config, Runtime};
use crate::crd::EvaluationQuota;
use crate::evaluation::{self, Context};
use crate::metrics::Metrics;
use crate::source::GitCache;
use crate::stop::STOP_CONFIGMAP;
use crate::suite;
use crate::{events, http, leader};

/// Runs until SIGTERM / Ctrl-C.
///
/// # Errors
/// A sentence for the operator: API server unreachable, address in use, ledger not restorable.
pub async fn run(config: Config, runtime: Runtime) -> Result<(), String> {
    let client = Client::try_default().await.map_err(|e| {
        format!("cannot reach the API server (kubeconfig or in-cluster config): {e}")
    })?;
    let mut registry = Registry::with_prefix("crucible");
    let metrics = Arc::new(Metrics::new(runtime.score_series_limit).register(&mut registry));
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(runtime.metrics_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", runtime.metrics_addr))?;
    let endpoints = http::Endpoints {
        registry: Arc::new(registry),
        ready: ready.clone(),
    };
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, http::router(endpoints)).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });

    // Caches the reconciler reads: quotas (all namespaces) and the stop switch.
    let (quotas, quota_writer) = reflector::store();
    let quota_api: Api<EvaluationQuota> = Api::all(client.clone());
    tokio::spawn(
        reflector(quota_writer, watcher(quota_api, watcher::Config::default()))
            .default_backoff()
            .for_each(|_| async {}),
    );
    let (stop_switch, stop_writer) = reflector::store();
    let stop_api: Api<ConfigMap> = Api::namespaced(client.clone(), &runtime.system_namespace);
    let stop_watch = watcher::Config::default().fields(&format!("metadata.name={STOP_CONFIGMAP}"));
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::spawn(
        reflector(stop_writer, watcher(stop_api, stop_watch))
            .default_backoff()
            .touched_objects()
            .for_each(move |_| {
                // A change of the switch re-reconciles every Evaluation.
                let _ = stop_tx.send(());
                async {}
            }),
    );

    // Decide nothing from a cache that has not synced: right after a start, a missing quota
    // would read as the default and the emergency stop as clear (fail open).
    quotas
        .wait_until_ready()
        .await
        .map_err(|e| format!("the EvaluationQuota cache stopped before it synced: {e}"))?;
    stop_switch
        .wait_until_ready()
        .await
        .map_err(|e| format!("the emergency-stop cache stopped before it synced: {e}"))?;
    tracing::info!("quota and emergency-stop caches synced");
    if let Some(lease) = &runtime.leader_lease {
        // A standby replica is healthy and ready; it only does not act.
        ready.store(true, Ordering::SeqCst);
        let owner = runtime.pod_uid.clone().map(|uid| OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: runtime.identity.clone(),
            uid,
            ..Default::default()
        });
        let api = leader::lease_api(client.clone(), &runtime.system_namespace);
        let renewal = leader::acquire(&api, lease, &runtime.identity, owner.as_ref()).await;
        let (lease, me) = (lease.clone(), runtime.identity.clone());
        tokio::spawn(async move {
            let why = leader::renew(&api, &lease, &me, owner.as_ref(), renewal).await;
            // Another replica may act from now on: stop at once, never act twice.
            tracing::error!(%why, "leadership lost; exiting");
            std::process::exit(1);
        });
        ready.store(false, Ordering::SeqCst);
    }
    let admission = Arc::new(Gate::default());
    let namespaces: Vec<Option<String>> = if runtime.namespaces.is_empty() {
        vec![None]
    } else {
        runtime.namespaces.iter().cloned().map(Some).collect()
    };
    for ns in &namespaces {
        let snapshot = Snapshot::read(&client, ns.as_deref())
            .await
            .map_err(|e| format!("cannot rebuild the admission ledger: {e}"))?;
        let restored = admission.restore(&snapshot, &config, &Time(jiff::Timestamp::now()));
        tracing::info!(namespace = ?ns, restored, "admission ledger restored");
        let removed = evaluation::orphans::remove(&client, &snapshot).await;
        if removed > 0 {
            tracing::info!(namespace = ?ns, removed, "orphaned sandbox pods removed");
        }
    }
    tokio::spawn(admission::quota_status::publish(
        client.clone(),
        quotas.clone(),
        admission.clone(),
        config.clone(),
    ));

    let suite_ctx = Arc::new(suite::Context::new(
        client.clone(),
        metrics.clone(),
        events::recorder(&client, Some(runtime.identity.clone())),
    ));
    let ctx = Arc::new(Context {
        recorder: events::recorder(&client, Some(runtime.identity.clone())),
        client,
        config,
        metrics,
        admission,
        quotas,
        stop_switch,
        system_namespace: runtime.system_namespace.clone(),
        git: GitCache::new(runtime.git_cache_dir.clone(), runtime.git_cache_bytes)
            .allow_file_urls(runtime.allow_file_git_urls),
        sandbox_policies: Arc::default(),
    });
    tracing::info!(namespaces = ?runtime.namespaces, runtime_class = %ctx.config.runtime_class, "crucible controller starting");
    let pending = Arc::new(AtomicUsize::new(namespaces.len()));
    let namespaces_for_suites = namespaces.clone();
    let controllers = namespaces.into_iter().map(|ns| {
        let (ctx, ready, pending, stop_rx) =
            (ctx.clone(), ready.clone(), pending.clone(), stop_rx.clone());
        async move {
            let on_ready = move || {
                if pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                    ready.store(true, Ordering::SeqCst);
                }
            };
            evaluation::run(ctx, ns.as_deref(), runtime.concurrency, stop_rx, on_ready).await;
        }
    });
    let suites = namespaces_for_suites.into_iter().map(|ns| {
        let ctx = suite_ctx.clone();
        async move { suite::run(ctx, ns.as_deref(), runtime.concurrency).await }
    });
    futures::future::join(
        futures::future::join_all(controllers),
        futures::future::join_all(suites),
    )
    .await;
    if let Some(lease) = &runtime.leader_lease {
        let api = leader::lease_api(ctx.client.clone(), &runtime.system_namespace);
        leader::release(&api, lease, &runtime.identity).await;
    }
    tracing::info!("crucible controller stopped");
    Ok(())
}
