//! Why the gateway answers a call itself instead of the provider, as the error body the caller's
//! SDK expects (OpenAI's or Anthropic's shape), so agent code sees a normal API error.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::budget::Exceeded;
use super::token::TokenError;
use super::usage::Api;

/// A call the gateway does not forward, or could not complete.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No token in `Authorization: Bearer` or `x-api-key`.
    #[error("no capability token: send the run's token as the API key")]
    NoToken,
    /// The token is not valid for this call.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The run's budget is spent.
    #[error(transparent)]
    Budget(#[from] Exceeded),
    /// The body is not a request of this API.
    #[error("invalid request: {0}")]
    BadRequest(String),
    /// The body is larger than the gateway accepts.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The run may call the model but no endpoint serves it.
    #[error("no endpoint serves model {0:?}")]
    NoEndpoint(String),
    /// The model's endpoint speaks the other protocol.
    #[error("model {0:?} is served over the other API (OpenAI vs Anthropic)")]
    WrongApi(String),
    /// The provider could not be reached or failed before answering.
    #[error("the provider could not be reached")]
    Upstream,
    /// The run's ledger cannot be read, so its spend is unknown.
    #[error("the call ledger is unavailable; try again later")]
    Ledger,
    /// The provider did not answer in time.
    #[error("the provider did not answer in time")]
    UpstreamTimeout,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Self::NoToken
            | Self::Token(
                TokenError::Malformed
                | TokenError::BadSignature
                | TokenError::Expired(_)
                | TokenError::Revoked(_),
            ) => StatusCode::UNAUTHORIZED,
            Self::Token(TokenError::OtherNamespace(_) | TokenError::ModelNotAllowed(_)) => {
                StatusCode::FORBIDDEN
            }
            Self::Budget(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::BadRequest(_) | Self::WrongApi(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoEndpoint(_) => StatusCode::NOT_FOUND,
            Self::Upstream => StatusCode::BAD_GATEWAY,
            Self::Ledger => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The error `type` of each API.
    fn kind(&self, api: Api) -> &'static str {
        match (self, api) {
            (Self::Budget(_), Api::Openai) => "insufficient_quota",
            (Self::Budget(_), Api::Anthropic) => "rate_limit_error",
            (Self::Upstream | Self::UpstreamTimeout | Self::Ledger, _) => "api_error",
            (_, Api::Anthropic) => match self.status() {
                StatusCode::UNAUTHORIZED => "authentication_error",
                StatusCode::FORBIDDEN => "permission_error",
                StatusCode::NOT_FOUND => "not_found_error",
                StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
                _ => "invalid_request_error",
            },
            (_, Api::Openai) => "invalid_request_error",
        }
    }

    /// The response in `api`'s error shape. A spent budget stays spent, so it tells the SDKs
    /// (OpenAI's and Anthropic's honour `x-should-retry`) not to retry it.
    pub fn response(&self, api: Api) -> Response {
        let message = self.to_string();
        let body = match api {
            Api::Openai => json!({"error": {"message": message, "type": self.kind(api),
                                            "code": self.code()}}),
            Api::Anthropic => json!({"type": "error",
                                     "error": {"type": self.kind(api), "message": message}}),
        };
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if matches!(self, Self::Budget(_)) {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        response
    }

    /// The error code: in the body and as the refusal metric's `reason`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoToken | Self::Token(_) => "invalid_api_key",
            Self::Budget(_) => "budget_exceeded",
            Self::NoEndpoint(_) | Self::WrongApi(_) => "model_not_found",
            Self::TooLarge(_) | Self::BadRequest(_) => "invalid_request",
            Self::Upstream | Self::UpstreamTimeout => "upstream_error",
            Self::Ledger => "ledger_unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn a_spent_budget_is_a_429_in_each_apis_shape_that_sdks_do_not_retry() {
        let refusal = Refusal::Budget(Exceeded::Calls(3));
        let openai = refusal.response(Api::Openai);
        assert_eq!(openai.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(openai.headers()["x-should-retry"], "false");
        let openai = body(openai).await;
        assert_eq!(openai["error"]["type"], "insufficient_quota");
        assert!(
            openai["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("3 calls"))
        );
        let anthropic = body(refusal.response(Api::Anthropic)).await;
        assert_eq!(
            (
                anthropic["type"].as_str(),
                anthropic["error"]["type"].as_str()
            ),
            (Some("error"), Some("rate_limit_error"))
        );
    }

    #[tokio::test]
    async fn token_refusals_are_401_or_403_without_retry_hint() {
        let wrong_model = Refusal::Token(TokenError::ModelNotAllowed("x".into()));
        let response = wrong_model.response(Api::Anthropic);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.headers().get("x-should-retry").is_none());
        assert_eq!(body(response).await["error"]["type"], "permission_error");
        let revoked = Refusal::Token(TokenError::Revoked("r".into()));
        assert_eq!(
            revoked.response(Api::Openai).status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
