//! Starts the operator: caches (quotas, the emergency-stop switch, RuntimeClasses, and the
//! shared watches of Evaluations, suites and pods), the sandbox canary, the admission ledger
//! rebuilt from the synced caches, the quota status writer, the HTTP endpoints, and the
//! Evaluation and EvaluationSuite controllers. Talks to the API server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::admission::restore::Snapshot;
use crate::admission::{self, Gate};
use crate::cache::Caches;
use crate::cache::{Change, Indexed, lean};
use crate::canary::{self, Sandbox};
use crate::config::{Config, Runtime};
use crate::crd::EvaluationQuota;
use crate::evaluation::sandbox_policy::SandboxPolicies;
use crate::evaluation::{self, Context};
use crate::metrics::Metrics;
use crate::source::{FetchPool, GitCache};
use crate::stop::STOP_CONFIGMAP;
use crate::suite;
use crate::watches;
use crate::{events, http, leader, runner, system_namespace};

/// Longest wait for the next bytes of an API response (watches excepted): a slow or silent
/// API server fails a request instead of holding a worker.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// `config` with bounded reads, counted from each request sent (not from when its pooled
/// connection went idle).
fn bounded(mut config: kube::Config) -> kube::Config {
    config.read_timeout = Some(REQUEST_READ_TIMEOUT);
    config.reset_reader_on_write = true;
    config
}

