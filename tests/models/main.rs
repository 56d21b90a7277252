//! Models on a real cluster: an agent-style run calls its model through the gateway and can
//! reach nothing else. The stand-in provider runs in this test process on the node's address
//! 10.88.0.1; the gateway runs as a pod (`crucible gateway` from
//! `localhost/crucible/controller:dev`) in a namespace of its own whose ledger directory is a
//! host directory this test reads; the test starts its own controller (`CRUCIBLE_BIN`) connected
//! to that gateway (`--gateway-service`, `--gateway-token-key-file`), so `scripts/test.sh` runs
//! it while no other controller runs. The sandbox reaches the gateway through its Service's
//! cluster IP (the local cluster's kube-proxy).
//!
//! The run waits queued (`ModelEndpointNotReady`) while its ModelEndpoint's Secret is missing,
//! unlabelled, or not bound to the provider's host, and starts once the endpoint is Ready; an
//! endpoint pointing the same Secret at another host stays not Ready.
//!
//! The run's Python loop first hunts for the provider key (it is nowhere the sandbox can read)
//! and calls a model its token does not list (refused), then calls `OPENAI_BASE_URL` with
//! `OPENAI_API_KEY` (the run's token, never the provider key) three times, then tries the
//! provider directly, which its NetworkPolicy must refuse (the local cluster's kube-router
//! enforces NetworkPolicy); the controller puts what it used, asked of the gateway, on
//! `status.usage`. A second run with a budget of two
//! calls makes three: the third is refused, and the run ends `BudgetExceeded` with its result.
//! Then an EvaluationQuota with `tokensPerDay: 1`, less than the namespace has used today: the
//! next run's calls are refused and it ends `BudgetExceeded`, naming the namespace's budget.
//! The loop is the official `openai` SDK from the local cluster's agent image
//! (`localhost/crucible/python-openai:3.11`: the Python image plus `openai` from PyPI).
//!
//! A Prometheus of the test's own (`CRUCIBLE_PROMETHEUS_BIN`) scrapes the gateway and the
//! controller meanwhile; afterwards every model usage panel of the shipped Grafana dashboard
//! returns series for the test's namespace, and the controller has counted the BudgetExceeded
//! run exactly once.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use clap::Parser;
use crucible::crd::evaluation::Phase;
use crucible::crd::{Evaluation, EvaluationQuota, ModelEndpoint};
use crucible_e2e::dashboard::{
    Prometheus, dashboard_path, every_query_has_series, get, queries, reads_model_usage,
};
use crucible_e2e::provider::{Behaviour, spawn};
use crucible_e2e::{
    OwnController, TEST_LABEL, apply_evaluation, apply_typed, parse_evaluation, poll_until,
    wait_finished, with_temp_ns,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

const LOG: &str = "crucible-models-e2e.log";
const NODE: &str = "10.88.0.1";
const PROVIDER_KEY: &str = "sk-stand-in-e2e-provider-key";
/// Key-shaped, in the hunting agent's own environment: its hunt must find it.
const DECOY: &str = "sk-decoy-e2e-not-a-provider-key";
const MODEL: &str = "stand-in-small";
const CALLS: usize = 3;
const GATEWAY: &str = "crucible-gateway";
const GATEWAY_LABELS: &str = "crucible-e2e-gateway";
/// The test's controller's `/metrics`.
const CONTROLLER_METRICS: &str = "127.0.0.1:18095";

/// The agent: `CALLS` chat completions through the gateway with the official `openai` SDK,
/// unmodified and at its defaults (it reads `OPENAI_BASE_URL` and `OPENAI_API_KEY`, which the
/// sandbox gets; a refused call is counted and the loop goes on, as an agent catching the SDK's
/// error would), then a direct connection to the provider, which must fail. Reports all three
/// as metrics. With `HUNT` set, it first attacks as a hostile agent would: it looks for the
/// provider's key (every `sk-…` string in its environment, every process's environment and
/// command line, and the first MiB of every file outside /proc, /sys and /dev, compared by
/// SHA-256 with `KEY_SHA256`; `DECOY`, a key-shaped string in its own environment, must be
/// found, or the hunt proves nothing), and calls a model its token does not list.
const AGENT: &str = r#"
import hashlib, json, os, re, socket
import openai
client = openai.OpenAI()
answers = refused = 0
hunt = {}
if os.environ.get("HUNT"):
    shaped = re.compile(rb"sk-[A-Za-z0-9_-]{8,}")
    digests = {os.environ["KEY_SHA256"]: "key", hashlib.sha256(os.environ["DECOY"].encode()).hexdigest(): "decoy"}
    found = {"key": 0, "decoy": 0, "blobs": 0}
    def look(blob):
        found["blobs"] += 1
        for m in shaped.finditer(blob):
            what = digests.get(hashlib.sha256(m.group()).hexdigest())
            if what:
                found[what] += 1
    for name, value in os.environ.items():
        look((name + "=" + value).encode())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for part in ("environ", "cmdline"):
            try:
                with open("/proc/%s/%s" % (pid, part), "rb") as f:
                    look(f.read())
            except OSError:
                pass
    for top in set(os.listdir("/")) - {"proc", "sys", "dev"}:
        for root, dirs, files in os.walk("/" + top):
            for name in files:
                path = os.path.join(root, name)
                try:
                    if os.path.isfile(path) and not os.path.islink(path):
                        with open(path, "rb") as f:
                            look(f.read(1 << 20))
                except OSError:
                    pass
    print("key hunt:", found, flush=True)
    try:
        client.chat.completions.create(model="not-listed-model", messages=[{"role": "user", "content": "hi"}])
        other = 200
    except openai.APIStatusError as e:
        print("other model refused:", e.status_code, e.message)
        other = e.status_code
    hunt = {"keyFound": found["key"], "decoyFound": found["decoy"], "blobsRead": found["blobs"], "otherModel": other}
for i in range(int(os.environ["CALLS"])):
    try:
        reply = client.chat.completions.create(
            model=os.environ["CRUCIBLE_MODEL_TARGET_MODEL"],
            messages=[{"role": "user", "content": "step %d" % i}])
    except openai.APIStatusError as e:
        print("call refused:", e.status_code, e.message)
        refused += e.status_code == 429
        continue
    if reply.choices[0].message.content.startswith("stand-in reply to: step"):
        answers += 1
direct = 1
try:
    socket.create_connection((os.environ["PROVIDER_HOST"], int(os.environ["PROVIDER_PORT"])), timeout=5).close()
except OSError as e:
    print("direct connection refused:", e)
    direct = 0
print("CRUCIBLE_RESULT " + json.dumps({"score": 1 if answers == int(os.environ["CALLS"]) and direct == 0 else 0,
                                       "metrics": dict(hunt, answers=answers, refused=refused, direct=direct)}))
"#;

#[tokio::test]
async fn an_agent_calls_its_model_through_the_gateway_and_reaches_nothing_else() {
    let prometheus_bin = std::env::var("CRUCIBLE_PROMETHEUS_BIN").expect(
        "CRUCIBLE_PROMETHEUS_BIN=the Prometheus binary (scripts/test.sh: cluster.sh tool prometheus)",
    );
    let (provider, seen) = spawn(
        format!("{NODE}:0").parse().expect("address"),
        Behaviour::new(PROVIDER_KEY),
    )
    .await
    .expect("the stand-in provider listens on the node's address");
    with_temp_ns("models", |client, ns| async move {
        let gateway_ns = format!("{ns}-gw");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let manifest = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": gateway_ns, "labels": {TEST_LABEL: "true"}}});
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(manifest).expect("namespace"),
            )
            .await
            .expect("create the gateway's namespace");
        let ledger = std::env::temp_dir().join(format!("crucible-e2e-ledger-{ns}"));
        std::fs::create_dir_all(&ledger).expect("ledger directory");
        // The gateway runs as 65532.
        std::fs::set_permissions(&ledger, std::fs::Permissions::from_mode(0o777))
            .expect("ledger directory mode");
        let token_key = format!("e2e-token-key-{ns}-0123456789abcdef0123456789abcdef");
        let key_file = std::env::temp_dir().join(format!("crucible-e2e-token-key-{ns}"));
        std::fs::write(&key_file, &token_key).expect("token key file");
        let gateway_ip =
            start_gateway(&client, &gateway_ns, &token_key, provider.port(), &ledger).await;
        let gateway_metrics = format!("{gateway_ip}:9090");

        let endpoint = json!({"apiVersion": "crucible.dev/v1alpha1", "kind": "ModelEndpoint",
            "metadata": {"name": "stand-in"},
            "spec": {"api": "openai", "baseURL": format!("http://{provider}/v1"),
                     "secretRef": {"name": "stand-in-key", "key": "apiKey"}, "models": [MODEL]}});
        let _: ModelEndpoint = apply_typed(&client, &ns, &endpoint).await;
        let service = format!("{gateway_ns}/{GATEWAY}");
        let _controller = OwnController::start(
            LOG,
            &ns,
            &system_namespace(),
            &[
                "--metrics-addr",
                CONTROLLER_METRICS,
                "--gateway-service",
                &service,
                "--gateway-token-key-file",
                key_file.to_str().expect("utf-8 path"),
            ],
        );

        // Scraping from before the first call, so the panels see the usage grow.
        let prometheus = Prometheus::start(
            &prometheus_bin,
            &[CONTROLLER_METRICS.to_string(), gateway_metrics.clone()],
        )
        .await;

        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        apply_evaluation(&client, &ns, &agent(provider, "agent", 10, true)).await;
        // The run waits while its endpoint is not Ready, and starts once it is.
        endpoint_becomes_ready_and_its_run_starts(&client, &ns, provider, &api).await;
        let done = wait_finished(&api, "agent", Duration::from_secs(240)).await;
        let status = done.status.expect("status");
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
        // The run waited for the canary of its class, which proved the path of runs with
        // models: the gateway answers under their NetworkPolicy.
        let verdicts: Api<ConfigMap> = Api::namespaced(client.clone(), &system_namespace());
        let sandbox = verdicts
            .get("crucible-sandbox")
            .await
            .expect("the canary's ConfigMap");
        let net = sandbox
            .data
            .and_then(|d| d.get("gvisor-net").cloned())
            .unwrap_or_default();
        assert!(
            net.contains("\"Verified\"") && net.contains("the model gateway at"),
            "{net}"
        );
        // The controller asked the gateway what the run used.
        let usage = status.usage.clone().expect("status.usage");
        assert_eq!(usage.calls, CALLS as i64, "{usage:?}");
        assert!(
            usage.input_tokens > 0 && usage.output_tokens > 0,
            "{usage:?}"
        );
        assert_eq!(
            usage
                .by_model
                .iter()
                .map(|m| (m.name.as_str(), m.model.as_str(), m.calls))
                .collect::<Vec<_>>(),
            [("target", MODEL, CALLS as i64)]
        );
        let metrics = status.result.expect("result").metrics;
        assert_eq!(metrics["answers"], CALLS as f64, "every call answered");
        assert_eq!(
            metrics["direct"], 0.0,
            "the provider is not reachable directly"
        );
        assert!(
            seen.calls.load(std::sync::atomic::Ordering::SeqCst) >= CALLS,
            "the calls reached the provider through the gateway"
        );
        // The hostile part of the agent: the key is nowhere it can read (the decoy it hid in
        // its own environment was found, so the hunt ran), and a model its token does not list
        // is refused (and not counted: usage above has the CALLS calls only).
        assert!(metrics["blobsRead"] > 1000.0, "{metrics:?}");
        assert!(metrics["decoyFound"] >= 1.0, "{metrics:?}");
        assert_eq!(
            metrics["keyFound"], 0.0,
            "the provider key was found in the sandbox"
        );
        assert_eq!(metrics["otherModel"], 403.0, "{metrics:?}");
        // The gateway recorded each call in the run's ledger, hash-chained.
        let run = status.run_id.expect("run id");
        let file = ledger.join(&ns).join(format!("{run}.jsonl"));
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("ledger {}: {e}", file.display()));
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a ledger record"))
            .collect();
        assert_eq!(records.len(), CALLS, "{text}");
        for pair in records.windows(2) {
            assert_eq!(pair[1]["prev"], pair[0]["hash"], "the chain links");
        }
        assert!(records.iter().all(|r| r["model"] == MODEL), "{text}");
        // Neither the provider key nor the token is in the run's status.
        let shown = serde_json::to_string(&api.get("agent").await.expect("get")).expect("json");
        assert!(!shown.contains(PROVIDER_KEY) && !shown.contains("crt1."));
        // The run's token, replayed after the run ended, is refused; a token of a run that
        // never ended is not (so the refusal is the revocation's).
        let base = gateway_base(&client, &gateway_ns, &ns).await;
        let replayed = mint_token(&key_file, &ns, &run);
        assert_eq!(
            call_model(&base, &replayed).await,
            401,
            "a finished run's token"
        );
        let live = mint_token(&key_file, &ns, "e2e-live-run");
        assert_eq!(call_model(&base, &live).await, 200, "a live run's token");

        // A budget of two calls for three: the third is refused, the run ends BudgetExceeded
        // with the two calls on its usage and its result kept.
        apply_evaluation(&client, &ns, &agent(provider, "over-budget", 2, false)).await;
        let over = wait_finished(&api, "over-budget", Duration::from_secs(240)).await;
        let status = over.status.expect("status");
        ended_budget_exceeded(&status, "budget of 2 calls");
        assert_eq!(
            status.usage.as_ref().map(|u| u.calls),
            Some(2),
            "{status:?}"
        );
        let metrics = status
            .result
            .as_ref()
            .expect("the result is kept")
            .metrics
            .clone();
        assert_eq!(
            (metrics["answers"], metrics["refused"]),
            (2.0, 1.0),
            "{status:?}"
        );
        let run = status.run_id.expect("run id");
        let text = std::fs::read_to_string(ledger.join(&ns).join(format!("{run}.jsonl")))
            .expect("the over-budget run's ledger");
        assert_eq!(
            text.lines().count(),
            2,
            "only forwarded calls are recorded: {text}"
        );

        usage_panels_and_counts(&prometheus, &ns, &gateway_metrics).await;
        // After the panels' counts: this run adds a refusal.
        namespace_budget_refuses_a_new_run(&client, &ns, provider).await;
        endpoint_on_another_host_is_never_ready(&client, &ns).await;

        let _ = namespaces
            .delete(&gateway_ns, &DeleteParams::background())
            .await;
        let _ = std::fs::remove_file(&key_file);
    })
    .await;
}

