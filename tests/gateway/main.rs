//! The model gateway, served on 127.0.0.1 in front of the stand-in provider: the provider's key
//! reaches the provider only through the gateway, streams pass through as they come, usage is
//! taken from the provider and recorded, and tokens are refused when revoked, expired, for
//! another model or another namespace, or past their run's or their namespace's budget. No
//! cluster needed:
//! `cargo test -p crucible-e2e --test gateway`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crucible::gateway::budget::{Budget, DailyBudget};
use crucible::gateway::catalog::Catalog;
use crucible::gateway::ledger::{self, DirSink, Ledger, Record, RecordCalls};
use crucible::gateway::listing;
use crucible::gateway::notice::GatewayClient;
use crucible::gateway::proxy::{self, Gateway, Limits};
use crucible::gateway::token::{Claims, SigningKey};
use crucible_e2e::provider::{self, Behaviour, Seen};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const PROVIDER_KEY: &str = "sk-provider-only-the-gateway-knows";
const TOKEN_KEY: [u8; 32] = [7; 32];
const NS: &str = "team-a";

struct Harness {
    gateway: Arc<Gateway>,
    url: String,
    provider_url: String,
    seen: Arc<Seen>,
    /// Endpoints file and provider key file.
    files: tempfile::TempDir,
    ledgers: tempfile::TempDir,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// The stand-in behaving as `behaviour`, the gateway in front of it with `first_byte` as its
/// header timeout.
async fn harness(behaviour: Behaviour, first_byte: Duration) -> Harness {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let (provider_addr, seen) = provider::spawn(any, behaviour).await.expect("provider");
    let files = tempfile::tempdir().expect("tempdir");
    let key_file = files.path().join("apiKey");
    std::fs::write(&key_file, PROVIDER_KEY).expect("key file");
    let endpoints = files.path().join("endpoints.yaml");
    let base = format!("http://{provider_addr}/v1");
    let file = json!({"endpoints": [
        {"name": "openai", "api": "openai", "baseURL": base, "keyFile": key_file,
         "models": ["gpt-standin", "gpt-other"],
         "pricing": {"gpt-standin": {"inputPerMTok": 1_000_000.0, "outputPerMTok": 0.0}}},
        {"name": "anthropic", "api": "anthropic", "baseURL": base, "keyFile": key_file,
         "models": ["claude-standin"]},
    ]});
    std::fs::write(&endpoints, file.to_string()).expect("endpoints file");
    let ledgers = tempfile::tempdir().expect("tempdir");
    let (gateway, url) = serve(&endpoints, ledgers.path(), first_byte).await;
    Harness {
        gateway,
        url,
        provider_url: format!("http://{provider_addr}"),
        seen,
        files,
        ledgers,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

/// A gateway on a free port of 127.0.0.1; its URL for namespace [`NS`].
async fn serve(endpoints: &Path, ledgers: &Path, first_byte: Duration) -> (Arc<Gateway>, String) {
    let gateway = Arc::new(
        Gateway::new(
            SigningKey::new(&TOKEN_KEY).expect("key"),
            Catalog::load(endpoints).expect("catalog"),
            Ledger::new(Box::new(DirSink::new(ledgers.to_path_buf()))),
            Limits {
                connect: Duration::from_secs(5),
                first_byte,
                idle: Duration::from_secs(10),
                call: Duration::from_secs(30),
                max_request_bytes: 1 << 20,
            },
        )
        .expect("gateway"),
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(proxy::serve(
        listener,
        gateway.clone(),
        std::future::pending(),
    ));
    (gateway, format!("http://{addr}/ns/{NS}"))
}

fn claims(run: &str, budget: Budget) -> Claims {
    Claims {
        namespace: NS.into(),
        evaluation: "agent".into(),
        run: run.into(),
        models: vec!["gpt-standin".into(), "claude-standin".into()],
        budget,
        daily_budget: DailyBudget::default(),
        record_calls: RecordCalls::Digests,
        expires: now() + 600,
    }
}

fn now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    i64::try_from(since.expect("clock after 1970").as_secs()).expect("seconds fit")
}

fn token(claims: &Claims) -> String {
    SigningKey::new(&TOKEN_KEY).expect("key").mint(claims)
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream,
           "messages": [{"role": "user", "content": "one two three"}]})
}

/// The response's status, headers and data frames with the instant each arrived.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    frames: Vec<(Instant, Bytes)>,
}