/// Runs until SIGTERM / Ctrl-C.
///
/// # Errors
/// A sentence for the operator: API server unreachable, address in use, ledger not restorable.
pub async fn run(config: Config, runtime: Runtime) -> Result<(), String> {
    let unreachable = |e: &dyn std::fmt::Display| {
        format!("cannot reach the API server (kubeconfig or in-cluster config): {e}")
    };
    let kube_config = kube::Config::infer().await.map_err(|e| unreachable(&e))?;
    // Watches keep the default (no read timeout: the watcher has its own idle timeout);
    // every other request goes through a client whose reads are bounded.
    let client = Client::try_from(kube_config.clone()).map_err(|e| unreachable(&e))?;
    let requests = Client::try_from(bounded(kube_config)).map_err(|e| unreachable(&e))?;
    match system_namespace::ensure(&requests, &runtime.system_namespace).await? {
        system_namespace::Found::Created => {
            tracing::info!(namespace = %runtime.system_namespace, "system namespace created");
        }
        system_namespace::Found::Unknown => tracing::info!(
            namespace = %runtime.system_namespace,
            "may not read namespaces: assuming the system namespace exists"
        ),
        system_namespace::Found::Exists => {}
    }
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

    // Caches the reconciler reads: quotas (all namespaces), the stop switch, RuntimeClasses.
    let admission = Arc::new(Gate::default());
    // Quotas of all namespaces, indexed by namespace.
    let quotas: Arc<Indexed<EvaluationQuota>> = Arc::new(Indexed::new(1, ResourceExt::namespace));
    let (quota_gate, quota_store, quota_config) =
        (admission.clone(), quotas.clone(), config.clone());
    tokio::spawn(
        watches::watch(
            &client,
            &None,
            watcher::Config::default(),
            |q: &mut EvaluationQuota| lean::metadata(&mut q.metadata),
        )
        .for_each(move |event| {
            for change in quota_store.apply(None, event) {
                // A quota edit may admit queued runs of its namespace at once.
                if let Change::Applied { new: quota, .. } | Change::Deleted(quota) = change
                    && let Some(ns) = quota.namespace()
                {
                    let of_ns = quota_store.indexed(&ns);
                    let of_ns: Vec<&EvaluationQuota> = of_ns.iter().map(AsRef::as_ref).collect();
                    quota_gate.limits_changed(&of_ns, &ns, &quota_config);
                }
            }
            async {}
        }),
    );
    let (stop_switch, stop_writer) = reflector::store();
    let stop_api: Api<ConfigMap> = Api::namespaced(client.clone(), &runtime.system_namespace);
    let stop_watch = watcher::Config::default().fields(&format!("metadata.name={STOP_CONFIGMAP}"));
    let (stop_tx, mut stop_rx) = watch::channel(());
    // Runs held by the sandbox canary are looked at again when its verdict changes.
    let wake = stop_tx.clone();
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
    // One RuntimeClass watch: the cache the reconciles read, and what the canary proves.
    let (runtime_classes, class_writer) = reflector::store();
    let (class_tx, class_rx) = watch::channel(None);
    let mut fingerprints = canary::runner::ClassFingerprints::new(class_tx);
    let class_api: Api<RuntimeClass> = Api::all(client.clone());
    tokio::spawn(
        reflector(class_writer, watcher(class_api, watcher::Config::default()))
            .default_backoff()
            .for_each(move |event| {
                match event {
                    Ok(event) => fingerprints.apply(&event),
                    Err(error) => tracing::warn!(%error, "RuntimeClass watch failed; retrying"),
                }
                async {}
            }),
    );

    // Decide nothing from a cache that has not synced: right after a start, a missing quota
    // would read as the default and the emergency stop as clear (fail open).
    quotas.synced().await;
    stop_switch
        .wait_until_ready()
        .await
        .map_err(|e| format!("the emergency-stop cache stopped before it synced: {e}"))?;
    runtime_classes
        .wait_until_ready()
        .await
        .map_err(|e| format!("the RuntimeClass cache stopped before it synced: {e}"))?;
    tracing::info!("quota, emergency-stop and RuntimeClass caches synced");
    // This replica's pod: owner of the canary's objects in the system namespace, so the
    // garbage collector removes them with the last controller pod (never of the leader
    // Lease: see leader::try_take).
    let pod_owner = runtime.pod_uid.clone().map(|uid| OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: runtime.identity.clone(),
        uid,
        ..Default::default()
    });
    if let Some(lease) = &runtime.leader_lease {
        // A standby replica is healthy and ready; it only does not act.
        ready.store(true, Ordering::SeqCst);
        let api = leader::lease_api(requests.clone(), &runtime.system_namespace);
        let renewal = leader::acquire(&api, lease, &runtime.identity).await;
        let (lease, me) = (lease.clone(), runtime.identity.clone());
        tokio::spawn(async move {
            let why = leader::renew(&api, &lease, &me, renewal).await;
            // Another replica may act from now on: stop at once, never act twice.
            tracing::error!(%why, "leadership lost; exiting");
            std::process::exit(1);
        });
        ready.store(false, Ordering::SeqCst);
    }
    // One background Event sender for the canary and both controllers.
    let recorder = events::background(
        &requests,
        Some(runtime.identity.clone()),
        usize::from(runtime.concurrency),
    );
    // After leadership: a standby never runs canaries. Until the first verdict, every class
    // proven holds admission.
    let targets = canary::targets(&config, &runtime.canary);
    let sandbox = Arc::new(Sandbox::new(
        targets.iter().map(|(t, v)| (t.class.clone(), v.clone())),
        config.allow_unsandboxed,
        move || {
            let _ = wake.send(());
        },
        &Time(jiff::Timestamp::now()),
    ));
    // An owner in another namespace would be treated as missing: the canary's objects
    // would be collected at once.
    let same_namespace = runtime.pod_namespace.as_ref() == Some(&runtime.system_namespace);
    let runner = Arc::new(canary::runner::Runner::new(
        client.clone(),
        runtime.system_namespace.clone(),
        pod_owner.filter(|_| same_namespace),
        config.clone(),
        runtime.canary.clone(),
        sandbox.clone(),
        metrics.clone(),
        recorder.clone(),
    ));
    tokio::spawn(runner.run(targets.into_iter().map(|(t, _)| t).collect(), class_rx));
    let scopes: Vec<Option<String>> = if runtime.namespaces.is_empty() {
        vec![None]
    } else {
        runtime.namespaces.iter().cloned().map(Some).collect()
    };
    let caches = Arc::new(Caches::new(scopes.len()));
    let (evaluation_trigger, evaluation_triggers) = runner::channel();
    let (suite_trigger, suite_triggers) = runner::channel();
    admission.connect(evaluation_trigger.clone());
    let git = Arc::new(FetchPool::new(
        GitCache::new(runtime.git_cache_dir.clone(), runtime.git_cache_bytes)
            .allow_file_urls(runtime.allow_file_git_urls),
        config.follow_interval,
    ));
    git.connect(evaluation_trigger.clone());
    watches::spawn(
        &client,
        &scopes,
        &watches::Routes {
            caches: caches.clone(),
            evaluations: evaluation_trigger.clone(),
            suites: suite_trigger,
            admission: admission.clone(),
            metrics: metrics.clone(),
        },
    );
    // Which namespaces have their deny-all sandbox NetworkPolicy: one watch per scope.
    let sandbox_policies = Arc::new(SandboxPolicies::default());
    for scope in &scopes {
        tokio::spawn(
            sandbox_policies
                .clone()
                .watch(client.clone(), scope.clone()),
        );
    }
    caches.synced().await;
    tracing::info!(
        evaluations = caches.evaluations.len(),
        pods = caches.pods.len(),
        "Evaluation, suite and pod caches synced"
    );
    // The ledger is rebuilt from the synced caches before the first reconcile: the keys of
    // the initial lists wait in the work queues meanwhile.
    let snapshot = Snapshot::of(&caches);
    let restored = admission.restore(&snapshot, &config, &Time(jiff::Timestamp::now()));
    tracing::info!(restored, "admission ledger restored");
    let removed = evaluation::orphans::remove(&requests, &snapshot).await;
    if removed > 0 {
        tracing::info!(removed, "orphaned sandbox pods removed");
    }
    drop(snapshot);
    tokio::spawn(admission::quota_status::publish(
        requests.clone(),
        quotas.clone(),
        admission.clone(),
        config.clone(),
        metrics.clone(),
    ));
    let (everything, all_caches) = (evaluation_trigger, caches.clone());
    tokio::spawn(async move {
        while stop_rx.changed().await.is_ok() {
            for key in all_caches.evaluations.keys() {
                let _ = everything.send(key);
            }
        }
    });

    let suite_ctx = Arc::new(suite::Context::new(
        requests.clone(),
        metrics.clone(),
        recorder.clone(),
        caches.clone(),
    ));
    let ctx = Arc::new(Context {
        recorder,
        client: requests,
        config,
        metrics,
        admission,
        quotas,
        stop_switch,
        system_namespace: runtime.system_namespace.clone(),
        git,
        sandbox,
        caches,
        runtime_classes,
        sandbox_policies,
    });
    tracing::info!(namespaces = ?runtime.namespaces, runtime_class = %ctx.config.runtime_class, "crucible controller starting");
    ready.store(true, Ordering::SeqCst);
    let shutdown = runner::shutdown_signal().shared();
    futures::future::join(
        evaluation::run(
            ctx.clone(),
            evaluation_triggers,
            runtime.concurrency,
            shutdown.clone(),
        ),
        suite::run(suite_ctx, suite_triggers, runtime.concurrency, shutdown),
    )
    .await;
    if let Some(lease) = &runtime.leader_lease {
        let api = leader::lease_api(ctx.client.clone(), &runtime.system_namespace);
        leader::release(&api, lease, &runtime.identity).await;
    }
    tracing::info!("crucible controller stopped");
    Ok(())
}
