//! The gateway's HTTP side: checks a call, forwards it with the provider's key, streams the
//! answer back frame by frame while metering it, then settles the budget and appends the call
//! to the ledger.
//!
//! Routes are `/ns/{namespace}/v1/{chat/completions,responses,messages}`: the controller gives
//! each sandbox the URL of its own namespace, and a token only works under its namespace's URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::budget::{Account, Spent};
use super::call::Call;
use super::catalog::Catalog;
use super::expiring::ExpiringMap;
use super::ledger::Ledger;
use super::metrics::Metrics;
use super::now;
use super::refusal::Refusal;
use super::tally::RunUsage;
use super::token::{Claims, Revocations, SigningKey, UsageQuery};
use super::usage::Route;
use super::window::Window;
use super::writer::Writer;

/// Request headers passed on to the provider; everything else (the caller's token above all)
/// stays behind. Not `accept-encoding`: the gateway asks for `identity`, so the meter can read
/// the usage as it passes.
const FORWARDED: [&str; 4] = [
    "accept",
    "anthropic-version",
    "anthropic-beta",
    "openai-beta",
];

/// Bounds of one call.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connecting to the provider.
    pub connect: Duration,
    /// From sending the request to the response's headers.
    pub first_byte: Duration,
    /// Between two frames of the response.
    pub idle: Duration,
    /// The whole call, streaming included.
    pub call: Duration,
    /// Largest request body accepted.
    pub max_request_bytes: usize,
}

/// The HTTP client towards providers.
pub type Upstream = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Everything the handlers share.
pub struct Gateway {
    pub(super) key: SigningKey,
    pub(super) revocations: RwLock<Revocations>,
    pub(super) catalog: Catalog,
    pub(super) accounts: Mutex<ExpiringMap<Account>>,
    /// Per namespace whose runs have a daily budget: its calls of the last 24 hours. At most a
    /// day of buckets each; only namespaces with a daily budget have one.
    pub(super) windows: Mutex<HashMap<String, Window>>,
    pub(super) ledger: Arc<Ledger>,
    /// Appends the settled calls' records to `ledger`, off the calls' path.
    pub(super) writer: Writer,
    pub(super) upstream: Upstream,
    pub(super) limits: Limits,
    pub(super) metrics: Metrics,
}

impl Gateway {
    /// A gateway verifying tokens with `key`, forwarding to `catalog`, recording to `ledger`.
    pub fn new(
        key: SigningKey,
        catalog: Catalog,
        ledger: Ledger,
        limits: Limits,
    ) -> std::io::Result<Self> {
        let ledger = Arc::new(ledger);
        let writer = Writer::start(ledger.clone())?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(limits.connect));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            key,
            revocations: RwLock::new(Revocations::default()),
            catalog,
            accounts: Mutex::new(ExpiringMap::default()),
            windows: Mutex::new(HashMap::new()),
            ledger,
            writer,
            upstream: Client::builder(TokioExecutor::new()).build(https),
            limits,
            metrics: Metrics::default(),
        })
    }

    /// Ends a run: its tokens are refused from now on and its state is dropped.
    pub fn revoke(&self, run: &str, expires: i64) {
        let now = now();
        if let Ok(mut revocations) = self.revocations.write() {
            revocations.revoke(run, expires, now);
        }
        if let Ok(mut accounts) = self.accounts.lock() {
            accounts.remove(run);
        }
        self.ledger.forget(run);
    }

    /// Registers the gateway's metrics under `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    /// What `run` has spent so far, if it has called.
    pub fn account(&self, run: &str) -> Option<Account> {
        self.accounts.lock().ok()?.get_mut(run).copied()
    }

    /// Tokens and cost of `namespace`'s calls over the last 24 hours, if a call of it with a
    /// daily budget has been seen.
    pub fn daily_usage(&self, namespace: &str) -> Option<(u64, f64)> {
        let mut windows = self.windows.lock().ok()?;
        Some(windows.get_mut(namespace)?.used(now()))
    }

    /// What `query`'s run has used by its ledger (read back from its file the first time, so a
    /// restarted gateway answers as before), and the budget a call of it was refused for.
    pub fn usage(&self, query: &UsageQuery) -> std::io::Result<RunUsage> {
        // The calls settled before the question count: their records are written first.
        self.writer.flush();
        let head = self
            .ledger
            .head_of(&query.namespace, &query.run, query.expires)?;
        let refused = self.account(&query.run).and_then(|a| a.refused);
        Ok(RunUsage::new(head, refused))
    }
}

