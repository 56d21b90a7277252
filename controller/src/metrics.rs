//! Prometheus metrics (prometheus-client, OpenMetrics text). Labels are bounded: kinds and
//! fixed error reasons only, never object names.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-kind reconcile metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Kind reconciled.
    pub kind: String,
}

/// Labels of reconcile failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// Kind reconciled.
    pub kind: String,
    /// `Error::reason()`.
    pub reason: String,
}

/// The controller's metric families.
#[derive(Debug)]
pub struct Metrics {
    reconciles: Family<KindLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciles: Family::default(),
            failures: Family::default(),
            // 1 ms to ~16 s.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            }),
        }
    }
}

impl Metrics {
    /// Registers every family under the `crucible` prefix.
    pub fn register(self, registry: &mut Registry) -> Self {
        registry.register(
            "reconcile_runs",
            "Reconciles started",
            self.reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error reason",
            self.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles",
            self.duration.clone(),
        );
        self
    }

    /// Counts a reconcile of `kind` and measures it until the returned guard drops.
    pub fn reconcile_timer(&self, kind: &str) -> ReconcileTimer<'_> {
        let labels = KindLabels {
            kind: kind.to_string(),
        };
        self.reconciles.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: self,
            labels,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failure(&self, kind: &str, reason: &'static str) {
        self.failures
            .get_or_create(&FailureLabels {
                kind: kind.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: KindLabels,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn reconciles_and_failures_are_exported() {
        let mut registry = Registry::with_prefix("crucible");
        let metrics = Metrics::default().register(&mut registry);
        drop(metrics.reconcile_timer("Evaluation"));
        metrics.reconcile_failure("Evaluation", "ListPodsFailed");
        let mut text = String::new();
        encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains("crucible_reconcile_runs_total{kind=\"Evaluation\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "crucible_reconcile_failures_total{kind=\"Evaluation\",reason=\"ListPodsFailed\"} 1"
        ));
        assert!(text.contains("crucible_reconcile_duration_seconds_count{kind=\"Evaluation\"} 1"));
    }
}