/// After both runs: the gateway counted the six calls it forwarded for `ns` (the agent's
/// `CALLS`, the one with a live run's token, the over-budget run's two) and one budget refusal, the
/// controller the BudgetExceeded run once (the run has been reconciled again since it ended),
/// and every model usage panel of the dashboard has series for `ns`.
async fn usage_panels_and_counts(prometheus: &Prometheus, ns: &str, gateway_metrics: &str) {
    // The count follows the status write by an instant.
    let first = poll_until(
        Duration::from_secs(10),
        "the controller to count the BudgetExceeded run",
        || async move { budget_exceeded_of(ns).await.filter(|v| v != "0") },
    )
    .await;
    assert_eq!(first, "1", "one run ended BudgetExceeded");
    let gateway = metrics_of(gateway_metrics).await;
    for series in [
        format!(
            "crucible_gateway_calls_total{{namespace=\"{ns}\",model=\"{MODEL}\",outcome=\"ok\"}} {}",
            CALLS + 1 + 2
        ),
        r#"crucible_gateway_refusals_total{reason="budget_exceeded"} 1"#.to_string(),
    ] {
        assert!(gateway.contains(&series), "{series} not in\n{gateway}");
    }

    let text = std::fs::read_to_string(dashboard_path()).expect("read the chart's dashboard");
    let dashboard = serde_json::from_str(&text).expect("the dashboard is JSON");
    let usage: Vec<_> = queries(&dashboard)
        .expect("the dashboard's expressions")
        .into_iter()
        .filter(|q| reads_model_usage(&q.expr))
        .collect();
    // calls, input and output tokens, cost per hour, cost in the range, runs ended
    // BudgetExceeded, calls refused for a budget
    assert!(usage.len() >= 7, "the model usage panels: {usage:?}");
    let vars = std::collections::BTreeMap::from([
        ("namespace", ns.to_string()),
        ("__rate_interval", "1m".to_string()),
        ("__range", "1h".to_string()),
    ]);
    every_query_has_series(
        &prometheus.addr,
        &usage,
        &vars,
        |_| false,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        budget_exceeded_of(ns).await.as_deref(),
        Some("1"),
        "the BudgetExceeded run is counted once, however often it is reconciled"
    );
}

