//! The controller's side of revocation: when a run with models ends, it tells the gateway,
//! which refuses the run's token from then on. Best effort: a notice that does not arrive (the
//! gateway down or restarted) leaves the token valid until it expires at the run's deadline.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::token::{Revocation, SigningKey};
use crate::config::GatewaySettings;

/// Longest a notice may take, connection included.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(5);

/// Tells the gateway of `settings` that `run` has ended (its tokens expire at `expires`). Plain
/// HTTP to the gateway's cluster IP, as sandboxes call it.
///
/// # Errors
/// Why the gateway did not take the notice (never the key or the notice itself).
pub async fn revoke(settings: &GatewaySettings, run: &str, expires: i64) -> Result<(), String> {
    let key = SigningKey::new(&settings.token_key.0).ok_or("the token key is too short")?;
    let notice = key.sign_revocation(&Revocation {
        run: run.to_string(),
        expires,
    });
    let url = format!("{}/revocations", settings.base_url.trim_end_matches('/'));
    let request = http::Request::post(&url)
        .body(Full::new(Bytes::from(notice)))
        .map_err(|e| format!("cannot build a request to {url}: {e}"))?;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::time::timeout(NOTICE_TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("the gateway at {url} did not answer within {NOTICE_TIMEOUT:?}"))?
        .map_err(|e| format!("the gateway at {url} did not answer: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "the gateway at {url} answered {}",
            response.status()
        ))
    }
}
