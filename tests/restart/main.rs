//! A controller restart while a retry is pending (issue 20, item 4): under `maxRunning: 1`, run
//! `a` (`retries: 1`) runs and `b` waits; the controller is killed, `a`'s pod force-deleted, and a
//! controller started again. `a`'s retry is admitted like any run: never more live pods than
//! `maxRunning`, `a` finishes on its second attempt and `b` after it.
//!
//! And a restart while a run's samples wait to be carried out (issue 19, item 2): the controller
//! is killed while the run's pod runs; the pod finishes with no controller; the next controller
//! carries the samples from the pod's log to the store, once. And the controller killed in the
//! middle of such a transfer: the next one stores the samples once, complete.
//!
//! Starts its own controllers (`CRUCIBLE_BIN`), scoped with `--namespace` to the test's
//! namespace, with `CRUCIBLE_SYSTEM_NAMESPACE`: `scripts/test.sh` runs it while no other
//! controller runs.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crucible::crd::evaluation::Phase;
use crucible::crd::samples::SamplesStatus;
use crucible::crd::{Evaluation, EvaluationQuota};
use crucible::samples::protocol::{Limits, Validator};
use crucible::store::Store;
use crucible_e2e::{
    OwnController, apply_evaluation, apply_typed, parse_evaluation, poll_until, quota_manifest,
    wait_finished, wait_phase, watch_peak, with_temp_ns,
};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DeleteParams;

const LOG: &str = "crucible-restart-e2e.log";

fn controller(ns: &str) -> OwnController {
    controller_with(ns, &[])
}

/// A controller of the test's with `args` added. The binary's tests run one at a time
/// (`--test-threads=1` in scripts/test.sh): one metrics port, one canary.
fn controller_with(ns: &str, args: &[&str]) -> OwnController {
    let system = std::env::var("CRUCIBLE_SYSTEM_NAMESPACE")
        .unwrap_or_else(|_| panic!("CRUCIBLE_SYSTEM_NAMESPACE must be set (run scripts/test.sh)"));
    let mut all = vec!["--metrics-addr", "127.0.0.1:18094"];
    all.extend_from_slice(args);
    OwnController::start(LOG, ns, &system, &all)
}

/// A `file://` results store in a temporary directory (removed when the guard drops).
fn file_store() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}", dir.path().display());
    (dir, url)
}

/// The `file://` store in `store_dir` holds one run directory of Evaluation `name` of `ns`, and
/// its bundle is the one `samples` names (its digest); returns the bundle's URI.
fn the_one_bundle(
    store_dir: &std::path::Path,
    ns: &str,
    name: &str,
    samples: &SamplesStatus,
) -> String {
    let runs = std::fs::read_dir(store_dir.join(ns).join(name))
        .expect("the evaluation's directory")
        .count();
    assert_eq!(runs, 1, "one run directory");
    let uri = samples.uri.clone().expect("uri");
    let bytes = std::fs::read(uri.strip_prefix("file://").expect("a file URI")).expect("bundle");
    assert_eq!(
        samples.digest,
        Some(format!("sha256:{}", crucible::digest::sha256_hex(&bytes))),
        "the stored bundle is the one the status names"
    );
    uri
}

fn sleeper(name: &str, retries: u32) -> Evaluation {
    parse_evaluation(&format!(
        "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {{name: {name}}}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -c, \"import time; time.sleep(15); print('CRUCIBLE_RESULT {{\\\"score\\\": 1}}')\"]\n  retries: {retries}\n  timeout: 2m\n  resources: {{cpu: 100m, memory: 64Mi}}\n"
    ))
}

#[tokio::test]
async fn a_restart_while_a_retry_is_pending_never_runs_more_pods_than_max_running() {
    with_temp_ns("restart", |client, ns| async move {
        let quota = quota_manifest("one", serde_json::json!({"maxRunning": 1}));
        let _: EvaluationQuota = apply_typed(&client, &ns, &quota).await;
        let (peak, done) = watch_peak(client.clone(), &ns, "crucible.dev/managed=true");
        let first = controller(&ns);
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        apply_evaluation(&client, &ns, &sleeper("a", 1)).await;
        let running = wait_phase(&api, "a", Phase::Running, Duration::from_secs(120)).await;
        apply_evaluation(&client, &ns, &sleeper("b", 0)).await;
        wait_phase(&api, "b", Phase::Queued, Duration::from_secs(30)).await;
        drop(first);
        let pod = running
            .status
            .and_then(|s| s.pod_name)
            .expect("a's pod name");
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        pods.delete(&pod, &DeleteParams::default().grace_period(0))
            .await
            .expect("force-delete a's pod");
        poll_until(Duration::from_secs(30), "a's pod to be gone", || {
            let pods = pods.clone();
            let pod = pod.clone();
            async move {
                pods.get_opt(&pod)
                    .await
                    .ok()
                    .and_then(|p| p.is_none().then_some(()))
            }
        })
        .await;
        let _second = controller(&ns);
        let a = wait_finished(&api, "a", Duration::from_secs(180)).await;
        let status = a.status.expect("a's status");
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
        assert_eq!(status.attempts, Some(2), "a retried once");
        let b = wait_finished(&api, "b", Duration::from_secs(180)).await;
        assert_eq!(b.status.and_then(|s| s.phase), Some(Phase::Succeeded));
        done.store(true, Ordering::SeqCst);
        let peak = peak.load(Ordering::SeqCst);
        assert_eq!(peak, 1, "live evaluation pods at once under maxRunning: 1");
    })
    .await;
}

