//! The shipped Grafana dashboard against a real Prometheus that scrapes this controller
//! (`scripts/test.sh` starts both and names Prometheus' address in
//! `CRUCIBLE_E2E_PROMETHEUS`): after a run finishes, every expression of the dashboard evaluates
//! without error, and those about the run's namespace, evaluation, suite and quota return series.
//! The expressions are read from the chart's file, so a metric renamed on either side fails here.

use std::collections::BTreeMap;
use std::time::Duration;

use crucible::crd::EvaluationSuite;
use crucible::crd::suite::SuitePhase;
use crucible_e2e::dashboard::{
    Answer, dashboard_path, every_query_has_series, families, instant_query, is_model_usage,
    queries,
};
use crucible_e2e::{apply_typed, poll_until, quota_manifest, wait_for, with_temp_ns};
use kube::Api;

/// The one family a healthy run does not produce: it counts failed reconciles. Its name is
/// checked against the controller's registry by `controller/tests/dashboard_metrics.rs`. The
/// model usage families are not produced here either (this controller has no gateway):
/// `tests/models` requires their series instead.
const ONLY_AFTER_FAILURES: &[&str] = &["crucible_reconcile_failures_total"];

/// The suite's case: 20 samples, 15 of them passing (mean 0.75, so its score's interval has
/// two bounds: `crucible_evaluation_score_ci95_*` get series), and the same score as result.
const SAMPLES_AND_RESULT: &str = "import json, os
with open(os.environ['CRUCIBLE_SAMPLES_PATH'], 'w') as f:
    for i in range(20):
        f.write(json.dumps({'id': f'q{i}', 'score': float(i % 4 != 0)}) + '\\n')
print('CRUCIBLE_RESULT {\"score\": 0.75}')";

/// How long the scraped series may take to show every panel (scrape interval 1 s; a rate needs
/// two samples of a new series).
const SERIES_DEADLINE: Duration = Duration::from_secs(60);

fn prometheus() -> String {
    std::env::var("CRUCIBLE_E2E_PROMETHEUS").expect(
        "CRUCIBLE_E2E_PROMETHEUS=host:port of a Prometheus scraping the controller \
         (scripts/test.sh starts one: start_prometheus in scripts/lib.sh)",
    )
}

/// True when the expression reads only families a healthy run without models may leave
/// without series.
fn may_be_empty(expr: &str) -> bool {
    let read = families(expr);
    !read.is_empty()
        && read
            .into_iter()
            .all(|f| ONLY_AFTER_FAILURES.contains(&f) || is_model_usage(f))
}

#[tokio::test]
async fn every_dashboard_query_evaluates_and_the_runs_panels_have_series() {
    let addr = prometheus();
    let text = std::fs::read_to_string(dashboard_path()).expect("read the chart's dashboard");
    let dashboard = serde_json::from_str(&text).expect("the dashboard is JSON");
    let all = queries(&dashboard).expect("the dashboard's expressions");
    with_temp_ns("dashboard", |client, ns| async move {
        // A quota and a suite of one case that writes samples: the namespace then has every
        // kind of series the dashboard shows (queue, quota, evaluation, score and its
        // interval, suite).
        let quota = quota_manifest("team", serde_json::json!({"maxRunning": 2}));
        apply_typed::<crucible::crd::EvaluationQuota>(&client, &ns, &quota).await;
        let suite = serde_json::json!({
            "apiVersion": "crucible.dev/v1alpha1", "kind": "EvaluationSuite",
            "metadata": {"name": "panel"},
            "spec": {
                "parallelism": 1,
                "passThreshold": 0.5,
                "matrix": {"n": ["1"]},
                "template": {
                    "image": "localhost/crucible/python:3.11",
                    "command": ["python3", "-c", SAMPLES_AND_RESULT],
                    "timeout": "2m",
                    "resources": {"cpu": "100m", "memory": "64Mi"},
                }
            }
        });
        apply_typed::<EvaluationSuite>(&client, &ns, &suite).await;
        let suites: Api<EvaluationSuite> = Api::namespaced(client.clone(), &ns);
        let done = wait_for(&suites, "panel", Duration::from_secs(180), "finished", |s: &EvaluationSuite| {
            s.status.as_ref().and_then(|st| st.phase).is_some_and(|p| p != SuitePhase::Running)
        })
        .await;
        let status = done.status.expect("status");
        assert_eq!(status.phase, Some(SuitePhase::Succeeded), "{status:#?}");
        let evaluation = status.cases.first().expect("one case").evaluation.clone();

        let vars = BTreeMap::from([
            ("namespace", ns.clone()),
            ("evaluation", evaluation.clone()),
            ("suite", "panel".to_string()),
            ("resource", ".*".to_string()),
            ("__rate_interval", "1m".to_string()),
            ("__range", "1h".to_string()),
        ]);
        // First the run's score reaches Prometheus (the scrape after the finish) ...
        let score = format!("crucible_evaluation_score{{namespace=\"{ns}\",evaluation=\"{evaluation}\"}}");
        poll_until(SERIES_DEADLINE, "the run's score in Prometheus", || {
            let (addr, score) = (addr.clone(), score.clone());
            async move {
                matches!(instant_query(&addr, &score, Duration::from_secs(5)).await, Answer::Series(n) if n > 0)
                    .then_some(())
            }
        })
        .await;
        // ... then every expression.
        every_query_has_series(&addr, &all, &vars, may_be_empty, SERIES_DEADLINE).await;
    })
    .await;
}

#[test]
fn only_the_failure_counter_may_be_empty() {
    assert!(may_be_empty(
        "sum by (kind, reason) (rate(crucible_reconcile_failures_total[$__rate_interval]))"
    ));
    assert!(!may_be_empty(
        "sum(crucible_reconcile_failures_total) / sum(crucible_reconcile_runs_total)"
    ));
    assert!(!may_be_empty("vector(1)"));
    assert!(may_be_empty(
        "sum by (namespace) (increase(crucible_budget_exceeded_total[$__range]))"
    ));
    assert!(!may_be_empty(
        "sum(crucible_gateway_calls_total) / sum(crucible_evaluations)"
    ));
}
