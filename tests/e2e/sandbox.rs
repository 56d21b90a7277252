//! The sandbox holds: gVisor kernel, uid 65534, read-only root, no network (with a positive
//! control showing the listener is reachable from a sandbox that is allowed to reach it).

use std::time::Duration;

use crucible::crd::Evaluation;
use crucible_e2e::{
    PROBE, apply_evaluation, parse_evaluation, restricted_security_context, wait_finished,
    wait_for, with_temp_ns,
};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::PostParams;

fn probe(name: &str, target: Option<&str>, allowlist: Option<&str>) -> Evaluation {
    let env = target
        .map(|t| format!("  env: [{{name: TARGET, value: \"{t}\"}}]\n"))
        .unwrap_or_default();
    let sandbox = allowlist
        .map(|cidr| {
            format!(
                "  sandbox: {{network: Allowlist, egress: [{{cidr: \"{cidr}\", ports: [8080]}}]}}\n"
            )
        })
        .unwrap_or_default();
    parse_evaluation(&format!(
        "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {{name: {name}}}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -c, {}]\n  timeout: 1m\n{env}{sandbox}",
        serde_json::to_string(PROBE).expect("json string")
    ))
}

#[tokio::test]
async fn sandbox_runs_gvisor_as_nobody_with_a_read_only_root() {
    with_temp_ns("sandbox", |client, ns| async move {
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        apply_evaluation(&client, &ns, &probe("inside", None, None)).await;
        let done = wait_finished(&api, "inside", Duration::from_secs(120)).await;
        let status = done.status.expect("status");
        let result = status.result.expect("probe reports a result");
        let m = &result.metrics;
        assert_eq!((m["uid"], m["gid"]), (65534.0, 65534.0));
        assert_eq!(m["rootWritable"], 0.0, "root filesystem must be read-only");
        assert_eq!(m["tmpWritable"], 1.0, "/tmp is the writable emptyDir");
        let summary: serde_json::Value =
            serde_json::from_str(result.summary.as_deref().expect("summary")).expect("json");
        crucible_e2e::assert_gvisor_kernel(&summary);
        assert_eq!(
            status.sandbox.and_then(|s| s.runtime_class_name).as_deref(),
            Some("gvisor")
        );
        // It ran because the sandbox canary had proven the class, and says so.
        let system =
            std::env::var("CRUCIBLE_SYSTEM_NAMESPACE").unwrap_or_else(|_| "crucible-system".into());
        let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &system);
        let record = configmaps
            .get(crucible::canary::status::CONFIGMAP)
            .await
            .expect("the canary's ConfigMap");
        let gvisor: serde_json::Value = serde_json::from_str(
            record
                .data
                .as_ref()
                .and_then(|d| d.get("gvisor"))
                .expect("a condition for gvisor"),
        )
        .expect("json");
        assert_eq!(
            (gvisor["status"].as_str(), gvisor["reason"].as_str()),
            (Some("True"), Some("Verified")),
            "{gvisor}"
        );
    })
    .await;
}

#[tokio::test]
async fn sandbox_has_no_network_but_an_allowlisted_one_reaches_the_listener() {
    with_temp_ns("network", |client, ns| async move {
        // A listener in a pod of this test's own namespace (runc, on the cluster's bridge).
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let listener: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "listener"},
            "spec": {
                "automountServiceAccountToken": false,
                "containers": [{
                    "name": "http", "image": "localhost/crucible/python:3.11",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0"],
                    "securityContext": restricted_security_context()
                }]
            }
        }))
        .expect("pod manifest");
        pods.create(&PostParams::default(), &listener)
            .await
            .expect("create listener");
        let listener = wait_for(
            &pods,
            "listener",
            Duration::from_secs(60),
            "running with an IP",
            |p: &Pod| {
                let s = p.status.as_ref();
                s.and_then(|s| s.phase.as_deref()) == Some("Running")
                    && s.and_then(|s| s.pod_ip.as_ref()).is_some()
            },
        )
        .await;
        let ip = listener.status.and_then(|s| s.pod_ip).expect("pod IP");
        let target = format!("{ip}:8080");
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        apply_evaluation(&client, &ns, &probe("isolated", Some(&target), None)).await;
        apply_evaluation(
            &client,
            &ns,
            &probe("allowed", Some(&target), Some(&format!("{ip}/32"))),
        )
        .await;

        let isolated = wait_finished(&api, "isolated", Duration::from_secs(120)).await;
        let result = isolated.status.and_then(|s| s.result).expect("result");
        assert_eq!(
            result.metrics["connected"], 0.0,
            "network None must not connect"
        );
        let summary: serde_json::Value =
            serde_json::from_str(result.summary.as_deref().unwrap_or("{}")).expect("json");
        assert_eq!(
            summary["interfaces"],
            serde_json::json!(["lo"]),
            "only loopback inside"
        );

        // Positive control: the same probe under the Allowlist sandbox does connect, so the
        // negative above is not an artefact of a dead listener.
        let allowed = wait_finished(&api, "allowed", Duration::from_secs(120)).await;
        let status = allowed.status.expect("status");
        assert_eq!(
            status.sandbox.and_then(|s| s.runtime_class_name).as_deref(),
            Some("gvisor-net")
        );
        assert_eq!(status.result.expect("result").metrics["connected"], 1.0);
    })
    .await;
}

/// The test namespaces enforce Pod Security's `restricted` profile (so the tests above prove
/// the controller's pods are admitted under it), and the check is live: a pod that leaves out
/// what `restricted` requires is refused.
#[tokio::test]
async fn a_pod_that_restricted_forbids_is_refused() {
    with_temp_ns("podsecurity", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "unrestricted"},
            "spec": {"containers": [{"name": "c", "image": "localhost/crucible/python:3.11"}]}
        }))
        .expect("pod manifest");
        let refused = pods
            .create(&PostParams::default(), &pod)
            .await
            .expect_err("a pod without a restricted security context must be refused");
        let kube::Error::Api(status) = refused else {
            panic!("expected the API server's refusal, got {refused}");
        };
        assert_eq!(status.code, 403, "{status:?}");
        assert!(
            status.message.contains("violates PodSecurity \"restricted"),
            "{}",
            status.message
        );
    })
    .await;
}
