//! Runs the canaries: one loop per proven RuntimeClass (at start, every `--canary-interval`
//! while verified, every minute while not, and at once when the RuntimeClass changes), the
//! listener each run connects to, and what follows a verdict: the shared [`SandboxVerdicts`],
//! the ConfigMap, metrics, Events and logs. One run's pod, from creation to removal (bounded by
//! `--canary-timeout`, always cleaned up), is [`attempt`]. Talks to the API server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::events::Recorder;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::watch;

use super::classes::{Classes, Seen, changed_from, fingerprint, follow_runtime_classes, moved};
use super::listeners::Listeners;
use super::probe::{self, COMPONENT, Run};
use super::verdict::{Expectation, Observation, Stage, judge, settle};
use super::{SandboxVerdicts, Target, Verdict, status};
use crate::config::CanarySettings;
use crate::config::Config;
use crate::crd::evaluation::NetworkMode;
use crate::digest::sha256_hex;
use crate::events::{self, Note, Severity};
use crate::metrics::Metrics;
use crate::run::models::Gateway;
use crate::ssa;

mod attempt;

/// Interval between two runs while a class is not verified: soon enough that a fixed node is
/// noticed within a minute, rare enough not to churn pods.
const RETRY: Duration = Duration::from_secs(60);
/// Most leftover canary pods (and policies) removed at one start.
const LEFTOVERS_LISTED: u32 = 100;
/// Time beyond `--canary-timeout` for the API calls around the pod's run.
pub(super) const API_SLACK: Duration = Duration::from_secs(30);

/// The canary scheduler of one controller.
pub struct Scheduler {
    client: Client,
    namespace: String,
    /// The controller's pod, owner of the canary's objects (when in the same namespace).
    owner: Option<OwnerReference>,
    config: Config,
    settings: CanarySettings,
    sandbox: Arc<SandboxVerdicts>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    /// The controller's own `/proc/version`: a sandbox showing it is not gVisor.
    host_kernel: Option<String>,
    /// Serializes ConfigMap writes, so an older record never overwrites a newer one.
    writing: tokio::sync::Mutex<()>,
}