/// Serves the gateway's routes on `listener` until `stop` completes. Every connection is
/// TCP_NODELAY: a stream's parts go out as they arrive instead of waiting for the caller's
/// delayed ACK (Nagle), about 40 ms a part.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router(gateway))
        .with_graceful_shutdown(stop)
        .await
}

/// The gateway's routes.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(
            "/ns/{namespace}/v1/chat/completions",
            post(|s, p, h, b| forward(s, p, h, b, Route::ChatCompletions)),
        )
        .route(
            "/ns/{namespace}/v1/responses",
            post(|s, p, h, b| forward(s, p, h, b, Route::Responses)),
        )
        .route(
            "/ns/{namespace}/v1/messages",
            post(|s, p, h, b| forward(s, p, h, b, Route::Messages)),
        )
        .route("/revocations", post(revocation))
        .route("/runs/{run}/usage", get(usage))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(gateway)
}

/// The controller's notice that a run has ended (`SigningKey::sign_revocation`): from now on
/// its tokens are refused. Sandboxes may reach this route but cannot sign a notice.
async fn revocation(State(gateway): State<Arc<Gateway>>, body: Bytes) -> axum::http::StatusCode {
    let notice = std::str::from_utf8(&body).unwrap_or_default().trim();
    match gateway.key.verify_revocation(notice) {
        Ok(revoked) => {
            gateway.revoke(&revoked.run, revoked.expires);
            tracing::info!(run = %revoked.run, "run revoked");
            axum::http::StatusCode::NO_CONTENT
        }
        Err(_) => axum::http::StatusCode::UNAUTHORIZED,
    }
}

/// The controller's question for a run's usage, signed with the tokens' key
/// (`SigningKey::sign_usage_query`) and sent as the bearer credential: a sandbox may reach
/// this route but cannot sign a question, so it reads no run's usage. The ledger is read off
/// the async workers.
async fn usage(
    State(gateway): State<Arc<Gateway>>,
    Path(run): Path<String>,
    headers: HeaderMap,
) -> Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let query = presented_token(&headers)
        .ok()
        .and_then(|sealed| gateway.key.verify_usage_query(sealed).ok())
        .filter(|query| query.run == run);
    let Some(query) = query else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let read = tokio::task::spawn_blocking(move || gateway.usage(&query)).await;
    match read {
        Ok(Ok(usage)) => {
            // A struct of numbers and strings always serialises.
            let body = serde_json::to_vec(&usage).unwrap_or_default();
            let json = HeaderValue::from_static("application/json");
            ([(header::CONTENT_TYPE, json)], body).into_response()
        }
        Ok(Err(e)) => {
            tracing::error!(%run, error = %e, "cannot read the call ledger for its usage");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn forward(
    State(gateway): State<Arc<Gateway>>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    body: Body,
    route: Route,
) -> Response {
    match call(gateway.clone(), namespace, headers, body, route).await {
        Ok(response) => response,
        Err(refusal) => {
            gateway.metrics.refusal(refusal.code());
            refusal.response(route.api())
        }
    }
}

async fn call(
    gateway: Arc<Gateway>,
    namespace: String,
    headers: HeaderMap,
    body: Body,
    route: Route,
) -> Result<Response, Refusal> {
    let claims = gateway.key.verify(presented_token(&headers)?, now())?;
    let limit = gateway.limits.max_request_bytes;
    // A caller trickling its body holds only its own task, and only for so long.
    let body = tokio::time::timeout(gateway.limits.first_byte, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| Refusal::BadRequest("the request body did not arrive in time".into()))?
        .map_err(|_| Refusal::TooLarge(limit))?;
    let (request, model, streaming) = parse(&body, route)?;
    {
        let revocations = gateway.revocations.read().map_err(|_| Refusal::Upstream)?;
        claims.authorize(&namespace, &model, &revocations)?;
    }
    let endpoint = gateway
        .catalog
        .get(&model)
        .ok_or_else(|| Refusal::NoEndpoint(model.clone()))?
        .clone();
    if endpoint.api != route.api() {
        return Err(Refusal::WrongApi(model));
    }
    let body = request.unwrap_or(body);
    let upstream = upstream_request(&endpoint, route, &headers, body.clone())?;
    reserve(&gateway, &claims)?;
    let mut call = Call::start(
        gateway.clone(),
        claims,
        model,
        endpoint,
        route,
        streaming,
        &body,
    );
    let deadline = tokio::time::Instant::now() + gateway.limits.call;
    let first_byte = tokio::time::Instant::now() + gateway.limits.first_byte;
    let response =
        match tokio::time::timeout_at(first_byte.min(deadline), gateway.upstream.request(upstream))
            .await
        {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "provider unreachable");
                call.finish(0, "provider unreachable");
                return Err(Refusal::Upstream);
            }
            Err(_) => {
                call.finish(0, "provider timed out before answering");
                return Err(Refusal::UpstreamTimeout);
            }
        };
    let (parts, incoming) = response.into_parts();
    call.answered(parts.status.as_u16());
    let mut answer = Response::new(relay(incoming, call, gateway.limits.idle, deadline));
    *answer.status_mut() = parts.status;
    // The body passes unchanged, so its length holds: with it the caller has the whole answer
    // as soon as the last byte is out, without waiting for the chunked encoding's end.
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::RETRY_AFTER,
    ] {
        if let Some(value) = parts.headers.get(&name) {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    Ok(answer)
}

/// The run's token, as the SDKs send an API key.
fn presented_token(headers: &HeaderMap) -> Result<&str, Refusal> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    bearer.or(api_key).ok_or(Refusal::NoToken)
}

