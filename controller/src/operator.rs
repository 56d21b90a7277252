//! Starts the operator: caches (quotas, the emergency-stop switch, RuntimeClasses, and the
//! shared watches of Evaluations, suites and pods), the sandbox canary, the admission ledger
//! rebuilt from the synced caches, the quota status writer, the HTTP endpoints, and the
//! Evaluation and EvaluationSuite controllers (and, with a model gateway, the ModelEndpoint
//! controller). Talks to the API server.

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
use crate::canary::{self, SandboxVerdicts};
use crate::config::{Config, Runtime};
use crate::crd::EvaluationQuota;
use crate::evaluation::sandbox_policy::SandboxPolicies;
use crate::evaluation::{self, Context};
use crate::gateway::notice::{GatewayClient, Notices};
use crate::metrics::Metrics;
use crate::source::{FetchPool, GitCache};
use crate::stop::STOP_CONFIGMAP;
use crate::store::Store;
use crate::suite;
use crate::transfer::Transfers;
use crate::watches;
use crate::{events, http, leader, model_endpoint, runner, system_namespace};

/// Longest wait for the next bytes of an API response (watches excepted): a slow or silent
/// API server fails a request instead of holding a worker.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// `config` with bounded reads, counted from each request sent (not from when its pooled
/// connection went idle).
pub fn bounded(mut config: kube::Config) -> kube::Config {
    config.read_timeout = Some(REQUEST_READ_TIMEOUT);
    config.reset_reader_on_write = true;
    config
}

/// Runs until SIGTERM / Ctrl-C: each part below is started by the function named for it, in
/// the order they depend on each other.
///
/// # Errors
/// A sentence for the operator: API server unreachable, address in use, ledger not restorable.
pub async fn run(mut config: Config, runtime: Runtime) -> Result<(), String> {
    // A results store that cannot be used stops the start with its reason, before any run.
    let store = match runtime.results_store.as_deref() {
        Some(url) => Some(Arc::new(Store::open(url).map_err(|e| e.to_string())?)),
        None => None,
    };
    let clients = connect().await?;
    ensure_system_namespace(&clients.requests, &runtime.system_namespace).await?;
    if let Some(flags) = &runtime.gateway {
        let gateway =
            crate::gateway::discovery::resolve(&clients.requests, &runtime.system_namespace, flags)
                .await?;
        tracing::info!(url = %gateway.base_url, "runs with models call the model gateway");
        config.gateway = Some(gateway);
    }
    if let Some(gate) = runtime.network_gate {
        let target = crate::network_gate::listen((runtime.canary.listen, gate.port).into())
            .await
            .map_err(|e| {
                format!(
                    "cannot open the network gate's listener on {}: {e}",
                    runtime.canary.listen
                )
            })?;
        tracing::info!(%target, "sandbox pods with a network wait for their NetworkPolicy");
        config.network_gate = Some(crate::config::NetworkGate {
            image: runtime.canary.image.clone(),
            target,
            timeout: gate.timeout,
        });
    }
    let mut registry = Registry::with_prefix("crucible");
    let metrics = Arc::new(Metrics::new(runtime.score_series_limit).register(&mut registry));
    let ready = serve_endpoints(&runtime, registry).await?;
    let admission = Arc::new(Gate::default());
    let quotas = watch_quotas(&clients.watches, &admission, &config);
    let (stop_switch, wake, stop_changed) = watch_stop_switch(&clients.watches, &runtime);
    let (runtime_classes, class_changes) = watch_runtime_classes(&clients.watches);
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
    lead(&clients.requests, &runtime, &ready).await;
    // One background Event sender for the canary and both controllers.
    let recorder = events::background(
        &clients.requests,
        Some(runtime.identity.clone()),
        usize::from(runtime.concurrency),
    );
    // After leadership: a standby never runs canaries.
    let sandbox = start_canary(
        &clients.watches,
        &config,
        &runtime,
        &metrics,
        &recorder,
        wake,
        class_changes,
    );
    let scopes: Vec<Option<String>> = if runtime.namespaces.is_empty() {
        vec![None]
    } else {
        runtime.namespaces.iter().cloned().map(Some).collect()
    };
    let caches = Arc::new(Caches::new(scopes.len()));
    let (evaluation_trigger, evaluation_triggers) = runner::channel();
    let (suite_trigger, suite_triggers) = runner::channel();
    admission.connect(evaluation_trigger.clone());
    let git = start_git(&runtime, &config, &evaluation_trigger);
    // After leadership: only the leader sweeps.
    if let (Some(store), Some(retention)) = (&store, runtime.results_retention) {
        tokio::spawn(crate::store::retention::keep_pruning(
            store.clone(),
            retention,
        ));
    }
    let transfers = store.map(|store| Transfers::new(store, evaluation_trigger.clone()));
    let notices = config
        .gateway
        .clone()
        .map(|gateway| Notices::new(GatewayClient::new(gateway), evaluation_trigger.clone()));
    watches::spawn(
        &clients.watches,
        &scopes,
        &watches::Routes {
            caches: caches.clone(),
            evaluations: evaluation_trigger.clone(),
            suites: suite_trigger,
            admission: admission.clone(),
            metrics: metrics.clone(),
        },
    );
    let sandbox_policies = watch_sandbox_policies(&clients.watches, &scopes);
    caches.synced().await;
    tracing::info!(
        evaluations = caches.evaluations.len(),
        pods = caches.pods.len(),
        "Evaluation, suite and pod caches synced"
    );
    restore(&clients.requests, &admission, &caches, &config).await;
    tokio::spawn(admission::quota_status::publish(
        clients.requests.clone(),
        quotas.clone(),
        admission.clone(),
        config.clone(),
        metrics.clone(),
    ));
    // With a gateway: the ModelEndpoints' Ready condition.
    let endpoints = config.gateway.is_some().then(|| {
        Arc::new(model_endpoint::Context::new(
            clients.requests.clone(),
            metrics.clone(),
            caches.clone(),
            evaluation_trigger.clone(),
            scopes.len(),
        ))
    });
    rereconcile_on_stop(stop_changed, evaluation_trigger, caches.clone());

    let suite_ctx = Arc::new(suite::Context::new(
        clients.requests.clone(),
        metrics.clone(),
        recorder.clone(),
        caches.clone(),
    ));
    let ctx = Arc::new(Context {
        recorder,
        client: clients.requests,
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
        transfers,
        notices,
    });
    tracing::info!(namespaces = ?runtime.namespaces, runtime_class = %ctx.config.runtime_class, "crucible controller starting");
    ready.store(true, Ordering::SeqCst);
    let shutdown = runner::shutdown_signal().shared();
    let endpoints = async {
        if let Some(endpoints) = endpoints {
            let concurrency = runtime.concurrency;
            model_endpoint::run(
                endpoints,
                &clients.watches,
                &scopes,
                concurrency,
                shutdown.clone(),
            )
            .await;
        }
    };
    futures::future::join3(
        evaluation::run(
            ctx.clone(),
            evaluation_triggers,
            runtime.concurrency,
            shutdown.clone(),
        ),
        suite::run(
            suite_ctx,
            suite_triggers,
            runtime.concurrency,
            shutdown.clone(),
        ),
        endpoints,
    )
    .await;
    if let Some(lease) = &runtime.leader_lease {
        let api = leader::lease_api(ctx.client.clone(), &runtime.system_namespace);
        leader::release(&api, lease, &runtime.identity).await;
    }
    tracing::info!("crucible controller stopped");
    Ok(())
}