impl Scheduler {
    /// A scheduler in `namespace` (the system namespace) recording into `sandbox`.
    #[allow(clippy::too_many_arguments)] // each is one piece of the controller's wiring
    pub fn new(
        client: Client,
        namespace: String,
        owner: Option<OwnerReference>,
        config: Config,
        settings: CanarySettings,
        sandbox: Arc<SandboxVerdicts>,
        metrics: Arc<Metrics>,
        recorder: Recorder,
    ) -> Self {
        Scheduler {
            client,
            namespace,
            owner,
            config,
            settings,
            sandbox,
            metrics,
            recorder,
            host_kernel: std::fs::read_to_string("/proc/version").ok(),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// Publishes the initial record, then proves every target that has a network mode, for
    /// as long as the controller runs, again whenever `classes` shows its RuntimeClass changed.
    pub async fn run(self: Arc<Self>, targets: Vec<Target>, classes: watch::Receiver<Classes>) {
        self.publish().await;
        let proven: Vec<(String, NetworkMode)> = targets
            .into_iter()
            .filter_map(|t| Some((t.class, t.network?)))
            .collect();
        if proven.is_empty() {
            return;
        }
        self.remove_leftovers().await;
        let mut changes = BTreeMap::new();
        for (class, network) in proven {
            let (tx, rx) = watch::channel(None);
            changes.insert(class.clone(), tx);
            tokio::spawn(self.clone().prove(class, network, rx));
        }
        follow_runtime_classes(changes, classes).await;
    }

    /// The loop of one class.
    async fn prove(
        self: Arc<Self>,
        class: String,
        network: NetworkMode,
        mut changes: watch::Receiver<Seen>,
    ) {
        // Inconclusive runs in a row.
        let mut streak = 0;
        loop {
            let (seen, run) = self.run_once(&class, network).await;
            if moved(&changes.borrow_and_update(), &seen) {
                // The pod ran under the class as it was: that proves nothing about it now.
                let why = "the RuntimeClass changed while the canary ran; proving it again";
                self.record(&class, Verdict::Pending(why.into())).await;
                continue;
            }
            streak = if run.is_err() { streak + 1 } else { 0 };
            if let Err(why) = &run {
                tracing::warn!(runtime_class = class, %why, streak, "the sandbox canary proved nothing; the last verdict stands");
            }
            let next = settle(self.sandbox.verdict(&class).as_ref(), run, streak);
            let delay = match &next {
                Some(Verdict::Verified(_)) => self.settings.interval,
                // Inconclusive: try again soon rather than wait a whole interval.
                _ => self.settings.interval.min(RETRY),
            };
            if let Some(verdict) = next {
                self.record(&class, verdict).await;
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = changed_from(&mut changes, &seen) => {
                    let why = format!("the RuntimeClass {class} changed; proving it again");
                    self.record(&class, Verdict::Pending(why)).await;
                }
            }
        }
    }

    /// One canary run of `class`: what the RuntimeClass was, and the verdict; `Err` when the
    /// run proved nothing about the sandbox (see [`settle`]).
    async fn run_once(&self, class: &str, network: NetworkMode) -> (Seen, Result<Verdict, String>) {
        let classes: Api<RuntimeClass> = Api::all(self.client.clone());
        let not_run = |step, message: String| Observation::NotRun { step, message };
        // Runs with models use the Allowlist class: its canary proves their path as well.
        let gateway = self
            .config
            .gateway
            .as_ref()
            .filter(|_| network == NetworkMode::Allowlist)
            .and_then(|g| Some((Gateway::from(g), probe::gateway_address(&g.base_url)?)));
        let gateway_target = gateway.as_ref().map(|(_, addr)| addr.to_string());
        let nonce = nonce(class);
        let id = &nonce[..12];
        let read = tokio::time::timeout(API_SLACK, classes.get_opt(class))
            .await
            .unwrap_or_else(|_| Err(kube::Error::Service("no answer in time".into())));
        let (seen, outcome, targets) = match read {
            Ok(None) => (
                Some(None),
                not_run(
                    Stage::RuntimeClass,
                    format!("the RuntimeClass {class} does not exist"),
                ),
                None,
            ),
            // A timeout, 403 or 500 says nothing about whether the class exists.
            Err(error) => {
                return (
                    None,
                    Err(format!("cannot read the RuntimeClass {class}: {error}")),
                );
            }
            Ok(Some(rc)) => {
                let seen = Some(Some(fingerprint(&rc)));
                match Listeners::open(self.settings.listen, probe::greeting(&nonce)).await {
                    Err(error) => (
                        seen,
                        not_run(
                            Stage::Listener,
                            format!(
                                "cannot listen on {}: {error} (--canary-listen-address must be an address of this controller that pods reach)",
                                self.settings.listen
                            ),
                        ),
                        None,
                    ),
                    Ok(listeners) => {
                        let name = format!("crucible-canary-{id}");
                        let gateway = gateway.clone();
                        let run = Run {
                            name: &name,
                            id,
                            namespace: &self.namespace,
                            owner: self.owner.as_ref(),
                            runtime_class: class,
                            network,
                            listener: listeners.listed,
                            unlisted: listeners.unlisted,
                            gateway,
                            image: &self.settings.image,
                            timeout_seconds: i64::try_from(self.settings.timeout.as_secs())
                                .unwrap_or(i64::MAX)
                                .max(1),
                        };
                        tracing::debug!(
                            runtime_class = class,
                            pod = name,
                            "sandbox canary starting"
                        );
                        let outcome = match self.execute(&run).await {
                            Ok(outcome) => outcome,
                            Err(why) => return (seen, Err(why)),
                        };
                        (seen, outcome, Some((listeners.listed, listeners.unlisted)))
                    }
                }
            }
        };
        let (listener, unlisted) = targets.map_or((String::new(), String::new()), |(l, u)| {
            (l.to_string(), u.to_string())
        });
        let expect = Expectation {
            network,
            listener: &listener,
            unlisted: &unlisted,
            gateway: gateway_target.as_deref(),
            nonce: &nonce,
            host_kernel: self.host_kernel.as_deref(),
        };
        (seen, Ok(judge(&expect, &outcome)))
    }

    /// Records `verdict` for `class` and tells everyone: logs, metrics, the ConfigMap, Events.
    async fn record(&self, class: &str, verdict: Verdict) {
        match &verdict {
            Verdict::Failed { check, message } => {
                tracing::warn!(runtime_class = class, check = check.name(), why = %message, "sandbox canary failed: runs of this class are held");
                self.metrics.sandbox_canary_failed(class, check.name());
            }
            Verdict::Verified(proven) => {
                tracing::info!(runtime_class = class, %proven, "sandbox verified");
            }
            Verdict::Pending(why) => {
                tracing::info!(runtime_class = class, %why, "sandbox unverified")
            }
            Verdict::Unchecked { .. } => {}
        }
        let released = self
            .sandbox
            .record(class, verdict.clone(), &Time(jiff::Timestamp::now()));
        let Some(reference) = self.publish().await else {
            return;
        };
        let note = match verdict {
            Verdict::Failed { check, message } => Note {
                severity: Severity::Warning,
                reason: "SandboxUnverified",
                message: format!("{class}: {}: {message}", check.name()),
            },
            Verdict::Verified(proven) if released => Note {
                severity: Severity::Normal,
                reason: "SandboxVerified",
                message: format!("{class}: {proven}"),
            },
            _ => return,
        };
        events::publish(&self.recorder, &reference, &[note]).await;
    }

    /// Writes the ConfigMap from the current verdicts and sets the verified gauges; returns a
    /// reference to the ConfigMap for Events.
    async fn publish(&self) -> Option<ObjectReference> {
        let _writing = self.writing.lock().await;
        let entries = self.sandbox.entries();
        for (class, verdict, _) in &entries {
            self.metrics
                .set_sandbox_verified(class, matches!(verdict, Verdict::Verified(_)));
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let cm = status::config_map(&self.namespace, self.owner.as_ref(), &entries);
        match ssa::apply(&api, ssa::CANARY_MANAGER, &cm).await {
            Ok(cm) => Some(cm.object_ref(&())),
            Err(error) => {
                tracing::warn!(%error, namespace = self.namespace, "cannot write the {} ConfigMap", status::CONFIGMAP);
                None
            }
        }
    }

    /// Deletes canary pods and policies a previous controller left behind (it was stopped
    /// while a canary ran).
    async fn remove_leftovers(&self) {
        // A few at most (one per class per stopped controller); the next start takes any rest.
        let params = ListParams::default()
            .labels(&format!("app.kubernetes.io/component={COMPONENT}"))
            .limit(LEFTOVERS_LISTED);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let policies: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), &self.namespace);
        match pods.list(&params).await {
            Ok(list) => {
                for pod in list.items {
                    if let Err(error) = ssa::delete(&pods, &pod.name_any()).await {
                        tracing::warn!(%error, pod = pod.name_any(), "cannot delete a leftover canary pod");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list leftover canary pods"),
        }
        match policies.list(&params).await {
            Ok(list) => {
                for policy in list.items {
                    if let Err(error) = ssa::delete(&policies, &policy.name_any()).await {
                        tracing::warn!(%error, policy = policy.name_any(), "cannot delete a leftover canary NetworkPolicy");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list leftover canary NetworkPolicies"),
        }
    }
}

/// A fresh nonce (hex): names the run's pod and is what the listener greets with.
fn nonce(class: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    sha256_hex(format!("{now}/{}/{n}/{class}", std::process::id()).as_bytes())[..32].to_string()
}

#[cfg(test)]
mod tests {
    use http::Method;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use tokio::task::JoinHandle;

    use super::*;
    use crate::canary::Check;
    use crate::fixtures::{ApiServerVerifier, pod_list, status_error};

    const RUNTIME_CLASS: &str = "/apis/node.k8s.io/v1/runtimeclasses/gvisor";
    const PODS: &str = "/api/v1/namespaces/crucible-system/pods";
    const POLICIES: &str = "/apis/networking.k8s.io/v1/namespaces/crucible-system/networkpolicies";

    /// A scheduler against the mock API server, listening on loopback.
    fn scheduler() -> (Scheduler, ApiServerVerifier) {
        let (client, api) = ApiServerVerifier::client();
        let settings = CanarySettings {
            enabled: true,
            allowlist: true,
            interval: Duration::from_secs(600),
            timeout: Duration::from_secs(60),
            schedule_grace: Duration::from_secs(300),
            image: "localhost/crucible/controller:dev".into(),
            listen: "127.0.0.1".parse().expect("ip"),
        };
        let scheduler = Scheduler::new(
            client.clone(),
            "crucible-system".into(),
            None,
            Config::default(),
            settings,
            Arc::new(SandboxVerdicts::unchecked()),
            Arc::default(),
            crate::events::recorder(&client, None),
        );
        (scheduler, api)
    }

    fn runtime_class() -> serde_json::Value {
        serde_json::json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": "gvisor", "uid": "rc-1"}, "handler": "runsc"})
    }

    /// A run's first two requests: the RuntimeClass read, then its policy's create; returns
    /// the name the run chose (its pod has the same).
    async fn expect_class_and_policy(api: &mut ApiServerVerifier) -> String {
        api.expect(Method::GET, RUNTIME_CLASS, 200, runtime_class())
            .await;
        let policy = api
            .expect(
                Method::POST,
                POLICIES,
                201,
                serde_json::json!({"metadata": {"name": "p"}}),
            )
            .await;
        policy.body["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string()
    }

    fn failure(verdict: Result<Verdict, String>) -> (Check, String) {
        match verdict {
            Ok(Verdict::Failed { check, message }) => (check, message),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_missing_runtime_class_fails_without_creating_anything() {
        let (scheduler, mut api) = scheduler();
        let server = tokio::spawn(async move {
            api.expect(
                Method::GET,
                RUNTIME_CLASS,
                404,
                status_error(404, "not found"),
            )
            .await;
            api.expect_silence().await;
        });
        let (seen, verdict) = scheduler.run_once("gvisor", NetworkMode::None).await;
        server.await.expect("scenario");
        assert_eq!(seen, Some(None), "known to be absent");
        let (check, message) = failure(verdict);
        assert_eq!(check, Check::RuntimeClass);
        assert_eq!(message, "the RuntimeClass gvisor does not exist");
    }

    /// A stateful fake API server for a whole canary run whose pod stays `pod` (its watch
    /// fails, so the watcher lists again after a backoff); records every request.
    fn fake_server(
        api: ApiServerVerifier,
        pod: Pod,
        requests: Arc<std::sync::Mutex<Vec<String>>>,
    ) -> JoinHandle<()> {
        tokio::spawn(api.serve(move |method, uri, body| {
            requests
                .lock()
                .expect("lock")
                .push(format!("{method} {uri}"));
            let mut pod = pod.clone();
            match (method, uri) {
                (&Method::GET, u) if u.starts_with(RUNTIME_CLASS) => (200, runtime_class()),
                (&Method::POST, _) => {
                    pod.metadata.name = body["metadata"]["name"].as_str().map(str::to_string);
                    (201, body.clone())
                }
                (&Method::GET, u) if u.contains("watch=true") => {
                    (500, status_error(500, "watch unavailable"))
                }
                (&Method::GET, u) if u.starts_with(PODS) => {
                    let mut list = pod_list(&[pod]);
                    list["metadata"]["resourceVersion"] = "7".into();
                    (200, list)
                }
                _ => (200, serde_json::json!({})),
            }
        }))
    }

    /// A node pool scaling up from zero: the canary pod is unschedulable at first, and the
    /// class fails only after the scheduling grace (virtual time), then is cleaned up.
    #[tokio::test(start_paused = true)]
    async fn an_unschedulable_canary_waits_for_the_scheduling_grace_then_fails() {
        let (scheduler, api) = scheduler();
        let stuck = Pod {
            metadata: kube::api::ObjectMeta {
                namespace: Some("crucible-system".into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some("0/1 nodes are available: 1 node(s) had taint".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let server = fake_server(api, stuck, requests.clone());
        let started = tokio::time::Instant::now();
        let (seen, verdict) = scheduler.run_once("gvisor", NetworkMode::None).await;
        let took = started.elapsed();
        server.abort();
        assert!(matches!(seen, Some(Some(_))));
        let (check, message) = failure(verdict);
        assert_eq!(check, Check::Pod);
        assert!(
            message.contains("cannot be scheduled: 0/1 nodes"),
            "{message}"
        );
        assert!(
            took >= Duration::from_secs(300) && took < Duration::from_secs(360),
            "failed after {took:?}, the grace is 300 s"
        );
        let requests = requests.lock().expect("lock");
        for path in [PODS, POLICIES] {
            assert!(
                requests
                    .iter()
                    .any(|r| r.starts_with("DELETE") && r.contains(path)),
                "{path} cleaned up: {requests:?}"
            );
        }
    }

    /// Errors that say nothing about the sandbox (the RuntimeClass unreadable: no answer,
    /// 403, 500; a 429 on the pod) end the run inconclusive, never as "missing".
    #[tokio::test(start_paused = true)]
    async fn api_errors_prove_nothing_about_the_sandbox() {
        for code in [403, 500] {
            let (canary, mut api) = scheduler();
            let server = tokio::spawn(async move {
                api.answer(Method::GET, RUNTIME_CLASS, code, status_error(code, "no"))
                    .await;
                api
            });
            let (seen, verdict) = canary.run_once("gvisor", NetworkMode::None).await;
            let api = server.await.expect("scenario");
            assert_eq!(seen, None, "{code}: nothing is known of the class");
            let why = verdict.expect_err("inconclusive");
            assert!(why.contains("cannot read the RuntimeClass gvisor"), "{why}");
            api.expect_silence().await;
        }
        let (canary, api) = scheduler();
        let server = tokio::spawn(api.stall());
        let (seen, verdict) = canary.run_once("gvisor", NetworkMode::None).await;
        server.abort();
        assert_eq!(seen, None);
        assert!(verdict.is_err(), "no answer: {verdict:?}");
        let (canary, mut api) = scheduler();
        let server = tokio::spawn(async move {
            api.answer(Method::GET, RUNTIME_CLASS, 200, runtime_class())
                .await;
            let policy = serde_json::json!({"metadata": {"name": "p"}});
            let policy = api.answer(Method::POST, POLICIES, 201, policy).await;
            let name = policy.body["metadata"]["name"]
                .as_str()
                .expect("name")
                .to_string();
            let busy = status_error(429, "too many requests");
            api.answer(Method::POST, PODS, 429, busy).await;
            let gone = status_error(404, "gone");
            api.answer(Method::DELETE, &format!("{PODS}/{name}"), 404, gone)
                .await;
            let deleted = serde_json::json!({});
            api.answer(Method::DELETE, &format!("{POLICIES}/{name}"), 200, deleted)
                .await;
        });
        let (_, verdict) = canary.run_once("gvisor", NetworkMode::None).await;
        server.await.expect("scenario");
        let why = verdict.expect_err("a 429 is inconclusive");
        assert!(why.contains("too many requests"), "{why}");
    }

    /// An API server that stops answering once the pod is created: the run still ends,
    /// inconclusive, within its bounds (virtual time).
    #[tokio::test(start_paused = true)]
    async fn a_run_against_a_stalled_api_server_ends_inconclusive_instead_of_hanging() {
        let (scheduler, mut api) = scheduler();
        let server = tokio::spawn(async move {
            api.answer(Method::GET, RUNTIME_CLASS, 200, runtime_class())
                .await;
            api.answer(
                Method::POST,
                POLICIES,
                201,
                serde_json::json!({"metadata": {"name": "p"}}),
            )
            .await;
            api.answer(
                Method::POST,
                PODS,
                201,
                serde_json::json!({"metadata": {"name": "p"}}),
            )
            .await;
            api.stall().await;
        });
        let started = tokio::time::Instant::now();
        let (_, verdict) = scheduler.run_once("gvisor", NetworkMode::None).await;
        let took = started.elapsed();
        server.abort();
        // A silent API server proves nothing about the sandbox: the last verdict stands.
        let why = verdict.expect_err("inconclusive");
        assert!(why.contains("did not complete within 390s"), "{why}");
        // The run (60 s + 300 s grace + 30 s) and two bounded deletes (30 s each).
        assert!(took <= Duration::from_secs(451), "{took:?}");
    }

    #[tokio::test]
    async fn a_refused_canary_pod_fails_and_its_policy_is_removed() {
        let (scheduler, mut api) = scheduler();
        let server = tokio::spawn(async move {
            let name = expect_class_and_policy(&mut api).await;
            let refusal = status_error(403, "pods is forbidden: violates PodSecurity");
            api.expect(Method::POST, PODS, 403, refusal).await;
            api.expect(
                Method::DELETE,
                &format!("{PODS}/{name}"),
                404,
                status_error(404, "gone"),
            )
            .await;
            api.expect(
                Method::DELETE,
                &format!("{POLICIES}/{name}"),
                200,
                serde_json::json!({}),
            )
            .await;
            api.expect_silence().await;
        });
        let (_, verdict) = scheduler.run_once("gvisor", NetworkMode::Allowlist).await;
        server.await.expect("scenario");
        let (check, message) = failure(verdict);
        assert_eq!(check, Check::Pod);
        assert!(
            message.starts_with("the API server refused the canary pod: ")
                && message.contains("PodSecurity"),
            "{message}"
        );
    }
}