/// The model, whether the call streams, and the body to forward when it differs from the
/// caller's: an OpenAI chat stream reports usage only when asked, so the gateway asks.
fn parse(body: &[u8], route: Route) -> Result<(Option<Bytes>, String, bool), Refusal> {
    let mut request: Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::BadRequest(format!("the body is not JSON: {e}")))?;
    let model = request["model"]
        .as_str()
        .ok_or_else(|| Refusal::BadRequest("no \"model\"".into()))?
        .to_string();
    let streaming = request["stream"].as_bool() == Some(true);
    if !(streaming && route == Route::ChatCompletions) {
        return Ok((None, model, streaming));
    }
    let object = request
        .as_object_mut()
        .ok_or_else(|| Refusal::BadRequest("the body is not a JSON object".into()))?;
    let options = object
        .entry("stream_options")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    let Some(options) = options.as_object_mut() else {
        return Err(Refusal::BadRequest(
            "\"stream_options\" is not an object".into(),
        ));
    };
    options.insert("include_usage".into(), Value::Bool(true));
    let body = serde_json::to_vec(&request).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    Ok((Some(Bytes::from(body)), model, streaming))
}

fn upstream_request(
    endpoint: &super::catalog::Endpoint,
    route: Route,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, Refusal> {
    let mut request = http::Request::post(format!("{}{}", endpoint.base_url, route.suffix()))
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        // Uncompressed, so the meter can read the usage (and the caller gets what it can read).
        .header(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    for name in FORWARDED {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    let (name, key) = endpoint.key_header();
    request
        .header(name, key)
        .body(Full::new(body))
        .map_err(|_| Refusal::Upstream)
}

/// Reserves one call of `claims`' run under its budget. A run this process has not seen yet
/// starts from what its ledger says it spent, so a restart neither forgets nor double-counts.
fn reserve(gateway: &Gateway, claims: &Claims) -> Result<(), Refusal> {
    let known = gateway
        .accounts
        .lock()
        .map_err(|_| Refusal::Upstream)?
        .contains(&claims.run);
    let spent = if known {
        Spent::default()
    } else {
        gateway
            .ledger
            .spent(&claims.namespace, &claims.run, claims.expires)
            .map_err(|e| {
                tracing::error!(run = %claims.run, error = %e, "cannot read the call ledger");
                Refusal::Ledger
            })?
    };
    let daily = &claims.daily_budget;
    if !daily.is_unlimited() {
        load_window(gateway, &claims.namespace)?;
    }
    let now = now();
    let mut accounts = gateway.accounts.lock().map_err(|_| Refusal::Upstream)?;
    let account = accounts.entry(&claims.run, claims.expires, now, || Account::resume(spent));
    if !daily.is_unlimited() {
        let mut windows = gateway.windows.lock().map_err(|_| Refusal::Upstream)?;
        let window = windows.get_mut(&claims.namespace).ok_or(Refusal::Ledger)?;
        if let Err(exceeded) = window.admit(daily, now) {
            // The run ends BudgetExceeded like one over its own budget.
            account.refuse(exceeded);
            return Err(exceeded.into());
        }
    }
    account.reserve(&claims.budget)?;
    Ok(())
}

/// Builds `namespace`'s window from its ledgers, the first time a call with a daily budget
/// comes (after a start or a restart). Calls settled from then on are added as they settle and
/// written to the ledger after, so none is counted twice; a call settled just before and
/// written just after the read is missed, which the bound of calls in flight covers.
fn load_window(gateway: &Gateway, namespace: &str) -> Result<(), Refusal> {
    let known = gateway
        .windows
        .lock()
        .map_err(|_| Refusal::Upstream)?
        .contains_key(namespace);
    if known {
        return Ok(());
    }
    // The calls settled before (of runs without a daily budget) count: their records are
    // written first. Once per namespace and process.
    gateway.writer.flush();
    let window = gateway.ledger.window(namespace, now()).map_err(|e| {
        tracing::error!(%namespace, error = %e, "cannot read the call ledgers for the namespace's daily usage");
        Refusal::Ledger
    })?;
    // A call that loaded it meanwhile wins: calls may have settled into it since.
    let mut windows = gateway.windows.lock().map_err(|_| Refusal::Upstream)?;
    windows.entry(namespace.to_string()).or_insert(window);
    Ok(())
}

/// The provider's body, passed on frame by frame: each frame is metered and sent on at once;
/// a provider silent for `idle`, or a call past `deadline`, ends the stream with an error (the
/// caller sees a cut response). The call is settled when the stream ends or is dropped.
fn relay(incoming: Incoming, call: Call, idle: Duration, deadline: tokio::time::Instant) -> Body {
    let stream = futures::stream::unfold(Some((incoming, call)), move |state| async move {
        let (mut incoming, mut call) = state?;
        let wait = (tokio::time::Instant::now() + idle).min(deadline);
        match tokio::time::timeout_at(wait, incoming.frame()).await {
            Ok(Some(Ok(frame))) => {
                let data = frame.into_data().unwrap_or_default();
                call.feed(&data);
                // A body of known length ends with its last byte: hyper then stops polling, so
                // the call is settled here rather than on an end that is never asked for.
                if incoming.is_end_stream() {
                    call.finish_answered();
                    return Some((Ok(data), None));
                }
                Some((Ok(data), Some((incoming, call))))
            }
            Ok(None) => {
                call.finish_answered();
                None
            }
            Ok(Some(Err(e))) => {
                call.fail("the provider's response broke off");
                Some((Err(std::io::Error::other(e)), None))
            }
            Err(_) => {
                call.fail("the provider's response stalled or ran past the call's deadline");
                Some((Err(std::io::Error::other("provider timed out")), None))
            }
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: Value, route: Route) -> Result<(Option<Value>, String, bool), Refusal> {
        let (forwarded, model, streaming) = parse(body.to_string().as_bytes(), route)?;
        let forwarded = forwarded.map(|b| serde_json::from_slice(&b).expect("JSON"));
        Ok((forwarded, model, streaming))
    }

    #[test]
    fn an_openai_chat_stream_is_asked_for_its_usage_and_nothing_else_is_rewritten() {
        let stream = serde_json::json!({"model": "m", "stream": true,
                                        "stream_options": {"other": 1}});
        let (forwarded, model, streaming) =
            parsed(stream.clone(), Route::ChatCompletions).expect("valid");
        let forwarded = forwarded.expect("rewritten");
        assert_eq!((model.as_str(), streaming), ("m", true));
        assert_eq!(
            forwarded["stream_options"],
            serde_json::json!({"other": 1, "include_usage": true})
        );
        // Anthropic and Responses streams report usage anyway; JSON answers always do.
        assert_eq!(parsed(stream, Route::Messages).expect("valid").0, None);
        let json = serde_json::json!({"model": "m"});
        assert_eq!(parsed(json, Route::ChatCompletions).expect("valid").0, None);
    }

    #[test]
    fn a_body_without_a_model_or_with_odd_stream_options_is_refused() {
        assert!(parsed(serde_json::json!({"stream": true}), Route::ChatCompletions).is_err());
        let odd = serde_json::json!({"model": "m", "stream": true, "stream_options": 3});
        assert!(matches!(
            parsed(odd, Route::ChatCompletions),
            Err(Refusal::BadRequest(_))
        ));
    }
}