/// The two clients: watches keep the default (no read timeout: the watcher has its own idle
/// timeout); every other request goes through a client whose reads are bounded.
struct Clients {
    watches: Client,
    requests: Client,
}

async fn connect() -> Result<Clients, String> {
    let unreachable = |e: &dyn std::fmt::Display| {
        format!("cannot reach the API server (kubeconfig or in-cluster config): {e}")
    };
    let kube_config = kube::Config::infer().await.map_err(|e| unreachable(&e))?;
    Ok(Clients {
        watches: Client::try_from(kube_config.clone()).map_err(|e| unreachable(&e))?,
        requests: Client::try_from(bounded(kube_config)).map_err(|e| unreachable(&e))?,
    })
}

async fn ensure_system_namespace(client: &Client, namespace: &str) -> Result<(), String> {
    match system_namespace::ensure(client, namespace).await? {
        system_namespace::Found::Created => {
            tracing::info!(%namespace, "system namespace created");
        }
        system_namespace::Found::Unknown => tracing::info!(
            %namespace,
            "may not read namespaces: assuming the system namespace exists"
        ),
        system_namespace::Found::Exists => {}
    }
    Ok(())
}

/// `/metrics`, `/healthz` and `/readyz`; returns the readiness flag.
async fn serve_endpoints(runtime: &Runtime, registry: Registry) -> Result<Arc<AtomicBool>, String> {
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
    Ok(ready)
}

