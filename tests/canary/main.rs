//! The sandbox canary on a real cluster, with a controller of its own: its runtime class is a
//! RuntimeClass that is not gVisor (`crucible-fake-gvisor`, handler `runc`), so the canary must
//! hold admission (`SandboxUnverified: crucible-fake-gvisor: kernel: …`), create no Evaluation
//! pod, and say so in the ConfigMap `crucible-sandbox`, an Event and the metrics, while
//! `/readyz` stays ready. The Allowlist class `gvisor-net` is proven meanwhile (the local
//! cluster's kube-router enforces NetworkPolicy: the canary reaches the port its policy allows and
//! not a second one), so an Allowlist run is not held. When the RuntimeClass is replaced by one
//! with the gVisor handler, the canary proves it and the held run starts.
//!
//! Starts its own controller (`CRUCIBLE_BIN`), scoped with `--namespace` to its own namespace
//! and with its own system namespace: `scripts/test.sh` runs it while no other controller runs.
//! Its canary pods run `crucible canary-probe` from `localhost/crucible/controller:dev`, which
//! `scripts/test.sh` has imported by then (the demo's controller start packages the debug build);
//! run alone, import it first: `sudo bash infrastructure/image/build.sh --binary
//! target/debug/crucible --import`.

use std::time::Duration;

use crucible::canary::status::CONFIGMAP;
use crucible::crd::Evaluation;
use crucible::crd::evaluation::Phase;
use crucible_e2e::{
    OwnController, apply_evaluation, parse_evaluation, poll_until, wait_finished, wait_for,
    watch_peak, with_temp_ns,
};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FAKE: &str = "crucible-fake-gvisor";
const METRICS: &str = "127.0.0.1:18093";
const LOG: &str = "crucible-canary-e2e.log";

/// The cluster-scoped RuntimeClass `crucible-fake-gvisor`; deleted when the test ends.
struct FakeClass(Api<RuntimeClass>);

impl FakeClass {
    async fn create(api: &Api<RuntimeClass>, handler: &str) {
        let rc: RuntimeClass = serde_json::from_value(serde_json::json!({
            "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": FAKE, "labels": {"crucible.dev/e2e": "true"}},
            "handler": handler,
        }))
        .expect("RuntimeClass manifest");
        api.create(&PostParams::default(), &rc)
            .await
            .unwrap_or_else(|e| panic!("create RuntimeClass {FAKE}: {e}"));
    }

    async fn delete(api: &Api<RuntimeClass>) {
        let _ = api.delete(FAKE, &DeleteParams::default()).await;
        poll_until(
            Duration::from_secs(30),
            "the RuntimeClass to be gone",
            || {
                let api = api.clone();
                async move {
                    api.get_opt(FAKE)
                        .await
                        .ok()
                        .flatten()
                        .is_none()
                        .then_some(())
                }
            },
        )
        .await;
    }
}

impl Drop for FakeClass {
    fn drop(&mut self) {
        let api = self.0.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let _ = api.delete(FAKE, &DeleteParams::default()).await;
            })
        });
    }
}

/// The `SandboxVerified` condition of `class` in the ConfigMap, as JSON.
async fn condition(api: &Api<ConfigMap>, class: &str) -> Option<serde_json::Value> {
    let cm = api.get_opt(CONFIGMAP).await.ok().flatten()?;
    serde_json::from_str(cm.data?.get(class)?).ok()
}

/// Waits until the condition of `class` has `status`, and returns it.
async fn wait_condition(api: &Api<ConfigMap>, class: &str, status: &str) -> serde_json::Value {
    poll_until(
        Duration::from_secs(180),
        &format!("SandboxVerified={status} for {class}"),
        || async move {
            condition(api, class)
                .await
                .filter(|c| c["status"] == status)
        },
    )
    .await
}

/// `GET path` on the controller's metrics server: status code and body.
async fn http_get(path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(METRICS)
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, response)
}

fn queue_reason(ev: &Evaluation) -> String {
    ev.status
        .as_ref()
        .and_then(|s| s.queue.as_ref())
        .and_then(|q| q.reason.clone())
        .unwrap_or_default()
}

async fn wait_held(api: &Api<Evaluation>, name: &str, prefix: &str) -> Evaluation {
    wait_for(
        api,
        name,
        Duration::from_secs(180),
        prefix,
        |ev: &Evaluation| {
            ev.status.as_ref().and_then(|s| s.phase) == Some(Phase::Queued)
                && queue_reason(ev).starts_with(prefix)
        },
    )
    .await
}

