//! Prometheus metrics (prometheus-client, OpenMetrics text). Labels are bounded: kinds, phases,
//! namespaces and fixed error reasons; the per-object families (`evaluation_score` and its
//! interval, `evaluation_score_ci95_low`/`_high`) share a configurable cap on their number of
//! series. `budget_exceeded` counts runs per namespace; the model calls, tokens and cost are the
//! gateway's families (`gateway::metrics`), counted per call where the call is made.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Default cap on `crucible_evaluation_score` series.
pub const DEFAULT_SCORE_SERIES_LIMIT: usize = 10_000;

type FloatGauge = Gauge<f64, AtomicU64>;

/// The `resource` values of the quota series.
pub const QUOTA_RESOURCES: [&str; 4] = ["running", "cpu", "memory", "gpu"];

/// `{kind}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Kind reconciled.
    pub kind: String,
}

/// `{kind, reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// Kind reconciled.
    pub kind: String,
    /// `Error::reason()`.
    pub reason: String,
}

/// `{namespace, phase}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Namespace.
    pub namespace: String,
    /// Phase.
    pub phase: String,
}

/// `{namespace}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    /// Namespace.
    pub namespace: String,
}

/// `{namespace, resource}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    /// Namespace.
    pub namespace: String,
    /// `running`, `cpu`, `memory` or `gpu`.
    pub resource: String,
}

/// `{outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Final phase of the run.
    pub outcome: String,
}

/// `{namespace, evaluation}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScoreLabels {
    /// Namespace.
    pub namespace: String,
    /// Evaluation name.
    pub evaluation: String,
}

/// `{namespace, suite}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SuiteLabels {
    /// Namespace.
    pub namespace: String,
    /// Suite name.
    pub suite: String,
}

/// `{runtime_class, check}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CanaryLabels {
    /// RuntimeClass the canary ran under.
    pub runtime_class: String,
    /// The check that failed (`canary::Check::name`).
    pub check: String,
}

/// `{runtime_class}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuntimeClassLabels {
    /// RuntimeClass.
    pub runtime_class: String,
}

/// The controller's metric families.
#[derive(Debug)]
pub struct Metrics {
    reconciles: Family<KindLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
    evaluations: Family<PhaseLabels, Gauge>,
    queue_depth: Family<NamespaceLabels, Gauge>,
    queue_wait: Histogram,
    quota_used: Family<QuotaLabels, FloatGauge>,
    quota_limit: Family<QuotaLabels, FloatGauge>,
    evaluation_duration: Family<OutcomeLabels, Histogram>,
    evaluation_score: Family<ScoreLabels, FloatGauge>,
    /// The bounds of the 95% interval of the score's samples, series for series with the score.
    score_low: Family<ScoreLabels, FloatGauge>,
    score_high: Family<ScoreLabels, FloatGauge>,
    suite_mean_score: Family<SuiteLabels, FloatGauge>,
    suite_pass_rate: Family<SuiteLabels, FloatGauge>,
    canary_failures: Family<CanaryLabels, Counter>,
    sandbox_verified: Family<RuntimeClassLabels, Gauge>,
    /// Runs that ended `BudgetExceeded`, counted in the reconcile that ends them.
    budget_exceeded: Family<NamespaceLabels, Counter>,
    score_limit: usize,
    /// Last phase counted per Evaluation uid, so the phase gauge moves instead of growing.
    phases: Mutex<HashMap<String, PhaseLabels>>,
    /// Score series in use, for the cap.
    scores: Mutex<HashSet<ScoreLabels>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(DEFAULT_SCORE_SERIES_LIMIT)
    }
}

impl Metrics {
    /// Metrics with at most `score_limit` per-evaluation score series (0 turns them off).
    pub fn new(score_limit: usize) -> Self {
        // 1 ms to ~16 s for reconciles; 1 s to ~9 h for runs and queue waits.
        let reconcile_buckets = || Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let run_buckets = || Histogram::new(exponential_buckets(1.0, 2.0, 15));
        Metrics {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(reconcile_buckets),
            evaluations: Family::default(),
            queue_depth: Family::default(),
            queue_wait: run_buckets(),
            quota_used: Family::default(),
            quota_limit: Family::default(),
            evaluation_duration: Family::new_with_constructor(run_buckets),
            evaluation_score: Family::default(),
            score_low: Family::default(),
            score_high: Family::default(),
            suite_mean_score: Family::default(),
            suite_pass_rate: Family::default(),
            canary_failures: Family::default(),
            sandbox_verified: Family::default(),
            budget_exceeded: Family::default(),
            score_limit,
            phases: Mutex::default(),
            scores: Mutex::default(),
        }
    }

