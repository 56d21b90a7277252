//! Helpers for the end-to-end tier: a client for the local cluster, throwaway namespaces that
//! dump what they hold when a test fails, and waiting for a condition with a deadline.
//!
//! The tests themselves live in `e2e/` behind the `e2e` feature; they need a running cluster
//! (`infrastructure/local/cluster.sh up`) and a running controller (`scripts/test.sh` starts
//! both).
//!
//! `provider` is the stand-in model provider the gateway tests (`tests/gateway/`, no cluster) and
//! the benchmark call.

pub mod provider;

pub mod dashboard;

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crucible::system_namespace::POD_SECURITY_ENFORCE;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crucible::crd::Evaluation;

/// Field manager of everything the tests apply.
pub const TEST_MANAGER: &str = "crucible-e2e";
/// Label on every namespace the tests create, for bulk cleanup.
pub const TEST_LABEL: &str = "crucible.dev/e2e";
/// Interval between two looks while waiting.
const POLL: Duration = Duration::from_millis(250);

/// A client from `KUBECONFIG` (or the default kubeconfig).
///
/// # Panics
/// When no cluster is configured: the e2e tier needs one.
pub async fn client() -> Client {
    Client::try_default().await.expect(
        "e2e tests need a cluster: run `infrastructure/local/cluster.sh up` and set KUBECONFIG",
    )
}

/// The container `securityContext` of the tests' own helper pods (listeners, controls): what Pod
/// Security's `restricted` profile, enforced in every test namespace, requires, as nobody.
pub fn restricted_security_context() -> serde_json::Value {
    serde_json::json!({
        "runAsNonRoot": true,
        "runAsUser": 65534,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}
    })
}

/// Runs `test` in a fresh namespace `e2e-<prefix>-<suffix>`, dumps its pods, Events,
/// Evaluations and the controller log tail if the test panics, and deletes the namespace.
pub async fn with_temp_ns<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = client().await;
    let name = format!("e2e-{prefix}-{}", unique_suffix());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        // Pod Security admission enforces `restricted` here, as a careful platform team does:
        // every pod the controller creates for the tests must be admitted under it.
        "metadata": {"name": name, "labels": {
            TEST_LABEL: "true",
            POD_SECURITY_ENFORCE: "restricted",
        }}
    }))
    .expect("namespace manifest");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create test namespace");
    wait_for_default_service_account(&client, &name).await;
    let outcome = AssertUnwindSafe(test(client.clone(), name.clone()))
        .catch_unwind()
        .await;
    if outcome.is_err() {
        dump_namespace(&client, &name).await;
    }
    let _ = namespaces.delete(&name, &DeleteParams::background()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Six hex digits that differ between calls and between runs.
fn unique_suffix() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let n = u64::from(nanos)
        ^ (u64::from(std::process::id()) << 8)
        ^ COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 20;
    format!("{:06x}", n & 0xff_ffff)
}

/// Pods cannot be created before the namespace's default service account exists.
async fn wait_for_default_service_account(client: &Client, ns: &str) {
    let api: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), ns);
    poll_until(
        Duration::from_secs(30),
        "default service account",
        || async { api.get_opt("default").await.ok().flatten() },
    )
    .await;
}

/// Polls `probe` every 250 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `name` satisfies `condition`, returning the object; panics with the last seen
/// state after `timeout`.
pub async fn wait_for<K, C>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    condition: C,
) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug,
    C: Fn(&K) -> bool,
{
    try_wait_for(api, name, timeout, condition)
        .await
        .unwrap_or_else(|current| {
            panic!(
                "timed out after {timeout:?} waiting for {name} to be {what}; last seen: {current:#?}"
            )
        })
}

