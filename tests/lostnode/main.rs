//! A node lost under a deleted run's pod (issue 20, item 5): under `maxRunning: 1`, run `a`
//! runs and `b` waits; the node's kubelet stops (as a lost node: its containers keep running
//! and nobody reports on them), and `a` is deleted. `a`'s pod is marked for deletion but stays,
//! Terminating, since no kubelet confirms it; its slot is freed at its release time
//! (`deletionTimestamp` plus the controller's slack) by a timer, not by an event that never
//! comes, so `b` is admitted while the node is still lost. The kubelet then comes back and `b`
//! runs.
//!
//! Starts its own controller (`CRUCIBLE_BIN`) and stops and restarts the kubelet through
//! `CRUCIBLE_CLUSTER` (`cluster.sh`): `scripts/test.sh` runs it while no other controller runs
//! and no other test uses the node.

use std::process::Command;
use std::time::Duration;

use crucible::crd::evaluation::Phase;
use crucible::crd::{Evaluation, EvaluationQuota};
use crucible_e2e::{
    OwnController, apply_evaluation, apply_typed, poll_until, quota_manifest, sleeper,
    wait_finished, wait_phase, with_temp_ns,
};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DeleteParams;

const LOG: &str = "crucible-lostnode-e2e.log";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set (run scripts/test.sh)"))
}

fn cluster(subcommand: &str) {
    let status = Command::new(env("CRUCIBLE_CLUSTER"))
        .arg(subcommand)
        .status()
        .expect("run cluster.sh");
    assert!(status.success(), "cluster.sh {subcommand}: {status}");
}

/// The kubelet is stopped while this lives; it is started again when dropped, also when the
/// test fails, so the node is back for whatever runs next.
struct LostNode;

impl LostNode {
    fn now() -> Self {
        cluster("stop-kubelet");
        LostNode
    }
}

impl Drop for LostNode {
    fn drop(&mut self) {
        cluster("up");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_runs_pod_on_a_lost_node_frees_its_slot_at_its_release_time() {
    with_temp_ns("lostnode", |client, ns| async move {
        let quota = quota_manifest("one", serde_json::json!({"maxRunning": 1}));
        let _: EvaluationQuota = apply_typed(&client, &ns, &quota).await;
        let _controller = OwnController::start(
            LOG,
            &ns,
            &env("CRUCIBLE_SYSTEM_NAMESPACE"),
            &["--metrics-addr", "127.0.0.1:18095"],
        );
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        apply_evaluation(&client, &ns, &sleeper("a", 110, "100m")).await;
        let running = wait_phase(&api, "a", Phase::Running, Duration::from_secs(120)).await;
        let pod = running
            .status
            .and_then(|s| s.pod_name)
            .expect("a's pod name");
        let lost = LostNode::now();
        apply_evaluation(&client, &ns, &sleeper("b", 1, "100m")).await;
        wait_phase(&api, "b", Phase::Queued, Duration::from_secs(30)).await;
        api.delete("a", &DeleteParams::background())
            .await
            .expect("delete a");
        // The garbage collector marks a's pod; no kubelet confirms, so it stays.
        poll_until(
            Duration::from_secs(60),
            "a's pod marked for deletion",
            || {
                let pods = pods.clone();
                let pod = pod.clone();
                async move {
                    pods.get_opt(&pod)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|p| p.metadata.deletion_timestamp)
                }
            },
        )
        .await;
        // Freed at deletionTimestamp + 30 s by the controller's timer: b starts its run.
        let admitted = wait_phase(&api, "b", Phase::Pending, Duration::from_secs(120)).await;
        let stuck = pods.get_opt(&pod).await.expect("get a's pod");
        assert!(
            stuck.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
            "a's pod must still be Terminating when b is admitted (the node is lost)"
        );
        assert!(
            admitted.status.and_then(|s| s.pod_name).is_some(),
            "b has a pod"
        );
        // The release came from the controller's timer, not from a pod event (the node
        // controller updates the lost node's pods once it marks the node NotReady, which would
        // free the slot too, later).
        let log = std::fs::read_to_string(std::env::temp_dir().join(LOG)).expect("controller log");
        assert!(
            log.contains("past its release time"),
            "b was admitted, but not by the release-time timer"
        );
        drop(lost);
        let b = wait_finished(&api, "b", Duration::from_secs(180)).await;
        assert_eq!(b.status.and_then(|s| s.phase), Some(Phase::Succeeded));
    })
    .await;
}
