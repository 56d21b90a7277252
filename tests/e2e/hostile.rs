//! Hostile manifests on a real cluster: a spec change cannot skip the quota (admission is per
//! run), and a 600-byte matrix bomb is refused without children and without moving the
//! controller's memory.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crucible::crd::evaluation::Phase;
use crucible::crd::suite::SuitePhase;
use crucible::crd::{Evaluation, EvaluationQuota, EvaluationSuite};
use crucible_e2e::{
    apply_evaluation, apply_typed, poll_until, quota_manifest, sleeper, wait_for, wait_phase,
    watch_peak, with_temp_ns,
};
use kube::Api;
use kube::api::ListParams;

/// Resident memory of the controller under test, in bytes (`CRUCIBLE_E2E_CONTROLLER_PID`).
fn controller_rss() -> u64 {
    let pid = std::env::var("CRUCIBLE_E2E_CONTROLLER_PID")
        .expect("CRUCIBLE_E2E_CONTROLLER_PID must be set (run scripts/test.sh)");
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
        .expect("the controller process is alive");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// The quota bypass of issue 11: `a` runs at 500m under `maxRunning: 1, cpu: 1`; re-applying
/// it with cpu 2 is a new run, which must queue (its request alone exceeds the quota) and
/// never start a pod, while an independent watcher never sees two pods.
#[tokio::test]
async fn a_spec_change_of_a_running_evaluation_cannot_skip_the_quota() {
    with_temp_ns("bypass", |client, ns| async move {
        let quota = quota_manifest(
            "team",
            serde_json::json!({"maxRunning": 1, "hard": {"cpu": "1"}}),
        );
        let _: EvaluationQuota = apply_typed(&client, &ns, &quota).await;
        let quotas: Api<EvaluationQuota> = Api::namespaced(client.clone(), &ns);
        poll_until(Duration::from_secs(30), "quota status", || {
            let quotas = quotas.clone();
            async move { quotas.get("team").await.ok().and_then(|q| q.status) }
        })
        .await;
        let (peak, done) = watch_peak(client.clone(), &ns, "crucible.dev/managed=true");
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        apply_evaluation(&client, &ns, &sleeper("a", 30, "500m")).await;
        let running = wait_phase(&api, "a", Phase::Running, Duration::from_secs(90)).await;
        let first_run = running.status.and_then(|s| s.run_id).expect("run id");
        apply_evaluation(&client, &ns, &sleeper("b", 30, "500m")).await;
        wait_phase(&api, "b", Phase::Queued, Duration::from_secs(30)).await;

        apply_evaluation(&client, &ns, &sleeper("a", 30, "2")).await;
        let changed = wait_for(
            &api,
            "a",
            Duration::from_secs(30),
            "the new run to be decided",
            |e: &Evaluation| {
                e.status.as_ref().is_some_and(|s| {
                    s.run_id.as_deref() != Some(first_run.as_str()) && s.phase.is_some()
                })
            },
        )
        .await;
        let status = changed.status.expect("status");
        assert_eq!(status.phase, Some(Phase::Queued), "{status:#?}");
        let reason = status.queue.and_then(|q| q.reason).unwrap_or_default();
        assert!(
            reason.contains("QuotaExceeded: cannot fit under the current quota"),
            "{reason}"
        );
        // Give the controller every chance to misbehave: the old pod terminates meanwhile.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let still = api.get("a").await.expect("get a");
        assert_eq!(still.status.and_then(|s| s.phase), Some(Phase::Queued));
        let used = quotas
            .get("team")
            .await
            .expect("quota")
            .status
            .and_then(|s| s.used)
            .expect("used");
        let cpu = crucible::quantity::value(&used.cpu).expect("cpu quantity");
        assert!(
            cpu <= 1.0 + 1e-9,
            "quota used.cpu {} over hard 1",
            used.cpu.0
        );
        done.store(true, Ordering::SeqCst);
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= 1, "the watcher saw {peak} evaluation pods at once");
        assert_eq!(peak, 1, "the watcher saw the first run's pod");
    })
    .await;
}

fn bomb(keys: usize, values: &[&str]) -> serde_json::Value {
    let matrix: serde_json::Map<String, serde_json::Value> = (0..keys)
        .map(|k| (format!("k{k:02}"), serde_json::json!(values)))
        .collect();
    serde_json::json!({
        "apiVersion": "crucible.dev/v1alpha1", "kind": "EvaluationSuite",
        "metadata": {"name": "bomb"},
        "spec": {
            "template": {"image": "localhost/crucible/python:3.11",
                         "command": ["python3", "-c", "print(1)"]},
            "matrix": matrix,
        }
    })
}

/// Matrix bombs: the 631-byte suite of issue 11 (20 keys × 2 values) is refused by the API
/// server itself (the CRD bounds the keys); one within the CRD's bounds (16 keys × 4 values,
/// 4,294,967,296 cases) is refused as InvalidSpec within seconds, with no child, an Event, and
/// the controller's memory flat.
#[tokio::test]
async fn a_matrix_bomb_is_refused_without_children_and_without_memory() {
    with_temp_ns("bomb", |client, ns| async move {
        let suites: Api<EvaluationSuite> = Api::namespaced(client.clone(), &ns);
        let params = kube::api::PatchParams::apply("crucible-e2e").force();
        let refused = suites
            .patch(
                "bomb",
                &params,
                &kube::api::Patch::Apply(bomb(20, &["a", "b"])),
            )
            .await
            .expect_err("the API server refuses 20 matrix keys");
        assert!(refused.to_string().contains("spec.matrix"), "{refused}");
        let before = controller_rss();
        let _: EvaluationSuite = apply_typed(&client, &ns, &bomb(16, &["a", "b", "c", "d"])).await;
        let refused = poll_until(Duration::from_secs(30), "the suite to be refused", || {
            let suites = suites.clone();
            async move {
                let s = suites.get("bomb").await.ok()?.status?;
                (s.phase == Some(SuitePhase::Failed)).then_some(s)
            }
        })
        .await;
        let stalled = refused
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .expect("Stalled condition");
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert!(
            stalled.message.contains("4294967296 cases"),
            "{}",
            stalled.message
        );
        let children: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let listed = children
            .list(&ListParams::default())
            .await
            .expect("list evaluations");
        assert!(listed.items.is_empty(), "no child may exist");
        let after = controller_rss();
        let grew = after.saturating_sub(before);
        assert!(
            grew < 32 * 1024 * 1024,
            "the controller grew by {} MiB ({before} → {after} bytes)",
            grew / (1024 * 1024)
        );
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
        poll_until(Duration::from_secs(30), "an InvalidSpec Event", || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items
                    .into_iter()
                    .find(|e| e.reason.as_deref() == Some("InvalidSpec"))
            }
        })
        .await;
    })
    .await;
}
