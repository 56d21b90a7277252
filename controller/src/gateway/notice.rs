//! The controller's two questions to the gateway, each signed with the tokens' key and bounded
//! in time: a run's usage (asked while it runs and when it ends, so the plan can put it on the
//! status and end a refused run `BudgetExceeded`), and revocation (when a run with models
//! ends, the gateway refuses the run's token from then on). Revocation is best effort: a
//! notice that does not arrive (the gateway down or restarted) leaves the token valid until it
//! expires at the run's deadline.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::tally::{MAX_ANSWER_BYTES, RunUsage};
use super::token::{Revocation, SigningKey, UsageQuery};
use crate::config::GatewaySettings;

/// Longest a notice or a question may take, connection and answer included: it runs on a
/// reconcile worker.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(5);

/// Tells the gateway of `settings` that `run` has ended (its tokens expire at `expires`). Plain
/// HTTP to the gateway's cluster IP, as sandboxes call it.
///
/// # Errors
/// Why the gateway did not take the notice (never the key or the notice itself).
pub async fn revoke(settings: &GatewaySettings, run: &str, expires: i64) -> Result<(), String> {
    let notice = key(settings)?.sign_revocation(&Revocation {
        run: run.to_string(),
        expires,
    });
    let request = http::Request::post(url(settings, "/revocations")).body(Full::from(notice));
    send(request, 0).await.map(drop)
}

/// What run `run` of `namespace` (its tokens expire at `expires`) has used, as the gateway of
/// `settings` says.
///
/// # Errors
/// Why there is no answer (never the key or the question itself).
pub async fn usage(
    settings: &GatewaySettings,
    namespace: &str,
    run: &str,
    expires: i64,
) -> Result<RunUsage, String> {
    let query = key(settings)?.sign_usage_query(&UsageQuery {
        namespace: namespace.to_string(),
        run: run.to_string(),
        expires,
    });
    let request = http::Request::get(url(settings, &format!("/runs/{run}/usage")))
        .header(http::header::AUTHORIZATION, format!("Bearer {query}"))
        .body(Full::default());
    let body = send(request, MAX_ANSWER_BYTES).await?;
    serde_json::from_slice(&body).map_err(|e| format!("the gateway's answer is not usage: {e}"))
}

fn key(settings: &GatewaySettings) -> Result<SigningKey, String> {
    SigningKey::new(&settings.token_key.0).ok_or_else(|| "the token key is too short".into())
}

fn url(settings: &GatewaySettings, path: &str) -> String {
    format!("{}{path}", settings.base_url.trim_end_matches('/'))
}

/// Sends `request` and reads up to `max` bytes of a successful answer, all within
/// [`NOTICE_TIMEOUT`].
async fn send(
    request: Result<http::Request<Full<Bytes>>, http::Error>,
    max: usize,
) -> Result<Bytes, String> {
    let request = request.map_err(|e| format!("cannot build a request to the gateway: {e}"))?;
    let url = request.uri().to_string();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("the gateway at {url} did not answer: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "the gateway at {url} answered {}",
                response.status()
            ));
        }
        Limited::new(response.into_body(), max)
            .collect()
            .await
            .map(|body| body.to_bytes())
            .map_err(|e| format!("the gateway's answer at {url} is unreadable or too long: {e}"))
    };
    tokio::time::timeout(NOTICE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("the gateway at {url} did not answer within {NOTICE_TIMEOUT:?}"))?
}