/// The value of `crucible_budget_exceeded_total` of `ns` at the test's controller, as written.
async fn budget_exceeded_of(ns: &str) -> Option<String> {
    let series = format!("crucible_budget_exceeded_total{{namespace=\"{ns}\"}} ");
    metrics_of(CONTROLLER_METRICS)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map(str::to_string)
}

/// The metrics text served at `addr`, 5 s at most.
async fn metrics_of(addr: &str) -> String {
    tokio::time::timeout(Duration::from_secs(5), get(addr, "/metrics"))
        .await
        .unwrap_or_else(|_| panic!("no /metrics from {addr} within 5 s"))
        .unwrap_or_else(|e| panic!("GET {addr}/metrics: {e}"))
}

/// Endpoint `stand-in` names a Secret of its namespace that does not exist yet, then exists
/// unlabelled, then is labelled and names the provider's host: Ready. Meanwhile the agent run
/// waits queued, reason `ModelEndpointNotReady`, with no pod.
async fn endpoint_becomes_ready_and_its_run_starts(
    client: &kube::Client,
    ns: &str,
    provider: std::net::SocketAddr,
    runs: &Api<Evaluation>,
) {
    let endpoints: Api<ModelEndpoint> = Api::namespaced(client.clone(), ns);
    wait_ready(&endpoints, "stand-in", "False", "SecretNotFound").await;
    poll_until(
        Duration::from_secs(120),
        "the agent run to wait for its endpoint",
        || {
            let runs = runs.clone();
            async move {
                let status = runs.get_opt("agent").await.ok().flatten()?.status?;
                (status.phase == Some(Phase::Queued)
                    && status.reason.as_deref() == Some("ModelEndpointNotReady")
                    && status.pod_name.is_none())
                .then_some(())
            }
        },
    )
    .await;
    let secret = |metadata: serde_json::Value| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": metadata,
               "stringData": {"apiKey": PROVIDER_KEY}})
    };
    let _: Secret = apply_typed(client, ns, &secret(json!({"name": "stand-in-key"}))).await;
    wait_ready(&endpoints, "stand-in", "False", "SecretNotLabelled").await;
    let bound = json!({"name": "stand-in-key",
        "labels": {"crucible.dev/model-credentials": "true"},
        "annotations": {"crucible.dev/model-host": provider.ip().to_string()}});
    let _: Secret = apply_typed(client, ns, &secret(bound)).await;
    wait_ready(&endpoints, "stand-in", "True", "Ready").await;
}