/// [`wait_for`] without the panic: after `timeout`, the last seen state (if any) as the error,
/// for tests that report many outcomes together.
pub async fn try_wait_for<K, C>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    condition: C,
) -> Result<K, Option<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    C: Fn(&K) -> bool,
{
    let deadline = Instant::now() + timeout;
    loop {
        let current = api.get_opt(name).await.expect("API reachable");
        if let Some(object) = current.as_ref().filter(|o| condition(o)) {
            return Ok(object.clone());
        }
        if Instant::now() >= deadline {
            return Err(current);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the Evaluation is in `phase`.
pub async fn wait_phase(
    api: &Api<Evaluation>,
    name: &str,
    phase: crucible::crd::evaluation::Phase,
    timeout: Duration,
) -> Evaluation {
    wait_for(api, name, timeout, phase.as_str(), |ev: &Evaluation| {
        ev.status.as_ref().and_then(|s| s.phase) == Some(phase)
    })
    .await
}

/// Waits until the Evaluation's run has finished (a terminal phase).
pub async fn wait_finished(api: &Api<Evaluation>, name: &str, timeout: Duration) -> Evaluation {
    wait_for(api, name, timeout, "finished", |ev: &Evaluation| {
        ev.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_finished())
    })
    .await
}

/// Waits until suite `name` is no longer Running (Succeeded, Failed or Cancelled).
pub async fn wait_suite_finished(
    api: &Api<crucible::crd::EvaluationSuite>,
    name: &str,
    timeout: Duration,
) -> crucible::crd::EvaluationSuite {
    wait_for(
        api,
        name,
        timeout,
        "finished",
        |s: &crucible::crd::EvaluationSuite| {
            s.status
                .as_ref()
                .and_then(|st| st.phase)
                .is_some_and(|p| p != crucible::crd::suite::SuitePhase::Running)
        },
    )
    .await
}

/// Server-side applies an Evaluation into `ns`.
pub async fn apply_evaluation(client: &Client, ns: &str, ev: &Evaluation) -> Evaluation {
    let api: Api<Evaluation> = Api::namespaced(client.clone(), ns);
    let mut body = serde_json::to_value(ev).expect("evaluation serializes");
    body["apiVersion"] = "crucible.dev/v1alpha1".into();
    body["kind"] = "Evaluation".into();
    if let Some(meta) = body["metadata"].as_object_mut() {
        meta.remove("namespace");
    }
    body.as_object_mut().map(|o| o.remove("status"));
    api.patch(
        &ev.name_any(),
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .unwrap_or_else(|e| panic!("apply evaluation {}: {e}", ev.name_any()))
}

/// Watches the namespace's evaluation pods and records the most that were alive (not
/// Succeeded/Failed) at once. Independent of the controller: only the API server's view.
pub fn watch_peak(client: Client, ns: &str, selector: &str) -> (Arc<AtomicUsize>, Arc<AtomicBool>) {
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let (peak2, done2, selector) = (peak.clone(), done.clone(), selector.to_string());
    tokio::spawn(async move {
        let mut alive = BTreeSet::new();
        let cfg = watcher::Config::default().labels(&selector);
        let mut events = watcher(pods, cfg).default_backoff().boxed();
        while !done2.load(Ordering::SeqCst) {
            let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_millis(500), events.next()).await
            else {
                continue;
            };
            match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    let phase = p
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_default();
                    if phase == "Succeeded" || phase == "Failed" {
                        alive.remove(&p.name_any());
                    } else {
                        alive.insert(p.name_any());
                    }
                }
                Ok(watcher::Event::Delete(p)) => {
                    alive.remove(&p.name_any());
                }
                // A re-list follows: pods deleted meanwhile send no Delete.
                Ok(watcher::Event::Init) => alive.clear(),
                _ => {}
            }
            peak2.fetch_max(alive.len(), Ordering::SeqCst);
        }
    });
    (peak, done)
}

/// Server-side applies a manifest (as parsed JSON) of kind `K` into `ns`.
pub async fn apply_typed<K>(client: &Client, ns: &str, manifest: &serde_json::Value) -> K
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = manifest["metadata"]["name"]
        .as_str()
        .expect("manifest has a name");
    api.patch(
        name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(manifest),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {} {name}: {e}", K::kind(&())))
}

/// Python that reports (on the cluster and in local runs) what the sandbox looks like from inside as result metrics + summary.
pub const PROBE: &str = r#"
import json, os, socket
target = os.environ.get("TARGET", "")
kernel = open("/proc/version").read().strip()
try:
    open("/etc/probe", "w").write("x"); root_writable = 1
except OSError:
    root_writable = 0
try:
    open("/var/tmp/probe", "w").write("x"); var_tmp_writable = 1
except OSError:
    var_tmp_writable = 0
try:
    open("/tmp/probe", "w").write("x"); tmp_writable = 1
except OSError:
    tmp_writable = 0
interfaces = sorted(name for _, name in socket.if_nameindex())
try:
    sys_net = sorted(os.listdir("/sys/class/net"))
except OSError:
    sys_net = []
connected = 0
if target:
    host, port = target.rsplit(":", 1)
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, int(port))); connected = 1
    except OSError as e:
        print("connect failed:", e)
    finally:
        s.close()
print("CRUCIBLE_RESULT " + json.dumps({
    "score": 1,
    "metrics": {"uid": os.getuid(), "gid": os.getgid(), "rootWritable": root_writable,
                "tmpWritable": tmp_writable, "connected": connected, "varTmpWritable": var_tmp_writable,
                "interfaces": len(interfaces)},
    "summary": json.dumps({"kernel": kernel, "interfaces": interfaces, "sysClassNet": sys_net}),
}))
"#;