/// The controller is killed while the run's pod runs; the pod finishes (its samples container
/// prints the samples on its log) while no controller runs; the next controller carries them
/// to the store from the log: the run ends with its samples, and the store holds one bundle,
/// the one its status names.
#[tokio::test]
async fn samples_of_a_pod_that_finished_without_a_controller_are_stored_once() {
    with_temp_ns("restart-samples", |client, ns| async move {
        let (store_dir, store) = file_store();
        let args = ["--results-store", store.as_str()];
        let first = controller_with(&ns, &args);
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let ev = parse_evaluation(
            "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {name: s}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -c, \"import json, os, time; time.sleep(10); f = open(os.environ['CRUCIBLE_SAMPLES_PATH'], 'w'); [f.write(json.dumps({'id': str(i), 'score': i % 2}) + '\\\\n') for i in range(30)]\"]\n  timeout: 2m\n  resources: {cpu: 100m, memory: 64Mi}\n",
        );
        apply_evaluation(&client, &ns, &ev).await;
        let running = wait_phase(&api, "s", Phase::Running, Duration::from_secs(120)).await;
        drop(first);
        let pod = running.status.and_then(|s| s.pod_name).expect("pod name");
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        poll_until(
            Duration::from_secs(120),
            "the pod finished, its samples container stopped",
            || {
                let (pods, pod) = (pods.clone(), pod.clone());
                async move {
                    let p = pods.get_opt(&pod).await.ok()??;
                    let status = p.status?;
                    let stopped = status.init_container_statuses?.iter().any(|c| {
                        c.name == "samples"
                            && c.state.as_ref().is_some_and(|s| s.terminated.is_some())
                    });
                    (status.phase.as_deref() == Some("Succeeded") && stopped).then_some(())
                }
            },
        )
        .await;
        assert!(
            std::fs::read_dir(store_dir.path()).expect("store").next().is_none(),
            "nothing stored while no controller ran"
        );
        let _second = controller_with(&ns, &args);
        let done = wait_finished(&api, "s", Duration::from_secs(180)).await;
        let status = done.status.expect("status");
        let samples = status.samples.expect("the samples, carried by the second controller");
        assert_eq!((samples.count, samples.mean), (30, 0.5));
        the_one_bundle(store_dir.path(), &ns, "s", &samples);
    })
    .await;
}

/// Issue 19, item 2: the controller is killed in the middle of a transfer (its log says it began
/// storing the run's samples, and the store has no bundle for the run yet); the next controller
/// carries them again from the pod's log, which the run kept: the store holds one bundle,
/// complete (every sample reads back) and the one the status's digest names.
#[tokio::test]
async fn a_controller_killed_in_the_middle_of_a_transfer_leaves_one_complete_bundle() {
    // About 46 MB of JSON Lines: a transfer of seconds, so the kill lands inside it.
    const SAMPLES: u64 = 200_000;
    with_temp_ns("restart-transfer", |client, ns| async move {
        let (store_dir, store) = file_store();
        let args = ["--results-store", store.as_str()];
        let first = controller_with(&ns, &args);
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let ev = parse_evaluation(&format!(
            "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {{name: t}}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -c, \"import json, os; f = open(os.environ['CRUCIBLE_SAMPLES_PATH'], 'w'); [f.write(json.dumps({{'id': 'q%d' % i, 'score': i % 3 / 2, 'output': 'answer %d ' % i * 20}}) + '\\\\n') for i in range({SAMPLES})]\"]\n  timeout: 3m\n  resources: {{cpu: 500m, memory: 256Mi}}\n"
        ));
        apply_evaluation(&client, &ns, &ev).await;
        let running = wait_phase(&api, "t", Phase::Running, Duration::from_secs(120)).await;
        let run = running
            .status
            .and_then(|s| s.run_id)
            .expect("the run's id");
        let log = first.log().to_path_buf();
        poll_until(
            Duration::from_secs(120),
            "the controller to begin storing the run's samples",
            || {
                let (log, run) = (log.clone(), run.clone());
                async move {
                    let text = std::fs::read_to_string(&log).ok()?;
                    text.lines()
                        .any(|l| l.contains("storing the samples") && l.contains(&run))
                        .then_some(())
                }
            },
        )
        .await;
        drop(first); // SIGKILL, mid-transfer
        let bundle = store_dir
            .path()
            .join(&ns)
            .join("t")
            .join(&run)
            .join("samples.jsonl.zst");
        assert!(
            !bundle.exists(),
            "the transfer was not under way when the controller was killed (the bundle exists)"
        );
        let _second = controller_with(&ns, &args);
        let done = wait_finished(&api, "t", Duration::from_secs(240)).await;
        let status = done.status.expect("status");
        let samples = status.samples.expect("the samples, carried by the second controller");
        assert_eq!(samples.count, SAMPLES as i64, "every sample counted");
        let uri = the_one_bundle(store_dir.path(), &ns, "t", &samples);
        let reader = Store::open_existing(&store).expect("the store");
        let mut lines = 0u64;
        let object = uri
            .strip_prefix(&format!("{store}/"))
            .expect("the bundle is in the store");
        reader
            .read(object, Validator::reading(Limits::default(), 0.5), &mut |_| lines += 1)
            .await
            .expect("the bundle reads back, complete");
        assert_eq!(lines, SAMPLES, "every sample is in the bundle");
    })
    .await;
}