impl Answer {
    fn text(&self) -> String {
        self.frames
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b))
            .collect()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text()).expect("JSON body")
    }
}

impl Harness {
    /// POSTs `body` to `url` + `path` with `header: value` as the key.
    async fn post(&self, url: &str, path: &str, key: (&str, &str), body: &Value) -> Answer {
        let request = http::Request::post(format!("{url}{path}"))
            .header("content-type", "application/json")
            .header(key.0, key.1)
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .expect("answer within 30 s")
            .expect("response");
        let (parts, mut body) = response.into_parts();
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("frame").into_data() {
                frames.push((Instant::now(), data));
            }
        }
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            frames,
        }
    }

    async fn openai(&self, token: &str, path: &str, body: &Value) -> Answer {
        self.post(
            &self.url,
            path,
            ("authorization", &format!("Bearer {token}")),
            body,
        )
        .await
    }

    /// The run's ledger once it holds `n` records (they are written just after each answer).
    async fn ledger(&self, run: &str, n: usize) -> Vec<Record> {
        let path: PathBuf = self.ledgers.path().join(NS).join(format!("{run}.jsonl"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() >= n || Instant::now() > deadline {
                return text
                    .lines()
                    .map(|l| serde_json::from_str(l).expect("ledger line"))
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn the_key_reaches_the_provider_only_through_the_gateway_and_usage_is_recorded() {
    let h = harness(Behaviour::new(PROVIDER_KEY), Duration::from_secs(10)).await;
    let run = claims("run-key", Budget::default());
    let token = token(&run);
    // The sandbox's token is worth nothing at the provider itself.
    let direct = h
        .post(
            &h.provider_url,
            "/v1/chat/completions",
            ("authorization", &format!("Bearer {token}")),
            &chat("gpt-standin", false),
        )
        .await;
    assert_eq!(direct.status, 401);
    assert_eq!(h.seen.unauthorized.load(Ordering::Relaxed), 1);
    // Through the gateway it is answered: the gateway presented the provider's key.
    let answer = h
        .openai(&token, "/v1/chat/completions", &chat("gpt-standin", false))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["usage"]["prompt_tokens"], 3);
    assert_eq!(h.seen.calls.load(Ordering::Relaxed), 1);
    let records = h.ledger("run-key", 1).await;
    assert_eq!(ledger::verify(&records).map(|head| head.next), Ok(1));
    let record = &records[0];
    assert_eq!((record.input_tokens, record.output_tokens), (3, 6));
    assert_eq!(record.served_model.as_deref(), Some("gpt-standin-standin"));
    assert_eq!(record.cost_usd, 3.0);
    let account = h.gateway.account("run-key").expect("account");
    assert_eq!(
        (
            account.spent.calls,
            account.spent.input_tokens,
            account.in_flight
        ),
        (1, 3, 0)
    );
    let mut registry = prometheus_client::registry::Registry::with_prefix("crucible");
    h.gateway.register_metrics(&mut registry);
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).expect("metrics");
    for series in [
        r#"crucible_gateway_calls_total{namespace="team-a",model="gpt-standin",outcome="ok"} 1"#,
        r#"crucible_gateway_input_tokens_total{namespace="team-a",model="gpt-standin"} 3"#,
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
    let ledger_text =
        std::fs::read_to_string(h.ledgers.path().join(NS).join("run-key.jsonl")).expect("ledger");
    assert!(!ledger_text.contains(PROVIDER_KEY) && !ledger_text.contains(&token));
    // `crucible calls agent -n team-a --run run-key -o json` on what the gateway wrote.
    let run_ref = listing::RunRef {
        namespace: NS.into(),
        evaluation: "agent".into(),
        run: "run-key".into(),
    };
    let mut listed = Vec::new();
    let head = listing::list(
        h.ledgers.path(),
        &run_ref,
        listing::Output::Json,
        &mut listed,
    )
    .expect("the gateway's ledger lists");
    let listed: Value = serde_json::from_slice(&listed).expect("one JSON object");
    assert_eq!(listed["ledgerDigest"], records[0].hash.as_str());
    assert_eq!(
        (listed["totals"]["calls"].as_u64(), head.next),
        (Some(1), 1)
    );
    let listed = listed.to_string();
    assert!(!listed.contains(PROVIDER_KEY) && !listed.contains(&token));
}

#[tokio::test]
async fn streams_pass_through_as_they_come_and_their_usage_is_recorded() {
    let behaviour = Behaviour {
        chunk_delay: Duration::from_millis(150),
        ..Behaviour::new(PROVIDER_KEY)
    };
    let h = harness(behaviour, Duration::from_secs(10)).await;
    let token = token(&claims("run-stream", Budget::default()));
    // The caller does not ask for usage; the gateway does, so the provider reports it.
    let answer = h
        .openai(&token, "/v1/chat/completions", &chat("gpt-standin", true))
        .await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.text().contains("\"completion_tokens\":6"),
        "{}",
        answer.text()
    );
    // Ten events 150 ms apart: the first reaches the caller long before the last.
    let first = answer.frames.first().expect("frames").0;
    let last = answer.frames.last().expect("frames").0;
    assert!(answer.frames.len() > 5 && last - first > Duration::from_millis(900));
    // Anthropic's and the Responses API's streams are metered too.
    let messages = json!({"model": "claude-standin", "stream": true, "max_tokens": 4,
                          "messages": [{"role": "user", "content": "one two"}]});
    let anthropic = h
        .post(&h.url, "/v1/messages", ("x-api-key", &token), &messages)
        .await;
    assert_eq!(anthropic.status, 200, "{}", anthropic.text());
    let responses = json!({"model": "gpt-standin", "stream": true, "input": "a b c d"});
    assert_eq!(
        h.openai(&token, "/v1/responses", &responses).await.status,
        200
    );
    let usage: Vec<_> = h
        .ledger("run-stream", 3)
        .await
        .iter()
        .map(|r| (r.path.clone(), r.input_tokens, r.output_tokens))
        .collect();
    assert_eq!(
        usage,
        [
            ("/v1/chat/completions".to_string(), 3, 6),
            ("/v1/messages".to_string(), 2, 4),
            ("/v1/responses".to_string(), 4, 7),
        ]
    );
}

#[tokio::test]
async fn revoked_expired_other_model_and_other_namespace_tokens_are_refused() {
    let h = harness(Behaviour::new(PROVIDER_KEY), Duration::from_secs(10)).await;
    let run = claims("run-refused", Budget::default());
    let token = token(&run);
    let ok = h
        .openai(&token, "/v1/chat/completions", &chat("gpt-standin", false))
        .await;
    assert_eq!(ok.status, 200);
    // A model the endpoint serves but the run does not list.
    let other = h
        .openai(&token, "/v1/chat/completions", &chat("gpt-other", false))
        .await;
    assert_eq!(other.status, 403);
    assert!(other.text().contains("gpt-other"), "{}", other.text());
    // The same token under another namespace's URL.
    let elsewhere = h
        .post(
            &h.url.replace(NS, "team-b"),
            "/v1/chat/completions",
            ("authorization", &format!("Bearer {token}")),
            &chat("gpt-standin", false),
        )
        .await;
    assert_eq!(elsewhere.status, 403);
    // The run ends: its token, replayed, is refused.
    h.gateway.revoke(&run.run, run.expires);
    let replayed = h
        .openai(&token, "/v1/chat/completions", &chat("gpt-standin", false))
        .await;
    assert_eq!(replayed.status, 401);
    assert!(replayed.text().contains("revoked"), "{}", replayed.text());
    let expired = expired_token();
    let late = h
        .openai(
            &expired,
            "/v1/chat/completions",
            &chat("gpt-standin", false),
        )
        .await;
    assert_eq!(late.status, 401);
    assert!(late.text().contains("expired"), "{}", late.text());
    // Only the first call reached the provider.
    assert_eq!(h.seen.calls.load(Ordering::Relaxed), 1);
}

fn expired_token() -> String {
    let mut run = claims("run-expired", Budget::default());
    run.expires = now() - 1;
    token(&run)
}

#[tokio::test]
async fn a_budget_of_n_calls_allows_exactly_n_concurrent_calls() {
    let behaviour = Behaviour {
        delay: Duration::from_millis(300),
        ..Behaviour::new(PROVIDER_KEY)
    };
    let h = Arc::new(harness(behaviour, Duration::from_secs(10)).await);
    let budget = Budget {
        calls: Some(3),
        ..Budget::default()
    };
    let token = token(&claims("run-budget", budget));
    let calls = (0..10).map(|_| {
        let (h, token) = (h.clone(), token.clone());
        tokio::spawn(async move {
            let answer = h
                .openai(&token, "/v1/chat/completions", &chat("gpt-standin", false))
                .await;
            (answer.status, answer.headers.get("x-should-retry").cloned())
        })
    });
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.expect("task"));
    }
    let ok = outcomes.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = outcomes.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!((ok, refused.len()), (3, 7), "{outcomes:?}");
    assert!(
        refused
            .iter()
            .all(|(_, retry)| retry.as_ref().is_some_and(|v| v == "false"))
    );
    assert_eq!(h.seen.calls.load(Ordering::Relaxed), 3);
    assert_eq!(h.ledger("run-budget", 3).await.len(), 3);
}

