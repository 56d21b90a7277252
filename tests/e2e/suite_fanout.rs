//! Suites on a real cluster: parallelism bounds the running children as an independent pod
//! watcher sees them, every case finishes, and the status aggregates them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crucible::crd::EvaluationSuite;
use crucible::crd::suite::SuitePhase;
use crucible_e2e::{apply_typed, wait_for, watch_peak, with_temp_ns};
use kube::Api;

#[tokio::test]
async fn a_suite_with_parallelism_three_never_runs_more_than_three_children() {
    with_temp_ns("suite", |client, ns| async move {
        let (peak, done) = watch_peak(client.clone(), &ns, "crucible.dev/suite=wide");
        let suite = serde_json::json!({
            "apiVersion": "crucible.dev/v1alpha1", "kind": "EvaluationSuite",
            "metadata": {"name": "wide"},
            "spec": {
                "parallelism": 3,
                "passThreshold": 1.0,
                "matrix": {"n": ["1", "2", "3", "4", "5", "6", "7", "8"]},
                "template": {
                    "image": "localhost/crucible/python:3.11",
                    "command": ["python3", "-c",
                        "import os, time; time.sleep(2); n = int(os.environ['MATRIX_N']); print('CRUCIBLE_RESULT {\"score\": %d}' % n)"],
                    "timeout": "2m",
                    "resources": {"cpu": "100m", "memory": "64Mi"},
                }
            }
        });
        apply_typed::<EvaluationSuite>(&client, &ns, &suite).await;
        let api: Api<EvaluationSuite> = Api::namespaced(client.clone(), &ns);
        let finished = wait_for(&api, "wide", Duration::from_secs(300), "finished", |s: &EvaluationSuite| {
            s.status.as_ref().and_then(|st| st.phase).is_some_and(|p| p != SuitePhase::Running)
        })
        .await;
        done.store(true, Ordering::SeqCst);
        let status = finished.status.expect("status");
        assert_eq!(status.phase, Some(SuitePhase::Succeeded), "{status:#?}");
        assert_eq!((status.total, status.succeeded, status.failed), (8, 8, 0));
        assert_eq!(status.mean_score, Some(4.5));
        assert_eq!(status.pass_rate, Some(1.0));
        assert_eq!(status.cases.len(), 8);
        assert!(status.cases.iter().all(|c| c.evaluation.starts_with("wide-")));
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=3).contains(&peak), "the watcher saw {peak} suite pods alive at once");
    })
    .await;
}