/// Quotas of all namespaces, indexed by namespace; an edit may admit queued runs at once.
fn watch_quotas(
    client: &Client,
    admission: &Arc<Gate>,
    config: &Config,
) -> Arc<Indexed<EvaluationQuota>> {
    let quotas: Arc<Indexed<EvaluationQuota>> = Arc::new(Indexed::new(1, ResourceExt::namespace));
    let (quota_gate, quota_store, quota_config) =
        (admission.clone(), quotas.clone(), config.clone());
    tokio::spawn(
        watches::watch(
            client,
            &None,
            watcher::Config::default(),
            |q: &mut EvaluationQuota| lean::metadata(&mut q.metadata),
        )
        .for_each(move |event| {
            for change in quota_store.apply(None, event) {
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
    quotas
}

/// The emergency-stop switch, and a signal on every change of it: the receiver, and a sender
/// through which the canary signals its verdicts' changes too ([`start_canary`]).
fn watch_stop_switch(
    client: &Client,
    runtime: &Runtime,
) -> (
    reflector::Store<ConfigMap>,
    watch::Sender<()>,
    watch::Receiver<()>,
) {
    let (stop_switch, stop_writer) = reflector::store();
    let stop_api: Api<ConfigMap> = Api::namespaced(client.clone(), &runtime.system_namespace);
    let stop_watch = watcher::Config::default().fields(&format!("metadata.name={STOP_CONFIGMAP}"));
    let (stop_tx, changed) = watch::channel(());
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
    (stop_switch, wake, changed)
}

/// One RuntimeClass watch: the cache the reconciles read, and the fingerprints the canary
/// proves again when they change.
fn watch_runtime_classes(
    client: &Client,
) -> (
    reflector::Store<RuntimeClass>,
    watch::Receiver<canary::classes::Classes>,
) {
    let (runtime_classes, class_writer) = reflector::store();
    let (class_tx, class_rx) = watch::channel(None);
    let mut fingerprints = canary::classes::ClassFingerprints::new(class_tx);
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
    (runtime_classes, class_rx)
}

/// With `--leader-election`: waits for the Lease, then keeps it (exits when it is lost).
/// A standby replica is healthy and ready meanwhile; it only does not act.
async fn lead(client: &Client, runtime: &Runtime, ready: &AtomicBool) {
    let Some(lease) = &runtime.leader_lease else {
        return;
    };
    ready.store(true, Ordering::SeqCst);
    let api = leader::lease_api(client.clone(), &runtime.system_namespace);
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

/// The sandbox canary: until its first verdict, every class it proves holds admission; runs
/// it holds are looked at again (through `wake`) when a verdict changes.
fn start_canary(
    client: &Client,
    config: &Config,
    runtime: &Runtime,
    metrics: &Arc<Metrics>,
    recorder: &events::Recorder,
    wake: watch::Sender<()>,
    class_changes: watch::Receiver<canary::classes::Classes>,
) -> Arc<SandboxVerdicts> {
    let targets = canary::targets(config, &runtime.canary);
    let sandbox = Arc::new(SandboxVerdicts::new(
        targets.iter().map(|(t, v)| (t.class.clone(), v.clone())),
        config.allow_unsandboxed,
        move || {
            let _ = wake.send(());
        },
        &Time(jiff::Timestamp::now()),
    ));
    // This replica's pod owns the canary's objects in the system namespace, so the garbage
    // collector removes them with the last controller pod (never the leader Lease: see
    // leader::try_take). An owner in another namespace would be treated as missing: the
    // canary's objects would be collected at once.
    let same_namespace = runtime.pod_namespace.as_ref() == Some(&runtime.system_namespace);
    let pod_owner = runtime
        .pod_uid
        .clone()
        .filter(|_| same_namespace)
        .map(|uid| OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: runtime.identity.clone(),
            uid,
            ..Default::default()
        });
    let scheduler = Arc::new(canary::scheduler::Scheduler::new(
        client.clone(),
        runtime.system_namespace.clone(),
        pod_owner,
        config.clone(),
        runtime.canary.clone(),
        sandbox.clone(),
        metrics.clone(),
        recorder.clone(),
    ));
    tokio::spawn(scheduler.run(targets.into_iter().map(|(t, _)| t).collect(), class_changes));
    sandbox
}

/// The git fetch pool; a finished fetch wakes its Evaluation.
fn start_git(runtime: &Runtime, config: &Config, wake: &runner::Trigger) -> Arc<FetchPool> {
    let git = Arc::new(FetchPool::new(
        GitCache::new(runtime.git_cache_dir.clone(), runtime.git_cache_bytes)
            .allow_file_urls(runtime.allow_file_git_urls),
        config.follow_interval,
    ));
    git.connect(wake.clone());
    git
}

/// Which namespaces have their deny-all sandbox NetworkPolicy: one watch per scope.
fn watch_sandbox_policies(client: &Client, scopes: &[Option<String>]) -> Arc<SandboxPolicies> {
    let sandbox_policies = Arc::new(SandboxPolicies::default());
    for scope in scopes {
        tokio::spawn(
            sandbox_policies
                .clone()
                .watch(client.clone(), scope.clone()),
        );
    }
    sandbox_policies
}

/// The ledger is rebuilt from the synced caches before the first reconcile (the keys of the
/// initial lists wait in the work queues meanwhile), and pods of deleted runs are removed.
async fn restore(client: &Client, admission: &Gate, caches: &Caches, config: &Config) {
    let snapshot = Snapshot::of(caches);
    let restored = admission.restore(&snapshot, config, &Time(jiff::Timestamp::now()));
    tracing::info!(restored, "admission ledger restored");
    let removed = evaluation::orphans::remove(client, &snapshot).await;
    if removed > 0 {
        tracing::info!(removed, "orphaned sandbox pods removed");
    }
}

/// A change of the emergency stop or of a canary verdict re-reconciles every Evaluation,
/// those with a pod first (a stop's cancellations before the queued runs' new reasons).
fn rereconcile_on_stop(
    mut changes: watch::Receiver<()>,
    evaluations: runner::Trigger,
    caches: Arc<Caches>,
) {
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            for key in caches.evaluation_keys_running_first() {
                let _ = evaluations.send(key);
            }
        }
    });
}