#[tokio::test]
async fn a_slow_provider_times_out_and_the_call_is_still_settled_and_recorded() {
    let behaviour = Behaviour {
        delay: Duration::from_secs(5),
        ..Behaviour::new(PROVIDER_KEY)
    };
    let h = harness(behaviour, Duration::from_millis(300)).await;
    let mut run = claims("run-slow", Budget::default());
    run.record_calls = RecordCalls::Full;
    let answer = h
        .openai(
            &token(&run),
            "/v1/chat/completions",
            &chat("gpt-standin", false),
        )
        .await;
    assert_eq!(answer.status, 504);
    let account = h.gateway.account("run-slow").expect("account");
    assert_eq!((account.spent.calls, account.in_flight), (1, 0));
    let records = h.ledger("run-slow", 1).await;
    assert_eq!(records.len(), 1);
    assert!(records[0].outcome.contains("timed out"), "{:?}", records[0]);
    // recordCalls: Full keeps the request as forwarded.
    let body = records[0].request_body.as_deref().unwrap_or_default();
    assert!(body.contains("one two three"), "{body}");
}

#[tokio::test]
async fn a_restarted_gateway_resumes_the_runs_spend_and_chain_from_its_ledger() {
    let h = harness(Behaviour::new(PROVIDER_KEY), Duration::from_secs(10)).await;
    let budget = Budget {
        calls: Some(2),
        ..Budget::default()
    };
    let token = token(&claims("run-restart", budget));
    let first = h
        .openai(&token, "/v1/chat/completions", &chat("gpt-standin", false))
        .await;
    assert_eq!(first.status, 200);
    h.ledger("run-restart", 1).await;
    // Another process on the same ledger: the run has one call left, not two.
    let endpoints = h.files.path().join("endpoints.yaml");
    let (restarted, url) = serve(&endpoints, h.ledgers.path(), Duration::from_secs(10)).await;
    let key = ("authorization", format!("Bearer {token}"));
    let body = chat("gpt-standin", false);
    let second = h
        .post(&url, "/v1/chat/completions", (key.0, &key.1), &body)
        .await;
    let third = h
        .post(&url, "/v1/chat/completions", (key.0, &key.1), &body)
        .await;
    assert_eq!(
        (second.status, third.status),
        (200, 429),
        "{}",
        third.text()
    );
    let account = restarted.account("run-restart").expect("account");
    assert_eq!((account.spent.calls, account.spent.input_tokens), (2, 6));
    let records = h.ledger("run-restart", 2).await;
    assert_eq!(ledger::verify(&records).map(|head| head.next), Ok(2));
}

