//! The usage and served model a provider reports, read from a response as it passes through.
//! Pure.
//!
//! A streamed response is scanned event by event and never held whole: only the current line is
//! buffered, up to [`MAX_LINE_BYTES`]. A JSON response is kept up to [`MAX_BODY_BYTES`] to be
//! parsed at the end (its usage is its last field); a larger one passes through unmetered.

use serde_json::Value;

use super::budget::Usage;

/// Longest SSE line scanned; a longer one is passed through unread.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Longest JSON response parsed for usage.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The calls the gateway forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// Anthropic `POST /v1/messages`.
    Messages,
}

/// The wire protocol of a route and of an endpoint.
#[derive(serde::Deserialize, serde::Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// OpenAI-compatible.
    Openai,
    /// Anthropic-compatible.
    Anthropic,
}

impl Route {
    /// The protocol it belongs to.
    pub fn api(self) -> Api {
        match self {
            Self::ChatCompletions | Self::Responses => Api::Openai,
            Self::Messages => Api::Anthropic,
        }
    }

    /// Its path below an endpoint's base URL (which ends in `/v1`).
    pub fn suffix(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Responses => "/responses",
            Self::Messages => "/messages",
        }
    }
}

/// What a response reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reported {
    /// Tokens, when the response said.
    pub usage: Option<Usage>,
    /// The model that answered (often a dated version of the requested id).
    pub served_model: Option<String>,
}

/// Reads usage from a response's bytes as they pass.
#[derive(Debug)]
pub struct Meter {
    route: Route,
    streaming: bool,
    /// The current SSE line, or the JSON body so far.
    buffer: Vec<u8>,
    /// The current line (or body) outgrew its bound and is skipped.
    overflow: bool,
    reported: Reported,
}

impl Meter {
    /// A meter for a response of `route`, streamed (SSE) or not (JSON).
    pub fn new(route: Route, streaming: bool) -> Self {
        Self {
            route,
            streaming,
            buffer: Vec::new(),
            overflow: false,
            reported: Reported::default(),
        }
    }

    /// Takes in the next bytes of the response.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if !self.streaming {
            self.keep(bytes, MAX_BODY_BYTES);
            return;
        }
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            self.keep(&bytes[..end], MAX_LINE_BYTES);
            if !self.overflow {
                let line = std::mem::take(&mut self.buffer);
                self.line(&line);
            }
            self.buffer.clear();
            self.overflow = false;
            bytes = &bytes[end + 1..];
        }
        self.keep(bytes, MAX_LINE_BYTES);
    }

    /// What the whole response reported.
    pub fn finish(mut self) -> Reported {
        if self.streaming {
            let rest = std::mem::take(&mut self.buffer);
            if !self.overflow {
                self.line(&rest);
            }
        } else if !self.overflow
            && let Ok(body) = serde_json::from_slice::<Value>(&self.buffer)
        {
            self.object(&body);
        }
        self.reported
    }

    fn keep(&mut self, bytes: &[u8], bound: usize) {
        if self.overflow || self.buffer.len() + bytes.len() > bound {
            self.overflow = true;
            self.buffer.clear();
        } else {
            self.buffer.extend_from_slice(bytes);
        }
    }

    fn line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        if let Ok(event) = serde_json::from_slice::<Value>(data.trim_ascii()) {
            self.event(&event);
        }
    }

    /// One streamed event.
    fn event(&mut self, event: &Value) {
        match (self.route, event["type"].as_str()) {
            // Chat chunks carry the model on each; usage on the last (include_usage).
            (Route::ChatCompletions, _) => self.object(event),
            (Route::Responses, Some("response.completed" | "response.incomplete")) => {
                self.object(&event["response"])
            }
            (Route::Messages, Some("message_start")) => self.object(&event["message"]),
            // Cumulative output tokens; newer API versions repeat the input tokens too.
            (Route::Messages, Some("message_delta")) => {
                let usage = self.reported.usage.get_or_insert_with(Usage::default);
                if let Some(output) = event["usage"]["output_tokens"].as_u64() {
                    usage.output_tokens = output;
                }
                if let Some(input) = event["usage"]["input_tokens"].as_u64() {
                    usage.input_tokens = input;
                }
            }
            _ => {}
        }
    }

    /// A whole response object (or a chunk of one): its model and usage.
    fn object(&mut self, object: &Value) {
        if let Some(model) = object["model"].as_str()
            && self.reported.served_model.is_none()
        {
            self.reported.served_model = Some(model.to_string());
        }
        let usage = &object["usage"];
        let (input, output) = match self.route {
            Route::ChatCompletions => ("prompt_tokens", "completion_tokens"),
            Route::Responses | Route::Messages => ("input_tokens", "output_tokens"),
        };
        if let (Some(input), Some(output)) = (usage[input].as_u64(), usage[output].as_u64()) {
            self.reported.usage = Some(Usage {
                input_tokens: input,
                output_tokens: output,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metered(route: Route, streaming: bool, chunks: &[&str]) -> Reported {
        let mut meter = Meter::new(route, streaming);
        chunks.iter().for_each(|c| meter.feed(c.as_bytes()));
        meter.finish()
    }

    fn usage(input_tokens: u64, output_tokens: u64) -> Option<Usage> {
        Some(Usage {
            input_tokens,
            output_tokens,
        })
    }

    #[test]
    fn chat_json_and_stream_split_anywhere() {
        let body = r#"{"model":"m-1","usage":{"prompt_tokens":3,"completion_tokens":5}}"#;
        let json = metered(Route::ChatCompletions, false, &[&body[..10], &body[10..]]);
        assert_eq!(json.usage, usage(3, 5));
        assert_eq!(json.served_model.as_deref(), Some("m-1"));
        let stream = "data: {\"model\":\"m-1\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
                      data: {\"model\":\"m-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5}}\n\n\
                      data: [DONE]\n\n";
        for split in [1, 40, 90, stream.len() - 3] {
            let reported = metered(
                Route::ChatCompletions,
                true,
                &[&stream[..split], &stream[split..]],
            );
            assert_eq!(reported.usage, usage(3, 5), "split at {split}");
        }
    }

    #[test]
    fn a_chat_stream_without_include_usage_reports_none() {
        let stream = "data: {\"model\":\"m\",\"choices\":[]}\n\ndata: [DONE]\n\n";
        assert_eq!(metered(Route::ChatCompletions, true, &[stream]).usage, None);
    }

    #[test]
    fn responses_stream_takes_usage_from_completed() {
        let stream = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"r\"}}\n\n\
                      event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"r\",\"usage\":{\"input_tokens\":7,\"output_tokens\":2}}}\n\n";
        let reported = metered(Route::Responses, true, &[stream]);
        assert_eq!(reported.usage, usage(7, 2));
    }

    #[test]
    fn messages_stream_adds_start_and_final_delta() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"c\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n\
                      event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\n\n";
        let reported = metered(Route::Messages, true, &[stream]);
        assert_eq!(reported.usage, usage(9, 4));
        assert_eq!(reported.served_model.as_deref(), Some("c"));
    }

    #[test]
    fn an_oversized_line_is_skipped_and_the_next_still_read() {
        let huge = format!("data: {}\n", "x".repeat(MAX_LINE_BYTES + 1));
        let last = "data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n";
        let reported = metered(Route::ChatCompletions, true, &[&huge, last]);
        assert_eq!(reported.usage, usage(1, 2));
    }
}
