//! A stand-in model provider for tests: a deterministic OpenAI-compatible (`/v1/chat/completions`,
//! `/v1/responses`) and Anthropic-compatible (`/v1/messages`) server, streaming or not, that
//! reports usage, checks the API key it was given, and can be told to be slow or to fail.
//!
//! Deterministic so a test can predict usage: the reply is `stand-in reply to: ` followed by the
//! last user text, cut to `max_tokens` words; a token is a whitespace-separated word (input
//! tokens: the words of every text in the request, at least 1). The served model is the
//! requested one with `-standin` appended. As the real OpenAI API does, a chat stream carries
//! usage only when the request sets `stream_options.include_usage`, so a test can tell whether a
//! gateway asked for it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};

/// How the stand-in behaves.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// The only key it accepts (`Authorization: Bearer` on OpenAI routes, `x-api-key` on
    /// Anthropic's).
    pub api_key: String,
    /// Wait this long before answering (a slow provider).
    pub delay: Duration,
    /// Wait this long between two streamed events.
    pub chunk_delay: Duration,
    /// Answer every call with this status and a provider-shaped error (a failing provider).
    pub fail_status: Option<u16>,
}

impl Behaviour {
    /// A prompt, healthy provider accepting `api_key`.
    pub fn new(api_key: &str) -> Self {
        Self {
            api_key: api_key.to_string(),
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            fail_status: None,
        }
    }
}

/// What the stand-in has seen, for assertions.
#[derive(Default, Debug)]
pub struct Seen {
    /// Calls that presented the right key and were answered.
    pub calls: AtomicUsize,
    /// Calls refused for a missing or wrong key.
    pub unauthorized: AtomicUsize,
}

#[derive(Clone)]
struct Provider {
    behaviour: Arc<Behaviour>,
    seen: Arc<Seen>,
}

/// The stand-in's routes.
pub fn router(behaviour: Behaviour, seen: Arc<Seen>) -> Router {
    let state = Provider {
        behaviour: Arc::new(behaviour),
        seen,
    };
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/responses", post(responses))
        .route("/v1/messages", post(messages))
        .with_state(state)
}