/// An endpoint pointing the same Secret at another host is never Ready, and no endpoint's
/// status shows the key.
async fn endpoint_on_another_host_is_never_ready(client: &kube::Client, ns: &str) {
    let endpoints: Api<ModelEndpoint> = Api::namespaced(client.clone(), ns);
    let elsewhere = json!({"apiVersion": "crucible.dev/v1alpha1", "kind": "ModelEndpoint",
        "metadata": {"name": "elsewhere"},
        "spec": {"api": "openai", "baseURL": "https://attacker.example/v1",
                 "secretRef": {"name": "stand-in-key", "key": "apiKey"}, "models": [MODEL]}});
    let _: ModelEndpoint = apply_typed(client, ns, &elsewhere).await;
    wait_ready(&endpoints, "elsewhere", "False", "HostNotAllowed").await;
    let listed = endpoints
        .list(&Default::default())
        .await
        .expect("list endpoints");
    let shown = serde_json::to_string(&listed).expect("json");
    assert!(!shown.contains(PROVIDER_KEY), "{shown}");
}

/// Waits until endpoint `name`'s `Ready` condition has `status` and `reason` for its current
/// generation.
async fn wait_ready(endpoints: &Api<ModelEndpoint>, name: &str, status: &str, reason: &str) {
    poll_until(
        Duration::from_secs(60),
        &format!("ModelEndpoint {name} Ready={status} ({reason})"),
        || {
            let endpoints = endpoints.clone();
            async move {
                let e = endpoints.get_opt(name).await.ok().flatten()?;
                let generation = e.metadata.generation;
                let ready = e
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Ready")?;
                (ready.status == status
                    && ready.reason == reason
                    && ready.observed_generation == generation)
                    .then_some(())
            }
        },
    )
    .await;
}

