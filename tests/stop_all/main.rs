//! The emergency stop as an operator uses it: `crucible stop --all` returns once no
//! evaluation pod is alive (within 10 s), running Evaluations end Cancelled with their log
//! tails, nothing new starts until `crucible resume --all`. Runs alone (it stops everything):
//! `scripts/test.sh` runs it after the main e2e tier, with `CRUCIBLE_BIN` and
//! `CRUCIBLE_SYSTEM_NAMESPACE` set.

use std::process::Command;
use std::time::{Duration, Instant};

use crucible::crd::Evaluation;
use crucible::crd::evaluation::Phase;
use crucible_e2e::{
    apply_evaluation, parse_evaluation, pods_of, poll_until, wait_finished, wait_phase,
    with_temp_ns,
};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set (run scripts/test.sh)"))
}

fn crucible(args: &[&str]) -> std::process::Output {
    let system = env("CRUCIBLE_SYSTEM_NAMESPACE");
    Command::new(env("CRUCIBLE_BIN"))
        .args(args)
        .args(["--system-namespace", &system])
        .output()
        .expect("run crucible")
}

/// Lifts the stop whatever happens, so a failure here cannot hold later tests.
struct Resume;

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = crucible(&["resume", "--all"]);
    }
}

fn sleeper(name: &str) -> Evaluation {
    parse_evaluation(&format!(
        "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {{name: {name}}}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -u, -c, \"import time; print('working', flush=True); time.sleep(300); print('CRUCIBLE_RESULT {{\\\"score\\\": 1}}')\"]\n  timeout: 10m\n  resources: {{cpu: 100m, memory: 64Mi}}\n"
    ))
}

#[tokio::test]
async fn stop_all_clears_every_evaluation_pod_within_ten_seconds_and_resume_reopens_admission() {
    with_temp_ns("stopall", |client, ns| async move {
        let _resume = Resume;
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        for name in ["one", "two"] {
            apply_evaluation(&client, &ns, &sleeper(name)).await;
        }
        for name in ["one", "two"] {
            let running = wait_phase(&api, name, Phase::Running, Duration::from_secs(90)).await;
            // Wait for the first output, so that there is a log tail to keep.
            let pod = running.status.and_then(|s| s.pod_name).expect("pod name");
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            poll_until(Duration::from_secs(30), "pod output", || {
                let (pods, pod) = (pods.clone(), pod.clone());
                async move {
                    let log = pods.logs(&pod, &Default::default()).await.ok()?;
                    log.contains("working").then_some(())
                }
            })
            .await;
        }
        let start = Instant::now();
        let stop = crucible(&["stop", "--all", "--reason", "e2e drill", "--timeout", "10s"]);
        let took = start.elapsed();
        let out = String::from_utf8_lossy(&stop.stdout);
        assert!(
            stop.status.success(),
            "crucible stop --all failed: {out} {}",
            String::from_utf8_lossy(&stop.stderr)
        );
        assert!(out.contains("no evaluation pod is running"), "{out}");
        assert!(took < Duration::from_secs(12), "stop took {took:?}");
        for name in ["one", "two"] {
            let ev = api.get(name).await.expect("get");
            let status = ev.status.clone().expect("status");
            assert_eq!(status.phase, Some(Phase::Cancelled), "{name}");
            assert_eq!(status.reason.as_deref(), Some("EmergencyStop"));
            assert!(
                status
                    .log_tail
                    .as_deref()
                    .is_some_and(|t| t.contains("working")),
                "{name}: {status:#?}"
            );
            assert!(pods_of(&client, &ns, &ev).await.iter().all(|p| {
                matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            }));
        }
        apply_evaluation(&client, &ns, &sleeper("later")).await;
        let held = wait_phase(&api, "later", Phase::Queued, Duration::from_secs(30)).await;
        let reason = held
            .status
            .and_then(|s| s.queue)
            .and_then(|q| q.reason)
            .unwrap_or_default();
        assert!(reason.starts_with("EmergencyStop"), "{reason}");
        let resume = crucible(&["resume", "--all"]);
        assert!(resume.status.success());
        wait_phase(&api, "later", Phase::Running, Duration::from_secs(60)).await;
        let patch = serde_json::json!({"spec": {"cancel": true}});
        api.patch(
            "later",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("cancel");
        wait_finished(&api, "later", Duration::from_secs(30)).await;
    })
    .await;
}
