//! Suites on a real cluster: parallelism bounds the running children as an independent pod
//! watcher sees them (also when its children are re-run by hand), every case finishes, and the
//! status aggregates them; cases with the same files share one workspace ConfigMap.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crucible::crd::suite::SuitePhase;
use crucible::crd::{Evaluation, EvaluationSuite};
use crucible_e2e::{
    apply_typed, poll_until, wait_for, wait_suite_finished, watch_peak, with_temp_ns,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

/// A suite `name` of eight cases (matrix `n` = 1..8, each sleeping 2 s and scoring `n`) under
/// `parallelism: 3`.
fn eight_cases(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "crucible.dev/v1alpha1", "kind": "EvaluationSuite",
        "metadata": {"name": name},
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
    })
}

#[tokio::test]
async fn a_suite_with_parallelism_three_never_runs_more_than_three_children() {
    with_temp_ns("suite", |client, ns| async move {
        let (peak, done) = watch_peak(client.clone(), &ns, "crucible.dev/suite=wide");
        let suite = eight_cases("wide");
        apply_typed::<EvaluationSuite>(&client, &ns, &suite).await;
        let api: Api<EvaluationSuite> = Api::namespaced(client.clone(), &ns);
        let finished = wait_suite_finished(&api, "wide", Duration::from_secs(300)).await;
        done.store(true, Ordering::SeqCst);
        let status = finished.status.expect("status");
        assert_eq!(status.phase, Some(SuitePhase::Succeeded), "{status:#?}");
        assert_eq!((status.total, status.succeeded, status.failed), (8, 8, 0));
        assert_eq!(status.mean_score, Some(4.5));
        assert_eq!(status.pass_rate, Some(1.0));
        assert_eq!(status.cases.len(), 8);
        assert!(
            status
                .cases
                .iter()
                .all(|c| c.evaluation.starts_with("wide-"))
        );
        let peak = peak.load(Ordering::SeqCst);
        assert!(
            (1..=3).contains(&peak),
            "the watcher saw {peak} suite pods alive at once"
        );
    })
    .await;
}

/// The shared workspace ConfigMaps of suite `suite` in `ns`.
async fn workspaces(client: &kube::Client, ns: &str, suite: &str) -> Vec<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let selector = format!("crucible.dev/suite={suite},crucible.dev/source-digest");
    api.list(&ListParams::default().labels(&selector))
        .await
        .expect("list ConfigMaps")
        .items
}

async fn wait_done(api: &Api<EvaluationSuite>, name: &str, generation: i64) -> EvaluationSuite {
    wait_for(
        api,
        name,
        Duration::from_secs(300),
        "finished",
        |s: &EvaluationSuite| {
            s.status.as_ref().is_some_and(|st| {
                st.observed_generation == Some(generation)
                    && st.phase.is_some_and(|p| p != SuitePhase::Running)
                    && st.succeeded == st.total
            })
        },
    )
    .await
}

