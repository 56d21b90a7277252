//! A controller restart while a retry is pending (issue 20, item 4): under `maxRunning: 1`, run
//! `a` (`retries: 1`) runs and `b` waits; the controller is killed, `a`'s pod force-deleted, and a
//! controller started again. `a`'s retry is admitted like any run: never more live pods than
//! `maxRunning`, `a` finishes on its second attempt and `b` after it.
//!
//! Starts its own controllers (`CRUCIBLE_BIN`), scoped with `--namespace` to the test's
//! namespace, with `CRUCIBLE_SYSTEM_NAMESPACE`: `scripts/test.sh` runs it while no other
//! controller runs.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crucible::crd::evaluation::Phase;
use crucible::crd::{Evaluation, EvaluationQuota};
use crucible_e2e::{
    OwnController, apply_evaluation, apply_typed, parse_evaluation, poll_until, wait_finished,
    wait_phase, watch_peak, with_temp_ns,
};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DeleteParams;

const LOG: &str = "crucible-restart-e2e.log";

fn controller(ns: &str) -> OwnController {
    let system = std::env::var("CRUCIBLE_SYSTEM_NAMESPACE")
        .unwrap_or_else(|_| panic!("CRUCIBLE_SYSTEM_NAMESPACE must be set (run scripts/test.sh)"));
    OwnController::start(LOG, ns, &system, &["--metrics-addr", "127.0.0.1:18094"])
}

fn sleeper(name: &str, retries: u32) -> Evaluation {
    parse_evaluation(&format!(
        "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {{name: {name}}}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -c, \"import time; time.sleep(15); print('CRUCIBLE_RESULT {{\\\"score\\\": 1}}')\"]\n  retries: {retries}\n  timeout: 2m\n  resources: {{cpu: 100m, memory: 64Mi}}\n"
    ))
}

#[tokio::test]
async fn a_restart_while_a_retry_is_pending_never_runs_more_pods_than_max_running() {
    with_temp_ns("restart", |client, ns| async move {
        let quota = serde_json::json!({
            "apiVersion": "crucible.dev/v1alpha1", "kind": "EvaluationQuota",
            "metadata": {"name": "one"}, "spec": {"maxRunning": 1}
        });
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
