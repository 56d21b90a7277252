//! One call in flight: what it has reserved, what passed through, and, once it ends however it
//! ends (answered, failed, or the caller gone), its settlement and ledger record.

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::budget::Spent;
use super::catalog::Endpoint;
use super::ledger::{Record, RecordCalls};
use super::metrics::CallLabels;
use super::proxy::Gateway;
use super::token::Claims;
use super::usage::{Meter, Route};
use crate::digest::{hex, sha256_hex};

/// Most bytes of a response kept in the ledger with `recordCalls: Full`.
pub const MAX_RECORDED_BYTES: usize = 4 * 1024 * 1024;

/// A call between its reservation and its settlement.
pub struct Call {
    gateway: Arc<Gateway>,
    claims: Claims,
    model: String,
    endpoint: Arc<Endpoint>,
    route: Route,
    started: Instant,
    time: String,
    /// Unix second the call started (as `time` says): the bucket of its namespace's window.
    started_at: i64,
    status: u16,
    request_digest: String,
    request_body: Option<String>,
    response_hash: Sha256,
    meter: Option<Meter>,
    /// The response so far (`recordCalls: Full` only), up to [`MAX_RECORDED_BYTES`].
    recorded: Option<Vec<u8>>,
    settled: bool,
}

impl Call {
    /// A call of `claims`' run, reserved, about to be forwarded with `body`.
    pub fn start(
        gateway: Arc<Gateway>,
        claims: Claims,
        model: String,
        endpoint: Arc<Endpoint>,
        route: Route,
        streaming: bool,
        body: &[u8],
    ) -> Self {
        let full = claims.record_calls == RecordCalls::Full;
        let now = jiff::Timestamp::now();
        Self {
            gateway,
            model,
            endpoint,
            route,
            started: Instant::now(),
            time: now.to_string(),
            started_at: now.as_second(),
            status: 0,
            request_digest: format!("sha256:{}", sha256_hex(body)),
            request_body: full.then(|| String::from_utf8_lossy(body).into_owned()),
            response_hash: Sha256::new(),
            meter: Some(Meter::new(route, streaming)),
            recorded: full.then(Vec::new),
            settled: false,
            claims,
        }
    }

    /// The provider answered with `status`; its body follows.
    pub fn answered(&mut self, status: u16) {
        self.status = status;
    }

    /// Bytes of the response on their way to the caller.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.response_hash.update(bytes);
        if let Some(meter) = &mut self.meter {
            meter.feed(bytes);
        }
        if let Some(recorded) = &mut self.recorded {
            let room = MAX_RECORDED_BYTES.saturating_sub(recorded.len());
            recorded.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    /// The response ended normally.
    pub fn finish_answered(&mut self) {
        if (200..300).contains(&self.status) {
            self.settle(self.status, "ok", "ok");
        } else {
            let outcome = format!("the provider answered {}", self.status);
            self.settle(self.status, &outcome, "provider_error");
        }
    }

    /// The response broke off.
    pub fn fail(&mut self, outcome: &str) {
        self.settle(self.status, outcome, "incomplete");
    }

    /// The call ended without an answer (`status` 0), for `outcome`.
    pub fn finish(&mut self, status: u16, outcome: &str) {
        self.settle(status, outcome, "incomplete");
    }

    /// Settles the reservation with the usage seen, counts the call (`kind` is the metric's
    /// outcome) and appends the ledger record. Once.
    fn settle(&mut self, status: u16, outcome: &str, kind: &'static str) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let reported = self.meter.take().map(Meter::finish).unwrap_or_default();
        let price = self.endpoint.price(&self.model);
        let usage = reported.usage.unwrap_or_default();
        if let Ok(mut accounts) = self.gateway.accounts.lock()
            && let Some(account) = accounts.get_mut(&self.claims.run)
        {
            account.settle(&usage, &price);
        }
        // Only namespaces with a daily budget have a window; it counts the call before its
        // record is written, so a window built from the ledger meanwhile never holds it twice.
        if let Ok(mut windows) = self.gateway.windows.lock()
            && let Some(window) = windows.get_mut(&self.claims.namespace)
        {
            let tokens = usage.input_tokens.saturating_add(usage.output_tokens);
            window.add(self.started_at, tokens, price.cost(&usage), super::now());
        }
        let response_hash = std::mem::take(&mut self.response_hash).finalize();
        let latency_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let record = Record {
            seq: 0,
            time: std::mem::take(&mut self.time),
            namespace: self.claims.namespace.clone(),
            evaluation: self.claims.evaluation.clone(),
            run: self.claims.run.clone(),
            model: self.model.clone(),
            served_model: reported.served_model,
            path: format!("/v1{}", self.route.suffix()),
            status,
            outcome: outcome.to_string(),
            latency_ms,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_usd: price.cost(&usage),
            request_digest: std::mem::take(&mut self.request_digest),
            response_digest: format!("sha256:{}", hex(&response_hash)),
            request_body: self.request_body.take(),
            response_body: self
                .recorded
                .take()
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
            spent: Spent::default(),
            by_model: Vec::new(),
            prev: String::new(),
            hash: String::new(),
        };
        let labels = CallLabels {
            namespace: record.namespace.clone(),
            model: record.model.clone(),
            outcome: kind,
        };
        let seconds = self.started.elapsed().as_secs_f64();
        let (input, output) = (usage.input_tokens, usage.output_tokens);
        self.gateway
            .metrics
            .call(labels, input, output, record.cost_usd, seconds);
        // The ledger's writer thread appends it: the response's last byte never waits for
        // the disk. The budget is already settled above.
        self.gateway.writer.append(record, self.claims.expires);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.settled {
            self.finish(
                self.status,
                "the caller went away before the response ended",
            );
        }
    }
}