/// The `key=value` pairs of an example's `# expect:` line (`examples/evaluations/*.yaml`).
///
/// # Panics
/// When the example states no outcome: every example must.
pub fn expectations(text: &str) -> Vec<(String, String)> {
    text.lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .expect("example states its outcome")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The files of `examples/evaluations/`, sorted.
pub fn example_files() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/evaluations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Parses an Evaluation manifest.
pub fn parse_evaluation(yaml: &str) -> Evaluation {
    serde_saphyr::from_str(yaml).expect("manifest is an Evaluation")
}

/// Pods of the Evaluation (by its uid label).
pub async fn pods_of(client: &Client, ns: &str, ev: &Evaluation) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let uid = ev.uid().expect("evaluation from the API server has a uid");
    api.list(&ListParams::default().labels(&format!("crucible.dev/evaluation-uid={uid}")))
        .await
        .expect("list pods")
        .items
}

/// Whether an Event with `reason` was recorded about the object `name` of the namespace.
pub async fn has_event(client: &Client, ns: &str, name: &str, reason: &str) -> bool {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let selector = format!("involvedObject.name={name},reason={reason}");
    !events
        .list(&ListParams::default().fields(&selector))
        .await
        .expect("list events")
        .items
        .is_empty()
}

/// Prints what the namespace holds, for a failed test.
pub async fn dump_namespace(client: &Client, ns: &str) {
    eprintln!("===== dump of namespace {ns} =====");
    let evals: Api<Evaluation> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = evals.list(&ListParams::default()).await {
        for ev in list {
            let status = serde_json::to_string_pretty(&ev.status).unwrap_or_default();
            eprintln!("--- evaluation {}: {status}", ev.name_any());
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = pods.list(&ListParams::default()).await {
        for pod in list {
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            let statuses = pod
                .status
                .as_ref()
                .map(|s| format!("{:?}", s.container_statuses))
                .unwrap_or_default();
            eprintln!(
                "--- pod {} phase={phase} containers={statuses}",
                pod.name_any()
            );
        }
    }
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = events.list(&ListParams::default()).await {
        for e in list {
            eprintln!(
                "--- event {} {}: {} {}",
                e.involved_object.name.unwrap_or_default(),
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            );
        }
    }
    if let Ok(path) = std::env::var("CRUCIBLE_E2E_CONTROLLER_LOG") {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: Vec<_> = log.lines().rev().take(60).collect();
        eprintln!("--- controller log tail ({path}):");
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
    eprintln!("===== end of dump =====");
}

/// Asserts that the sandbox probe's `summary` saw gVisor's kernel, not the host's: the Sentry
/// reports its own fixed version (4.4.0).
pub fn assert_gvisor_kernel(summary: &serde_json::Value) {
    let kernel = summary["kernel"].as_str().expect("kernel");
    let host = std::fs::read_to_string("/proc/version").expect("host /proc/version");
    assert_ne!(
        kernel.trim(),
        host.trim(),
        "the sandbox must not see the host kernel"
    );
    assert!(kernel.contains("4.4.0"), "not gVisor: {kernel}");
}

/// An `EvaluationQuota` manifest (as `apply_typed` takes it) named `name` with `spec`.
pub fn quota_manifest(name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "crucible.dev/v1alpha1", "kind": "EvaluationQuota",
        "metadata": {"name": name}, "spec": spec
    })
}

/// An Evaluation that sleeps `seconds`, then reports score 1; requests `cpu` and 64Mi.
pub fn sleeper(name: &str, seconds: u32, cpu: &str) -> Evaluation {
    parse_evaluation(&format!(
        "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {{name: {name}}}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -c, \"import time; time.sleep({seconds}); print('CRUCIBLE_RESULT {{\\\"score\\\": 1}}')\"]\n  timeout: 2m\n  resources: {{cpu: {cpu}, memory: 64Mi}}\n"
    ))
}

/// A controller of a test's own (`$CRUCIBLE_BIN controller`), for the binaries that
/// `scripts/test.sh` runs while no other controller runs: scoped with `--namespace` to the
/// test's namespace, with the given system namespace, `args` added. Its output is appended to
/// `log` in the temp directory. Killed (SIGKILL, as a crash) when dropped; when the test is
/// failing, the tail of its log is printed.
pub struct OwnController {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl OwnController {
    /// Starts it.
    pub fn start(log: &str, namespace: &str, system_namespace: &str, args: &[&str]) -> Self {
        let bin = std::env::var("CRUCIBLE_BIN")
            .unwrap_or_else(|_| panic!("CRUCIBLE_BIN must be set (run scripts/test.sh)"));
        let path = std::env::temp_dir().join(log);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("log file");
        let child = std::process::Command::new(bin)
            .args(["controller", "--namespace", namespace])
            .args(["--system-namespace", system_namespace])
            .args(["--canary-listen-address", "10.88.0.1"])
            .args(args)
            .stdout(std::process::Stdio::from(file.try_clone().expect("log")))
            .stderr(std::process::Stdio::from(file))
            .spawn()
            .expect("start the controller");
        OwnController { child, log: path }
    }

    /// Its log file (shared by every controller started with the same name: append-only).
    #[must_use]
    pub fn log(&self) -> &std::path::Path {
        &self.log
    }
}

impl Drop for OwnController {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- controller log tail ({}):", self.log.display());
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
    }
}