/// With an EvaluationQuota of `tokensPerDay: 1` in `ns`, whose runs have used more today, a
/// new run's token carries that limit: the gateway refuses its calls and the run ends
/// `BudgetExceeded`, its message naming the namespace's budget.
async fn namespace_budget_refuses_a_new_run(
    client: &kube::Client,
    ns: &str,
    provider: std::net::SocketAddr,
) {
    let manifest = json!({"apiVersion": "crucible.dev/v1alpha1", "kind": "EvaluationQuota",
                          "metadata": {"name": "daily-tokens"},
                          "spec": {"hard": {"tokensPerDay": 1}}});
    apply_typed::<EvaluationQuota>(client, ns, &manifest).await;
    // As a user would apply the quota first: the controller has seen it once it wrote its status.
    let quotas: Api<EvaluationQuota> = Api::namespaced(client.clone(), ns);
    poll_until(Duration::from_secs(30), "the daily quota's status", || {
        let quotas = quotas.clone();
        async move { quotas.get("daily-tokens").await.ok().and_then(|q| q.status) }
    })
    .await;
    let api: Api<Evaluation> = Api::namespaced(client.clone(), ns);
    apply_evaluation(client, ns, &agent(provider, "over-daily", 10, false)).await;
    let over = wait_finished(&api, "over-daily", Duration::from_secs(240)).await;
    let status = over.status.expect("status");
    ended_budget_exceeded(&status, "namespace's budget of 1 tokens per day");
    assert_eq!(
        status.usage.as_ref().map_or(0, |u| u.calls),
        0,
        "no call was forwarded: {status:?}"
    );
    quotas
        .delete("daily-tokens", &DeleteParams::default())
        .await
        .expect("delete the daily quota");
}