    /// Registers every family (under the registry's `crucible` prefix).
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
        registry.register(
            "evaluations",
            "Evaluations by namespace and phase",
            self.evaluations.clone(),
        );
        registry.register(
            "queue_depth",
            "Evaluations waiting for admission",
            self.queue_depth.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time from queueing to admission",
            self.queue_wait.clone(),
        );
        registry.register(
            "quota_used",
            "Quota in use by namespace and resource",
            self.quota_used.clone(),
        );
        registry.register(
            "quota_limit",
            "Quota limit by namespace and resource",
            self.quota_limit.clone(),
        );
        registry.register(
            "evaluation_duration_seconds",
            "Duration of finished runs by outcome",
            self.evaluation_duration.clone(),
        );
        registry.register(
            "evaluation_score",
            "Score of the last finished run of an Evaluation (capped number of series)",
            self.evaluation_score.clone(),
        );
        registry.register(
            "evaluation_score_ci95_low",
            "Lower bound of the 95% interval of the last scored run's samples mean (series as evaluation_score)",
            self.score_low.clone(),
        );
        registry.register(
            "evaluation_score_ci95_high",
            "Upper bound of the 95% interval of the last scored run's samples mean (series as evaluation_score)",
            self.score_high.clone(),
        );
        registry.register(
            "suite_mean_score",
            "Mean score of a suite's finished cases",
            self.suite_mean_score.clone(),
        );
        registry.register(
            "suite_pass_rate",
            "Fraction of a suite's cases that passed",
            self.suite_pass_rate.clone(),
        );
        registry.register(
            "sandbox_canary_failures",
            "Sandbox canary runs that failed, by RuntimeClass and first failed check",
            self.canary_failures.clone(),
        );
        registry.register(
            "sandbox_verified",
            "1 while the sandbox canary has verified the RuntimeClass, else 0 (runs of it are held)",
            self.sandbox_verified.clone(),
        );
        registry.register(
            "budget_exceeded",
            "Runs that ended BudgetExceeded (a model call refused for the run's budget), by namespace",
            self.budget_exceeded.clone(),
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

    /// Records the current phase of an Evaluation (by uid); `None` forgets it.
    pub fn set_phase(&self, uid: &str, namespace: &str, phase: Option<&str>) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        let next = phase.map(|p| PhaseLabels {
            namespace: namespace.to_string(),
            phase: p.to_string(),
        });
        let previous = match &next {
            Some(labels) => phases.insert(uid.to_string(), labels.clone()),
            None => phases.remove(uid),
        };
        if previous == next {
            return;
        }
        if let Some(old) = previous {
            // A series at 0 is dropped (absent reads as 0), so namespaces that come and go
            // leave no series behind; the `phases` lock keeps this from racing an increment.
            let was = self.evaluations.get_or_create(&old).dec();
            if was <= 1 {
                self.evaluations.remove(&old);
            }
        }
        if let Some(new) = next {
            self.evaluations.get_or_create(&new).inc();
        }
    }

    /// Records a finished run's duration and score, with the 95% interval of its samples
    /// (`(low, high)`) when it has one. A scored run without an interval removes the previous
    /// run's, so a band never belongs to another run than the score.
    pub fn finished(
        &self,
        namespace: &str,
        name: &str,
        outcome: &str,
        seconds: f64,
        score: Option<f64>,
        ci95: Option<(f64, f64)>,
    ) {
        self.evaluation_duration
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .observe(seconds);
        let Some(score) = score else { return };
        let labels = ScoreLabels {
            namespace: namespace.to_string(),
            evaluation: name.to_string(),
        };
        let mut scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
        if scores.contains(&labels) || scores.len() < self.score_limit {
            scores.insert(labels.clone());
            self.evaluation_score.get_or_create(&labels).set(score);
            match ci95 {
                Some((low, high)) => {
                    self.score_low.get_or_create(&labels).set(low);
                    self.score_high.get_or_create(&labels).set(high);
                }
                None => {
                    self.score_low.remove(&labels);
                    self.score_high.remove(&labels);
                }
            }
        }
    }

    /// Counts a run of `namespace` that ended `BudgetExceeded`. The caller counts each run once:
    /// in the reconcile whose status ends it (`evaluation::report`). Kept when the namespace's
    /// other series go (a counter that restarted at 0 would read as a reset), so at most one
    /// series per namespace that had such a run since this process started.
    pub fn budget_exceeded(&self, namespace: &str) {
        self.budget_exceeded
            .get_or_create(&NamespaceLabels {
                namespace: namespace.to_string(),
            })
            .inc();
    }

