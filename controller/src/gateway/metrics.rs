//! The gateway's metrics (`crucible_gateway_*`). Labels are bounded: `namespace` comes only
//! from a verified token (the controller mints them), `model` only from the endpoints file,
//! `outcome` and `reason` are fixed words; nothing a caller writes becomes a label.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `{namespace, model, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Namespace of the run (from its token).
    pub namespace: String,
    /// Model id requested.
    pub model: String,
    /// `ok`, `provider_error` (the provider answered non-2xx) or `incomplete` (no answer,
    /// broken off, or the caller gone).
    pub outcome: &'static str,
}

/// `{namespace, model}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// Namespace of the run.
    pub namespace: String,
    /// Model id requested.
    pub model: String,
}

/// `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The error code of the refusal (`invalid_api_key`, `budget_exceeded`, …).
    pub reason: &'static str,
}

/// The gateway's families.
#[derive(Clone)]
pub struct Metrics {
    calls: Family<CallLabels, Counter>,
    input_tokens: Family<ModelLabels, Counter>,
    output_tokens: Family<ModelLabels, Counter>,
    cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    duration: Family<ModelLabels, Histogram>,
    refusals: Family<RefusalLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        // 1 ms doubling to ~9 min: from a cached answer to a long stream.
        let buckets = || Histogram::new(exponential_buckets(0.001, 2.0, 20));
        Self {
            calls: Family::default(),
            input_tokens: Family::default(),
            output_tokens: Family::default(),
            cost: Family::default(),
            duration: Family::new_with_constructor(buckets),
            refusals: Family::default(),
        }
    }
}

impl Metrics {
    /// Registers every family under `registry`'s prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("gateway_calls", "Model calls forwarded", self.calls.clone());
        registry.register(
            "gateway_input_tokens",
            "Input tokens the providers reported",
            self.input_tokens.clone(),
        );
        registry.register(
            "gateway_output_tokens",
            "Output tokens the providers reported",
            self.output_tokens.clone(),
        );
        registry.register(
            "gateway_cost_usd",
            "Cost of the calls at the endpoints' prices, in US dollars",
            self.cost.clone(),
        );
        registry.register(
            "gateway_call_duration_seconds",
            "Duration of forwarded calls, streaming included",
            self.duration.clone(),
        );
        registry.register(
            "gateway_refusals",
            "Calls the gateway refused or could not complete, by error code",
            self.refusals.clone(),
        );
    }

    /// One call that was forwarded, when it ends.
    pub fn call(&self, labels: CallLabels, input: u64, output: u64, cost: f64, seconds: f64) {
        let model = ModelLabels {
            namespace: labels.namespace.clone(),
            model: labels.model.clone(),
        };
        self.calls.get_or_create(&labels).inc();
        self.input_tokens.get_or_create(&model).inc_by(input);
        self.output_tokens.get_or_create(&model).inc_by(output);
        self.cost.get_or_create(&model).inc_by(cost);
        self.duration.get_or_create(&model).observe(seconds);
    }

    /// One call refused.
    pub fn refusal(&self, reason: &'static str) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_refusals_appear_in_the_exposition() {
        let metrics = Metrics::default();
        let mut registry = Registry::with_prefix("crucible");
        metrics.register(&mut registry);
        let labels = CallLabels {
            namespace: "team-a".into(),
            model: "m".into(),
            outcome: "ok",
        };
        metrics.call(labels, 3, 5, 0.25, 0.01);
        metrics.refusal("budget_exceeded");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for series in [
            r#"crucible_gateway_calls_total{namespace="team-a",model="m",outcome="ok"} 1"#,
            r#"crucible_gateway_output_tokens_total{namespace="team-a",model="m"} 5"#,
            r#"crucible_gateway_cost_usd_total{namespace="team-a",model="m"} 0.25"#,
            r#"crucible_gateway_refusals_total{reason="budget_exceeded"} 1"#,
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }
}