/// The agent as Evaluation `name`, with a budget of `calls` calls.
fn agent(provider: std::net::SocketAddr, name: &str, calls: u32, hunt: bool) -> Evaluation {
    let hunting = if hunt {
        format!(
            ", {{name: HUNT, value: \"1\"}}, {{name: KEY_SHA256, value: \"{}\"}}, \
             {{name: DECOY, value: \"{DECOY}\"}}",
            crucible::digest::sha256_hex(PROVIDER_KEY.as_bytes())
        )
    } else {
        String::new()
    };
    parse_evaluation(&format!(
        "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {{name: {name}}}\nspec:\n  \
         image: localhost/crucible/python-openai:3.11\n  command: [python3, -c, {}]\n  timeout: 2m\n  \
         env: [{{name: CALLS, value: \"{CALLS}\"}}, {{name: PROVIDER_HOST, value: \"{}\"}}, \
         {{name: PROVIDER_PORT, value: \"{}\"}}{hunting}]\n  \
         models: [{{name: target, endpoint: stand-in, model: {MODEL}}}]\n  budget: {{calls: {calls}}}\n",
        serde_json::to_string(AGENT).expect("json string"),
        provider.ip(),
        provider.port()
    ))
}

/// The gateway as the chart deploys it (restricted, read-only root), in `ns`, with its ledger
/// in the host directory `ledger`; returns its pod's IP once the pod is ready.
async fn start_gateway(
    client: &kube::Client,
    ns: &str,
    token_key: &str,
    provider_port: u16,
    ledger: &std::path::Path,
) -> String {
    let secret = |name: &str, key: &str, value: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
               "stringData": {key: value}})
    };
    let _: Secret = apply_typed(client, ns, &secret("token-key", "token-key", token_key)).await;
    let _: Secret = apply_typed(client, ns, &secret("stand-in-key", "apiKey", PROVIDER_KEY)).await;
    let endpoints = format!(
        "endpoints:\n  - name: stand-in\n    api: openai\n    baseURL: http://{NODE}:{provider_port}/v1\n    \
         keyFile: /var/run/secrets/crucible/endpoints/stand-in/apiKey\n    models: [{MODEL}]\n"
    );
    let _: ConfigMap = apply_typed(
        client,
        ns,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "endpoints"},
                "data": {"endpoints.yaml": endpoints}}),
    )
    .await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": GATEWAY, "labels": {"app": GATEWAY_LABELS}},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "gateway", "image": "localhost/crucible/controller:dev",
                "imagePullPolicy": "Never", "args": ["gateway"],
                "env": [
                    {"name": "CRUCIBLE_GATEWAY_LISTEN", "value": "0.0.0.0:8080"},
                    {"name": "CRUCIBLE_GATEWAY_METRICS_LISTEN", "value": "0.0.0.0:9090"},
                    {"name": "CRUCIBLE_GATEWAY_ENDPOINTS", "value": "/etc/crucible/gateway/endpoints.yaml"},
                    {"name": "CRUCIBLE_GATEWAY_TOKEN_KEY_FILE", "value": "/var/run/secrets/crucible/token/token-key"},
                    {"name": "CRUCIBLE_GATEWAY_LEDGER_DIR", "value": "/var/lib/crucible/ledger"}],
                "ports": [{"name": "calls", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 9090}, "periodSeconds": 1},
                "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [
                    {"name": "endpoints", "mountPath": "/etc/crucible/gateway", "readOnly": true},
                    {"name": "token-key", "mountPath": "/var/run/secrets/crucible/token", "readOnly": true},
                    {"name": "provider-key", "mountPath": "/var/run/secrets/crucible/endpoints/stand-in", "readOnly": true},
                    {"name": "ledger", "mountPath": "/var/lib/crucible/ledger"}]}],
            "volumes": [
                {"name": "endpoints", "configMap": {"name": "endpoints"}},
                {"name": "token-key", "secret": {"secretName": "token-key"}},
                {"name": "provider-key", "secret": {"secretName": "stand-in-key"}},
                {"name": "ledger", "hostPath": {"path": ledger.to_str().expect("utf-8 path"),
                                                "type": "Directory"}}]}});
    let _: Pod = apply_typed(client, ns, &pod).await;
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": GATEWAY},
        "spec": {"selector": {"app": GATEWAY_LABELS},
                 "ports": [{"name": "calls", "port": 8080, "targetPort": 8080}]}});
    let _: Service = apply_typed(client, ns, &service).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    poll_until(
        Duration::from_secs(120),
        "the gateway pod to be ready",
        || {
            let pods = pods.clone();
            async move {
                let status = pods.get_opt(GATEWAY).await.ok().flatten()?.status?;
                let ready = status
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                ready.then_some(status.pod_ip).flatten()
            }
        },
    )
    .await
}