fn evaluation(name: &str, sandbox: &str) -> Evaluation {
    parse_evaluation(&format!(
        "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {{name: {name}}}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -c, \"print('CRUCIBLE_RESULT {{\\\"score\\\": 1}}')\"]\n  timeout: 1m\n  resources: {{cpu: 100m, memory: 64Mi}}\n{sandbox}"
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_class_that_is_not_gvisor_holds_admission_until_it_is() {
    with_temp_ns("canary", |client, ns| async move {
        with_temp_ns("canary-system", |_, system| async move {
            run(client, ns, system).await;
        })
        .await;
    })
    .await;
}

async fn run(client: Client, ns: String, system: String) {
    let classes: Api<RuntimeClass> = Api::all(client.clone());
    FakeClass::delete(&classes).await;
    FakeClass::create(&classes, "runc").await;
    let _class = FakeClass(classes.clone());
    let (peak, done) = watch_peak(client.clone(), &ns, "crucible.dev/managed=true");
    let _controller = OwnController::start(
        LOG,
        &ns,
        &system,
        &[
            "--runtime-class",
            FAKE,
            "--metrics-addr",
            METRICS,
            "--log-filter",
            "info,crucible=debug,kube=warn",
        ],
    );
    let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
    apply_evaluation(&client, &ns, &evaluation("held", "")).await;

    let prefix = format!("SandboxUnverified: {FAKE}: kernel: the sandbox runs kernel ");
    let held = wait_held(&api, "held", &prefix).await;
    assert!(
        queue_reason(&held).contains("not gVisor's"),
        "{}",
        queue_reason(&held)
    );
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &system);
    let fake = wait_condition(&configmaps, FAKE, "False").await;
    assert_eq!(fake["type"], "SandboxVerified");
    assert_eq!(fake["reason"], "Kernel", "{fake}");
    // NetworkPolicy is enforced (kube-router): the Allowlist canary reached the port its policy
    // allows and not the other one, so its class is proven (its run, below, is not held).
    let net = wait_condition(&configmaps, "gvisor-net", "True").await;
    assert_eq!(net["reason"], "Verified", "{net}");
    let gpu = condition(&configmaps, "gvisor-nvproxy")
        .await
        .expect("GPU class listed");
    assert_eq!(
        (gpu["status"].as_str(), gpu["reason"].as_str()),
        (Some("Unknown"), Some("NotChecked"))
    );

    let events: Api<Event> = Api::namespaced(client.clone(), &system);
    poll_until(
        Duration::from_secs(30),
        "a SandboxUnverified Warning",
        || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items.into_iter().find(|e| {
                    e.reason.as_deref() == Some("SandboxUnverified")
                        && e.type_.as_deref() == Some("Warning")
                        && e.involved_object.name.as_deref() == Some(CONFIGMAP)
                        && e.message.as_deref().is_some_and(|m| m.starts_with(FAKE))
                })
            }
        },
    )
    .await;
    let (code, metrics) = http_get("/metrics").await;
    assert_eq!(code, 200);
    let failures = format!(
        "crucible_sandbox_canary_failures_total{{runtime_class=\"{FAKE}\",check=\"kernel\"}} "
    );
    assert!(metrics.contains(&failures), "{metrics}");
    assert!(metrics.contains(&format!(
        "crucible_sandbox_verified{{runtime_class=\"{FAKE}\"}} 0"
    )));
    assert_eq!(
        http_get("/readyz").await.0,
        200,
        "the controller stays ready"
    );
    assert_eq!(
        peak.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no Evaluation pod while held"
    );
    let allowlist = "  sandbox: {network: Allowlist, egress: [{cidr: 10.88.0.1/32, ports: [9]}]}\n";
    apply_evaluation(&client, &ns, &evaluation("allowlisted", allowlist)).await;
    let allowlisted = wait_finished(&api, "allowlisted", Duration::from_secs(120)).await;
    let status = allowlisted.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    assert_eq!(
        status.sandbox.and_then(|s| s.runtime_class_name).as_deref(),
        Some("gvisor-net")
    );

    // The same class with the gVisor handler: the watch notices, the canary proves it, and the
    // held run starts.
    FakeClass::delete(&classes).await;
    FakeClass::create(&classes, "runsc").await;
    let verified = wait_condition(&configmaps, FAKE, "True").await;
    assert_eq!(verified["reason"], "Verified", "{verified}");
    let ran = wait_finished(&api, "held", Duration::from_secs(120)).await;
    let status = ran.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    assert_eq!(
        status.sandbox.and_then(|s| s.runtime_class_name).as_deref(),
        Some(FAKE)
    );
    let (_, metrics) = http_get("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "crucible_sandbox_verified{{runtime_class=\"{FAKE}\"}} 1"
        )),
        "{metrics}"
    );
    // Finished canary pods are deleted right after their log is read.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &system);
    poll_until(
        Duration::from_secs(30),
        "no finished canary pod left",
        || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(
                        &ListParams::default().labels("app.kubernetes.io/component=sandbox-canary"),
                    )
                    .await
                    .ok()?;
                list.items
                    .iter()
                    .all(|p| {
                        !matches!(
                            p.status.as_ref().and_then(|s| s.phase.as_deref()),
                            Some("Succeeded" | "Failed")
                        )
                    })
                    .then_some(())
            }
        },
    )
    .await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
}