/// Serves the stand-in on `addr` (port 0: any free port) in a background task; returns the
/// bound address and the counters.
pub async fn spawn(
    addr: SocketAddr,
    behaviour: Behaviour,
) -> std::io::Result<(SocketAddr, Arc<Seen>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let seen = Arc::new(Seen::default());
    let app = router(behaviour, seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((bound, seen))
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    Chat,
    Responses,
    Messages,
}

async fn chat(State(p): State<Provider>, headers: HeaderMap, body: Bytes) -> Response {
    answer(p, Api::Chat, &headers, &body).await
}

async fn responses(State(p): State<Provider>, headers: HeaderMap, body: Bytes) -> Response {
    answer(p, Api::Responses, &headers, &body).await
}

async fn messages(State(p): State<Provider>, headers: HeaderMap, body: Bytes) -> Response {
    answer(p, Api::Messages, &headers, &body).await
}

async fn answer(p: Provider, api: Api, headers: &HeaderMap, body: &[u8]) -> Response {
    let presented = if api == Api::Messages {
        headers.get("x-api-key").and_then(|v| v.to_str().ok())
    } else {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    };
    if presented != Some(p.behaviour.api_key.as_str()) {
        p.seen.unauthorized.fetch_add(1, Ordering::Relaxed);
        return error(api, StatusCode::UNAUTHORIZED, "invalid api key");
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error(api, StatusCode::BAD_REQUEST, "body is not JSON");
    };
    if !p.behaviour.delay.is_zero() {
        tokio::time::sleep(p.behaviour.delay).await;
    }
    if let Some(status) = p.behaviour.fail_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(api, status, "the stand-in was told to fail");
    }
    p.seen.calls.fetch_add(1, Ordering::Relaxed);
    let reply = Reply::of(&request, api);
    if request["stream"].as_bool() == Some(true) {
        let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
        let events = reply.events(api, include_usage);
        let delay = p.behaviour.chunk_delay;
        let stream = futures::stream::iter(events).then(move |event| async move {
            // Even a zero sleep waits for the timer's next millisecond tick.
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, Infallible>(Bytes::from(event))
        });
        respond(
            StatusCode::OK,
            "text/event-stream",
            Body::from_stream(stream),
        )
    } else {
        respond(
            StatusCode::OK,
            "application/json",
            Body::from(reply.body(api).to_string()),
        )
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn error(api: Api, status: StatusCode, message: &str) -> Response {
    let body = if api == Api::Messages {
        json!({"type": "error", "error": {"type": "api_error", "message": message}})
    } else {
        json!({"error": {"message": message, "type": "api_error", "code": status.as_u16()}})
    };
    respond(status, "application/json", Body::from(body.to_string()))
}

/// The deterministic answer to one request.
struct Reply {
    model: String,
    words: Vec<String>,
    input_tokens: u64,
}

impl Reply {
    fn of(request: &Value, api: Api) -> Self {
        let mut texts = Vec::new();
        match api {
            Api::Responses => collect_texts(&request["input"], &mut texts),
            Api::Chat | Api::Messages => {
                for message in request["messages"].as_array().into_iter().flatten() {
                    collect_texts(&message["content"], &mut texts);
                }
                collect_texts(&request["system"], &mut texts);
            }
        }
        let input_tokens: u64 = texts
            .iter()
            .map(|t| t.split_whitespace().count() as u64)
            .sum();
        let last = texts.last().cloned().unwrap_or_default();
        let limit = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| request[*k].as_u64())
            .unwrap_or(u64::MAX);
        let words = format!("stand-in reply to: {last}")
            .split_whitespace()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(str::to_string)
            .collect();
        Self {
            model: format!("{}-standin", request["model"].as_str().unwrap_or("unknown")),
            words,
            input_tokens: input_tokens.max(1),
        }
    }

    fn text(&self) -> String {
        self.words.join(" ")
    }

    fn output_tokens(&self) -> u64 {
        self.words.len() as u64
    }

    fn usage(&self, api: Api) -> Value {
        let (input, output) = (self.input_tokens, self.output_tokens());
        match api {
            Api::Chat => json!({"prompt_tokens": input, "completion_tokens": output,
                                "total_tokens": input + output}),
            Api::Responses => json!({"input_tokens": input, "output_tokens": output,
                                     "total_tokens": input + output}),
            Api::Messages => json!({"input_tokens": input, "output_tokens": output}),
        }
    }

    fn body(&self, api: Api) -> Value {
        match api {
            Api::Chat => json!({
                "id": "chatcmpl-standin", "object": "chat.completion", "model": self.model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": self.text()}}],
                "usage": self.usage(api),
            }),
            Api::Responses => json!({
                "id": "resp-standin", "object": "response", "status": "completed",
                "model": self.model,
                "output": [{"type": "message", "role": "assistant",
                            "content": [{"type": "output_text", "text": self.text()}]}],
                "usage": self.usage(api),
            }),
            Api::Messages => json!({
                "id": "msg-standin", "type": "message", "role": "assistant", "model": self.model,
                "content": [{"type": "text", "text": self.text()}],
                "stop_reason": "end_turn", "usage": self.usage(api),
            }),
        }
    }

    /// The SSE events of a streamed answer, one word per delta.
    fn events(&self, api: Api, include_usage: bool) -> Vec<String> {
        let data = |v: Value| format!("data: {v}\n\n");
        let named = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
        let deltas = self
            .words
            .iter()
            .enumerate()
            .map(|(i, w)| if i == 0 { w.clone() } else { format!(" {w}") });
        let mut events = Vec::new();
        match api {
            Api::Chat => {
                let chunk = |delta: Value, finish: Value| {
                    data(
                        json!({"id": "chatcmpl-standin", "object": "chat.completion.chunk",
                                "model": self.model,
                                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
                    )
                };
                events.push(chunk(
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                ));
                events.extend(deltas.map(|d| chunk(json!({"content": d}), Value::Null)));
                events.push(chunk(json!({}), json!("stop")));
                if include_usage {
                    events.push(data(json!({"id": "chatcmpl-standin",
                        "object": "chat.completion.chunk", "model": self.model,
                        "choices": [], "usage": self.usage(api)})));
                }
                events.push("data: [DONE]\n\n".to_string());
            }
            Api::Responses => {
                events.push(named("response.created", json!({"type": "response.created",
                    "response": {"id": "resp-standin", "model": self.model, "status": "in_progress"}})));
                events.extend(deltas.map(|d| {
                    named(
                        "response.output_text.delta",
                        json!({"type": "response.output_text.delta", "delta": d}),
                    )
                }));
                events.push(named(
                    "response.completed",
                    json!({"type": "response.completed", "response": self.body(api)}),
                ));
            }
            Api::Messages => {
                let mut start = self.body(api);
                start["content"] = json!([]);
                start["usage"] = json!({"input_tokens": self.input_tokens, "output_tokens": 1});
                events.push(named(
                    "message_start",
                    json!({"type": "message_start", "message": start}),
                ));
                events.push(named(
                    "content_block_start",
                    json!({"type": "content_block_start",
                    "index": 0, "content_block": {"type": "text", "text": ""}}),
                ));
                events.extend(deltas.map(|d| {
                    named(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": d}}),
                    )
                }));
                events.push(named(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ));
                events.push(named(
                    "message_delta",
                    json!({"type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": self.output_tokens()}}),
                ));
                events.push(named("message_stop", json!({"type": "message_stop"})));
            }
        }
        events
    }
}

/// Every text in a content value: a string, `{text}` parts, or items with their own `content`.
fn collect_texts(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::String(s) => into.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|item| collect_texts(item, into)),
        Value::Object(map) => {
            if let Some(Value::String(text)) = map.get("text") {
                into.push(text.clone());
            } else if let Some(content) = map.get("content") {
                collect_texts(content, into);
            }
        }
        _ => {}
    }
}