    /// Gives `namespace` its `budget_exceeded` series at 0 once a run with models is seen there:
    /// Prometheus' `increase()` starts from a series' first sample, so a series born at 1 would
    /// hide the namespace's first BudgetExceeded run from the dashboard.
    pub fn models_used_in(&self, namespace: &str) {
        // The guard is dropped at once: creating the series is all that is wanted.
        let _series = self.budget_exceeded.get_or_create(&NamespaceLabels {
            namespace: namespace.to_string(),
        });
    }

    /// Drops the per-object series of a deleted Evaluation.
    pub fn forget_evaluation(&self, uid: &str, namespace: &str, name: &str) {
        self.set_phase(uid, namespace, None);
        let labels = ScoreLabels {
            namespace: namespace.to_string(),
            evaluation: name.to_string(),
        };
        let mut scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
        if scores.remove(&labels) {
            self.evaluation_score.remove(&labels);
            self.score_low.remove(&labels);
            self.score_high.remove(&labels);
        }
    }

    /// Sets a namespace's queue depth.
    pub fn set_queue_depth(&self, namespace: &str, depth: usize) {
        let labels = NamespaceLabels {
            namespace: namespace.to_string(),
        };
        self.queue_depth
            .get_or_create(&labels)
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Drops a namespace's queue and quota series (nothing queued or admitted, no quota), so
    /// their number follows the namespaces in use, not every namespace ever seen.
    pub fn forget_namespace(&self, namespace: &str) {
        self.queue_depth.remove(&NamespaceLabels {
            namespace: namespace.to_string(),
        });
        for resource in QUOTA_RESOURCES {
            let labels = QuotaLabels {
                namespace: namespace.to_string(),
                resource: resource.to_string(),
            };
            self.quota_used.remove(&labels);
            self.quota_limit.remove(&labels);
        }
    }

    /// Records how long a run waited for admission.
    pub fn admitted_after(&self, seconds: f64) {
        self.queue_wait.observe(seconds);
    }

    /// Sets a namespace's quota use and limit of one resource (`None`: no limit).
    pub fn set_quota(&self, namespace: &str, resource: &str, used: f64, limit: Option<f64>) {
        let labels = QuotaLabels {
            namespace: namespace.to_string(),
            resource: resource.to_string(),
        };
        self.quota_used.get_or_create(&labels).set(used);
        match limit {
            Some(limit) => {
                self.quota_limit.get_or_create(&labels).set(limit);
            }
            None => {
                self.quota_limit.remove(&labels);
            }
        }
    }

    /// Sets a suite's aggregate figures.
    pub fn set_suite(&self, namespace: &str, suite: &str, mean_score: Option<f64>, pass_rate: f64) {
        let labels = SuiteLabels {
            namespace: namespace.to_string(),
            suite: suite.to_string(),
        };
        match mean_score {
            Some(mean) => {
                self.suite_mean_score.get_or_create(&labels).set(mean);
            }
            None => {
                self.suite_mean_score.remove(&labels);
            }
        }
        self.suite_pass_rate.get_or_create(&labels).set(pass_rate);
    }

    /// Drops the series of a deleted suite.
    pub fn forget_suite(&self, namespace: &str, suite: &str) {
        let labels = SuiteLabels {
            namespace: namespace.to_string(),
            suite: suite.to_string(),
        };
        self.suite_mean_score.remove(&labels);
        self.suite_pass_rate.remove(&labels);
    }

    /// Counts a failed canary run of `runtime_class` at `check`.
    pub fn sandbox_canary_failed(&self, runtime_class: &str, check: &str) {
        self.canary_failures
            .get_or_create(&CanaryLabels {
                runtime_class: runtime_class.to_string(),
                check: check.to_string(),
            })
            .inc();
    }

    /// Sets whether `runtime_class` is verified.
    pub fn set_sandbox_verified(&self, runtime_class: &str, verified: bool) {
        self.sandbox_verified
            .get_or_create(&RuntimeClassLabels {
                runtime_class: runtime_class.to_string(),
            })
            .set(i64::from(verified));
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

    fn render(metrics: Metrics) -> (Metrics, String) {
        let mut registry = Registry::with_prefix("crucible");
        let metrics = metrics.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encodes");
        (metrics, text)
    }

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

    #[test]
    fn phase_gauge_moves_with_each_evaluation() {
        let m = Metrics::default();
        m.set_phase("u1", "a", Some("Running"));
        m.set_phase("u2", "a", Some("Running"));
        m.set_phase("u1", "a", Some("Succeeded"));
        m.set_phase("u1", "a", Some("Succeeded"));
        let (m, text) = render(m);
        assert!(
            text.contains("crucible_evaluations{namespace=\"a\",phase=\"Running\"} 1"),
            "{text}"
        );
        assert!(text.contains("crucible_evaluations{namespace=\"a\",phase=\"Succeeded\"} 1"));
        m.forget_evaluation("u1", "a", "x");
        let (_, text) = render(m);
        assert!(
            !text.contains("crucible_evaluations{namespace=\"a\",phase=\"Succeeded\"}"),
            "a series at 0 is dropped: {text}"
        );
        assert!(text.contains("crucible_evaluations{namespace=\"a\",phase=\"Running\"} 1"));
    }

    #[test]
    fn score_series_are_capped() {
        let m = Metrics::new(2);
        for name in ["a", "b", "c"] {
            m.finished("ns", name, "Succeeded", 3.0, Some(0.5), None);
        }
        m.finished("ns", "a", "Succeeded", 3.0, Some(0.9), None);
        let (_, text) = render(m);
        assert!(text.contains("crucible_evaluation_score{namespace=\"ns\",evaluation=\"a\"} 0.9"));
        assert!(text.contains("evaluation=\"b\""));
        assert!(
            !text.contains("evaluation=\"c\""),
            "third series over the cap: {text}"
        );
        assert!(
            text.contains("crucible_evaluation_duration_seconds_count{outcome=\"Succeeded\"} 4")
        );
        let (_, off) = render(Metrics::new(0));
        assert!(!off.contains("evaluation=\""));
    }

    #[test]
    fn score_intervals_follow_their_score_series_and_its_cap() {
        let low = |e: &str| {
            format!("crucible_evaluation_score_ci95_low{{namespace=\"ns\",evaluation=\"{e}\"}}")
        };
        let high = |e: &str| {
            format!("crucible_evaluation_score_ci95_high{{namespace=\"ns\",evaluation=\"{e}\"}}")
        };
        let m = Metrics::new(2);
        m.finished("ns", "a", "Succeeded", 3.0, Some(0.8), Some((0.7, 0.9)));
        m.finished("ns", "b", "Succeeded", 3.0, Some(0.5), None);
        m.finished("ns", "c", "Succeeded", 3.0, Some(0.5), Some((0.4, 0.6)));
        let (m, text) = render(m);
        assert!(text.contains(&format!("{} 0.7", low("a"))), "{text}");
        assert!(text.contains(&format!("{} 0.9", high("a"))), "{text}");
        assert!(
            !text.contains(&low("b")),
            "a run without samples has no band: {text}"
        );
        assert!(
            !text.contains(&high("c")),
            "over the cap like its score: {text}"
        );
        // A failed run without a score leaves the last score and its band as they were.
        m.finished("ns", "a", "Failed", 3.0, None, None);
        let (m, text) = render(m);
        assert!(text.contains(&format!("{} 0.7", low("a"))), "{text}");
        // The next scored run without samples removes the previous run's band.
        m.finished("ns", "a", "Succeeded", 3.0, Some(0.6), None);
        let (m, text) = render(m);
        assert!(
            !text.contains(&low("a")) && !text.contains(&high("a")),
            "{text}"
        );
        m.finished("ns", "a", "Succeeded", 3.0, Some(0.8), Some((0.75, 0.85)));
        m.forget_evaluation("u", "ns", "a");
        let (_, text) = render(m);
        assert!(
            !text.contains("evaluation=\"a\""),
            "removed with the score: {text}"
        );
    }

    #[test]
    fn budget_exceeded_runs_are_counted_per_namespace_and_outlive_its_other_series() {
        let m = Metrics::default();
        m.models_used_in("c");
        m.models_used_in("a");
        m.budget_exceeded("a");
        m.models_used_in("a");
        m.budget_exceeded("a");
        m.budget_exceeded("b");
        m.forget_namespace("a");
        let (_, text) = render(m);
        assert!(
            text.contains(r#"crucible_budget_exceeded_total{namespace="a"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"crucible_budget_exceeded_total{namespace="b"} 1"#));
        assert!(
            text.contains(r#"crucible_budget_exceeded_total{namespace="c"} 0"#),
            "a namespace with model runs has its series before its first BudgetExceeded: {text}"
        );
    }

    #[test]
    fn canary_failures_and_verified_classes_are_exported() {
        let m = Metrics::default();
        m.sandbox_canary_failed("gvisor", "kernel");
        m.sandbox_canary_failed("gvisor", "kernel");
        m.set_sandbox_verified("gvisor", false);
        m.set_sandbox_verified("gvisor-net", true);
        let (_, text) = render(m);
        assert!(
            text.contains(
                r#"crucible_sandbox_canary_failures_total{runtime_class="gvisor",check="kernel"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"crucible_sandbox_verified{runtime_class="gvisor"} 0"#));
        assert!(text.contains(r#"crucible_sandbox_verified{runtime_class="gvisor-net"} 1"#));
    }
}