/// The gateway's OpenAI base URL for runs of `ns`, by its Service's cluster IP (the host
/// reaches it through the local cluster's kube-proxy).
async fn gateway_base(client: &kube::Client, gateway_ns: &str, ns: &str) -> String {
    let services: Api<Service> = Api::namespaced(client.clone(), gateway_ns);
    let spec = services
        .get(GATEWAY)
        .await
        .expect("the gateway's Service")
        .spec
        .expect("spec");
    let ip = spec.cluster_ip.expect("cluster IP");
    let port = spec.ports.expect("ports")[0].port;
    format!("{ip}:{port}/ns/{ns}/v1")
}

/// A capability token for run `run` of `ns`, signed with the controller's key, as
/// `crucible gateway-token` mints it.
fn mint_token(key_file: &std::path::Path, ns: &str, run: &str) -> String {
    let cli = crucible::cli::Cli::parse_from([
        "crucible",
        "gateway-token",
        "--token-key-file",
        key_file.to_str().expect("utf-8 path"),
        "--namespace",
        ns,
        "--run",
        run,
        "--model",
        MODEL,
    ]);
    let crucible::cli::Command::GatewayToken(args) = cli.command else {
        panic!("gateway-token parses as gateway-token")
    };
    crucible::gateway::mint(&args).expect("mint")
}

/// One chat completion with `token` at `base` (`IP:PORT/PATH`), over plain HTTP/1.1: the status.
async fn call_model(base: &str, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, path) = base.split_once('/').expect("IP:PORT/PATH");
    let body =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "replay"}]}).to_string();
    let request = format!(
        "POST /{path}/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the gateway answers within 30 s")
        .expect("an HTTP exchange with the gateway");
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).to_string();
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head:?}"))
}

/// The controller's system namespace (`CRUCIBLE_SYSTEM_NAMESPACE`, as scripts/test.sh sets it).
fn system_namespace() -> String {
    std::env::var("CRUCIBLE_SYSTEM_NAMESPACE").unwrap_or_else(|_| "crucible-system".into())
}

/// Asserts that a run ended `Failed`, reason `BudgetExceeded`, its message naming `budget`.
fn ended_budget_exceeded(status: &crucible::crd::evaluation::EvaluationStatus, budget: &str) {
    assert_eq!(
        (status.phase, status.reason.as_deref()),
        (Some(Phase::Failed), Some("BudgetExceeded")),
        "{status:?}"
    );
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.contains(budget)),
        "{status:?}"
    );
}