#[tokio::test]
async fn suite_cases_with_identical_files_share_one_workspace_that_goes_with_the_suite() {
    with_temp_ns("writes-shared", |client, ns| async move {
        let suite = |code: &str| {
            serde_json::json!({
                "apiVersion": "crucible.dev/v1alpha1", "kind": "EvaluationSuite",
                "metadata": {"name": "same"},
                "spec": {
                    "parallelism": 4,
                    "cases": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}],
                    "template": {
                        "image": "localhost/crucible/python:3.11",
                        "command": ["python3", "/workspace/eval.py"],
                        "source": {"inline": {"files": {"eval.py": code}}},
                        "timeout": "2m",
                        "resources": {"cpu": "100m", "memory": "64Mi"},
                    }
                }
            })
        };
        apply_typed::<EvaluationSuite>(
            &client,
            &ns,
            &suite("print('CRUCIBLE_RESULT {\"score\": 1}')"),
        )
        .await;
        let api: Api<EvaluationSuite> = Api::namespaced(client.clone(), &ns);
        let done = wait_done(&api, "same", 1).await;
        let status = done.status.clone().expect("status");
        assert_eq!(status.phase, Some(SuitePhase::Succeeded), "{status:#?}");
        let maps = workspaces(&client, &ns, "same").await;
        assert_eq!(
            maps.len(),
            1,
            "one ConfigMap for four cases with the same files"
        );
        let first = &maps[0];
        assert_eq!(first.immutable, Some(true));
        let owners = first.owner_references();
        assert_eq!(
            (owners.len(), owners[0].kind.as_str(), Some(&owners[0].uid)),
            (1, "EvaluationSuite", done.metadata.uid.as_ref())
        );
        // Every case ran from it.
        let evaluations: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let children = evaluations
            .list(&ListParams::default().labels("crucible.dev/suite=same"))
            .await
            .expect("children")
            .items;
        assert_eq!(children.len(), 4);
        let digest = crucible::run::workspace::content_digest(first);
        for child in &children {
            let ran = child.status.as_ref().and_then(|s| s.provenance.as_ref());
            assert_eq!(ran.and_then(|p| p.source_digest.as_ref()), Some(&digest));
        }
        // New files: the cases run from a new ConfigMap, the old one is removed.
        apply_typed::<EvaluationSuite>(
            &client,
            &ns,
            &suite("print('CRUCIBLE_RESULT {\"score\": 0.9}')"),
        )
        .await;
        wait_done(&api, "same", 2).await;
        let maps = workspaces(&client, &ns, "same").await;
        assert_eq!(
            maps.len(),
            1,
            "{:?}",
            maps.iter().map(|m| m.name_any()).collect::<Vec<_>>()
        );
        assert_ne!(maps[0].name_any(), first.name_any());
        api.delete("same", &DeleteParams::background())
            .await
            .expect("delete");
        poll_until(
            Duration::from_secs(120),
            "the shared ConfigMap to be collected",
            || {
                let (client, ns) = (client.clone(), ns.clone());
                async move {
                    workspaces(&client, &ns, "same")
                        .await
                        .is_empty()
                        .then_some(())
                }
            },
        )
        .await;
    })
    .await;
}

/// Every child of a `parallelism: 3` suite re-run by hand at once: the children wait for the
/// suite (queue reason `SuiteParallelism`), and an independent pod watcher never sees more than
/// three of the re-runs' pods alive; every child ends with its re-run's result.
#[tokio::test]
async fn children_rerun_by_hand_run_at_most_parallelism_at_once() {
    with_temp_ns("suite-hand", |client, ns| async move {
        let suite = eight_cases("hand");
        apply_typed::<EvaluationSuite>(&client, &ns, &suite).await;
        let suites: Api<EvaluationSuite> = Api::namespaced(client.clone(), &ns);
        wait_done(&suites, "hand", 1).await;
        let evaluations: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let children: Vec<String> = evaluations
            .list(&ListParams::default().labels("crucible.dev/suite=hand"))
            .await
            .expect("children")
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        assert_eq!(children.len(), 8);
        // From here on, every pod of the suite alive at once is a re-run's.
        let (peak, done) = watch_peak(client.clone(), &ns, "crucible.dev/suite=hand");
        let patch =
            serde_json::json!({"metadata": {"annotations": {"crucible.dev/rerun": "by-hand"}}});
        let annotate = children.iter().map(|name| {
            let evaluations = evaluations.clone();
            let patch = patch.clone();
            async move {
                evaluations
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("annotate a child");
            }
        });
        futures::future::join_all(annotate).await;
        // Five of the eight wait at least one 2-second run for a slot: the hold is seen.
        poll_until(
            Duration::from_secs(60),
            "a child waiting for its suite",
            || {
                let evaluations = evaluations.clone();
                async move {
                    let list = evaluations.list(&ListParams::default()).await.ok()?;
                    list.items
                        .iter()
                        .any(|e| {
                            e.status
                                .as_ref()
                                .and_then(|s| s.queue.as_ref()?.reason.as_deref())
                                .is_some_and(|r| r.starts_with("SuiteParallelism: "))
                        })
                        .then_some(())
                }
            },
        )
        .await;
        for name in &children {
            wait_for(
                &evaluations,
                name,
                Duration::from_secs(300),
                "finished with its re-run",
                |e: &Evaluation| {
                    e.status.as_ref().is_some_and(|s| {
                        s.rerun.as_deref() == Some("by-hand")
                            && s.phase.is_some_and(|p| p.is_finished())
                    })
                },
            )
            .await;
        }
        done.store(true, Ordering::SeqCst);
        let peak = peak.load(Ordering::SeqCst);
        assert!(
            (1..=3).contains(&peak),
            "the watcher saw {peak} re-run pods alive at once"
        );
        let suite = wait_done(&suites, "hand", 1).await;
        assert_eq!(suite.status.map(|s| (s.succeeded, s.total)), Some((8, 8)));
    })
    .await;
}