/// How a controller whose token key is `key` reaches the gateway serving `url`.
fn controller_settings(url: &str, key: [u8; 32]) -> crucible::config::GatewaySettings {
    crucible::config::GatewaySettings {
        base_url: url.trim_end_matches(&format!("/ns/{NS}")).to_string(),
        namespace: "crucible".into(),
        pod_labels: Default::default(),
        port: 8080,
        token_key: crucible::config::TokenKey(key.to_vec().into()),
    }
}

/// The controller's notice (`GatewayClient::revoke`, over HTTP as on the cluster) revokes a
/// run; a notice signed with another key, or a capability token posted as one, revokes nothing.
#[tokio::test]
async fn the_controllers_notice_revokes_a_run_and_nothing_else_does() {
    let h = harness(Behaviour::new(PROVIDER_KEY), Duration::from_secs(10)).await;
    let run = claims("run-noticed", Budget::default());
    let token = token(&run);
    let base = h.url.trim_end_matches(&format!("/ns/{NS}")).to_string();
    let settings = |key: [u8; 32]| controller_settings(&h.url, key);
    let forged = GatewayClient::new(settings([8; 32]))
        .revoke(&run.run, run.expires)
        .await;
    assert!(
        forged.is_err_and(|e| e.contains("401")),
        "a notice under another key"
    );
    let as_notice = h
        .client
        .request(
            http::Request::post(format!("{base}/revocations"))
                .body(Full::new(Bytes::from(token.clone())))
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(
        as_notice.status(),
        401,
        "a capability token is not a notice"
    );
    let still = h
        .openai(&token, "/v1/chat/completions", &chat("gpt-standin", false))
        .await;
    assert_eq!(still.status, 200, "{}", still.text());
    GatewayClient::new(settings(TOKEN_KEY))
        .revoke(&run.run, run.expires)
        .await
        .expect("the gateway takes the controller's notice");
    let replayed = h
        .openai(&token, "/v1/chat/completions", &chat("gpt-standin", false))
        .await;
    assert_eq!(replayed.status, 401);
    assert!(replayed.text().contains("revoked"), "{}", replayed.text());
}

/// The controller's question for a run's usage (`GatewayClient::usage`, over HTTP as on the
/// cluster): the ledger's totals, the same from a restarted gateway before any new call, the
/// budget still allowing exactly N calls in all, and the refusal reported; a sandbox's token, a
/// question under another key or for another run is refused.
#[tokio::test]
async fn the_controller_reads_a_runs_usage_across_a_restart_and_a_sandbox_cannot() {
    use crucible::gateway::budget::Exceeded;
    let usage = |settings, namespace: &'static str, run: &str, expires| {
        let run = run.to_string();
        async move {
            GatewayClient::new(settings)
                .usage(namespace, &run, expires)
                .await
        }
    };
    let h = harness(Behaviour::new(PROVIDER_KEY), Duration::from_secs(10)).await;
    let budget = Budget {
        calls: Some(3),
        ..Budget::default()
    };
    let run = claims("run-usage", budget);
    let token = token(&run);
    let settings = controller_settings;
    for _ in 0..2 {
        let answer = h
            .openai(&token, "/v1/chat/completions", &chat("gpt-standin", false))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    h.ledger("run-usage", 2).await;
    let before = usage(settings(&h.url, TOKEN_KEY), NS, &run.run, run.expires)
        .await
        .expect("usage");
    assert_eq!(
        (
            before.spent.calls,
            before.spent.input_tokens,
            before.refused
        ),
        (2, 6, None)
    );
    let by_model: Vec<(&str, u64)> = before
        .by_model
        .iter()
        .map(|m| (m.model.as_str(), m.spent.calls))
        .collect();
    assert_eq!(by_model, [("gpt-standin", 2)]);
    assert!(before.by_model[0].served_model.is_some(), "{before:?}");

    // Another process on the same ledger answers the same, and allows one call more, not three.
    let endpoints = h.files.path().join("endpoints.yaml");
    let (_restarted, url) = serve(&endpoints, h.ledgers.path(), Duration::from_secs(10)).await;
    let after = usage(settings(&url, TOKEN_KEY), NS, &run.run, run.expires)
        .await
        .expect("usage after the restart");
    assert_eq!(after, before);
    let key = ("authorization", format!("Bearer {token}"));
    let body = chat("gpt-standin", false);
    let third = h
        .post(&url, "/v1/chat/completions", (key.0, &key.1), &body)
        .await;
    let fourth = h
        .post(&url, "/v1/chat/completions", (key.0, &key.1), &body)
        .await;
    assert_eq!((third.status, fourth.status), (200, 429));
    h.ledger("run-usage", 3).await;
    let spent = usage(settings(&url, TOKEN_KEY), NS, &run.run, run.expires)
        .await
        .expect("usage");
    assert_eq!(
        (spent.spent.calls, spent.refused),
        (3, Some(Exceeded::Calls(3)))
    );

    // Nobody else may ask.
    let forged = usage(settings(&url, [8; 32]), NS, &run.run, run.expires).await;
    assert!(forged.is_err_and(|e| e.contains("401")), "another key");
    let base = settings(&url, TOKEN_KEY).base_url;
    for (path, credential) in [
        (format!("/runs/{}/usage", run.run), token.clone()),
        (
            "/runs/another-run/usage".to_string(),
            SigningKey::new(&TOKEN_KEY).expect("key").sign_usage_query(
                &crucible::gateway::token::UsageQuery {
                    namespace: NS.into(),
                    run: run.run.clone(),
                    expires: run.expires,
                },
            ),
        ),
    ] {
        let asked = h
            .client
            .request(
                http::Request::get(format!("{base}{path}"))
                    .header("authorization", format!("Bearer {credential}"))
                    .body(Full::default())
                    .expect("request"),
            )
            .await
            .expect("answer");
        assert_eq!(asked.status(), 401, "{path}");
    }
}

/// A namespace's daily budget of N tokens, carried by two runs' tokens: the calls of both
/// count, the call that would start with N used is refused (for the run that made it, which
/// then ends `BudgetExceeded`), another namespace is not affected, and a restarted gateway
/// rebuilds the namespace's day from the ledgers: still refused, nothing counted twice.
#[tokio::test]
async fn a_namespaces_daily_tokens_are_shared_by_its_runs_and_survive_a_restart() {
    use crucible::gateway::budget::Exceeded;
    let h = harness(Behaviour::new(PROVIDER_KEY), Duration::from_secs(10)).await;
    let body = chat("gpt-standin", false);
    let in_namespace =
        |url: &str, namespace: &str| url.replace(&format!("/ns/{NS}"), &format!("/ns/{namespace}"));
    let call = |url: String, claims: &Claims| {
        let key = format!("Bearer {}", token(claims));
        let (h, body) = (&h, &body);
        async move {
            h.post(&url, "/v1/chat/completions", ("authorization", &key), body)
                .await
        }
    };
    // What one call uses, measured by an unlimited run of a third namespace.
    let mut probe = claims("run-probe", Budget::default());
    probe.namespace = "team-z".into();
    let measured = call(in_namespace(&h.url, "team-z"), &probe).await;
    assert_eq!(measured.status, 200, "{}", measured.text());
    let usage_of = &measured.json()["usage"];
    let per_call = usage_of["prompt_tokens"].as_u64().expect("prompt tokens")
        + usage_of["completion_tokens"]
            .as_u64()
            .expect("completion tokens");
    let daily = DailyBudget {
        tokens_per_day: Some(2 * per_call),
        cost_usd_per_day: None,
    };
    let run = |name: &str, namespace: &str| {
        let mut run = claims(name, Budget::default());
        run.namespace = namespace.into();
        run.daily_budget = daily;
        run
    };
    let (first, second, other) = (run("run-a", NS), run("run-b", NS), run("run-c", "team-b"));
    assert_eq!(call(h.url.clone(), &first).await.status, 200);
    assert_eq!(call(h.url.clone(), &second).await.status, 200);
    assert_eq!(h.gateway.daily_usage(NS).map(|u| u.0), Some(2 * per_call));
    // N used: the next call of either run is refused, naming the namespace's budget.
    let refused = call(h.url.clone(), &second).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "budget_exceeded");
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("namespace's budget") && message.contains("tokensPerDay"),
        "{message}"
    );
    assert_eq!(call(h.url.clone(), &first).await.status, 429);
    // Another namespace with the same daily budget has its own day.
    assert_eq!(
        call(in_namespace(&h.url, "team-b"), &other).await.status,
        200
    );
    // The refused run is told to the controller as over its namespace's budget.
    h.ledger("run-b", 1).await;
    let settings = controller_settings(&h.url, TOKEN_KEY);
    let used = GatewayClient::new(settings)
        .usage(NS, &second.run, second.expires)
        .await
        .expect("usage");
    assert_eq!(
        (used.spent.calls, used.refused),
        (1, Some(Exceeded::TokensPerDay(2 * per_call)))
    );

    // Another process on the same ledgers: the namespace's day is rebuilt, once.
    h.ledger("run-a", 1).await;
    let endpoints = h.files.path().join("endpoints.yaml");
    let (restarted, url) = serve(&endpoints, h.ledgers.path(), Duration::from_secs(10)).await;
    assert_eq!(call(url.clone(), &first).await.status, 429);
    assert_eq!(restarted.daily_usage(NS).map(|u| u.0), Some(2 * per_call));
    assert_eq!(call(in_namespace(&url, "team-b"), &other).await.status, 200);
    assert_eq!(h.seen.calls.load(Ordering::Relaxed), 5);
}
