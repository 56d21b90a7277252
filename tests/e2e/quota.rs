//! Admission on a real cluster: a namespace quota is never exceeded, as seen by an independent
//! watcher of pods; the emergency stop clears running pods within 10 s and holds admission;
//! queue reasons follow a quota's changes through a queue longer than one wake-up batch.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crucible::crd::evaluation::Phase;
use crucible::crd::{Evaluation, EvaluationQuota};
use crucible::stop::{self, Scope};
use crucible_e2e::{
    apply_evaluation, poll_until, quota_manifest, sleeper, wait_finished, wait_for, wait_phase,
    watch_peak, with_temp_ns,
};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};

fn quick(name: &str, seconds: u32) -> Evaluation {
    sleeper(name, seconds, "100m")
}

#[tokio::test]
async fn a_namespace_quota_of_two_is_never_exceeded_by_twenty_applies() {
    with_temp_ns("quota", |client, ns| async move {
        let quota = quota_manifest("team", serde_json::json!({"maxRunning": 2}));
        let quotas: Api<crucible::crd::EvaluationQuota> = Api::namespaced(client.clone(), &ns);
        quotas
            .patch(
                "team",
                &kube::api::PatchParams::apply("crucible-e2e"),
                &kube::api::Patch::Apply(&quota),
            )
            .await
            .expect("apply quota");
        // Give the controller's quota cache a moment to see it, as a user would by applying
        // the quota first: wait until the controller has written its status.
        poll_until(Duration::from_secs(30), "quota status", || {
            let quotas = quotas.clone();
            async move { quotas.get("team").await.ok().and_then(|q| q.status) }
        })
        .await;
        let (peak, done) = watch_peak(client.clone(), &ns, "crucible.dev/managed=true");
        let applies = (0..20).map(|i| {
            let (client, ns) = (client.clone(), ns.clone());
            async move { apply_evaluation(&client, &ns, &quick(&format!("burst-{i}"), 1)).await }
        });
        futures::future::join_all(applies).await;
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        // While the burst is being worked through, somebody is queued with a position.
        let queued = wait_for(
            &api,
            "burst-19",
            Duration::from_secs(60),
            "queued or done",
            |e: &Evaluation| e.status.as_ref().and_then(|s| s.phase).is_some(),
        )
        .await;
        let _ = queued;
        for i in 0..20 {
            let done_ev =
                wait_finished(&api, &format!("burst-{i}"), Duration::from_secs(300)).await;
            assert_eq!(
                done_ev.status.and_then(|s| s.phase),
                Some(Phase::Succeeded),
                "burst-{i}"
            );
        }
        done.store(true, Ordering::SeqCst);
        let peak = peak.load(Ordering::SeqCst);
        assert!(
            peak <= 2,
            "the watcher saw {peak} evaluation pods alive at once"
        );
        assert!(peak >= 1, "the watcher saw no pod at all");
        let status = quotas
            .get("team")
            .await
            .expect("quota")
            .status
            .expect("status");
        assert!(status.used.is_some_and(|u| u.running <= 2));
        // Written on change, not on a timer: the last release is reported too.
        poll_until(Duration::from_secs(15), "the quota status at rest", || {
            let quotas = quotas.clone();
            async move {
                let status = quotas.get("team").await.ok()?.status?;
                let idle = status.used.is_some_and(|u| u.running == 0) && status.queued == Some(0);
                idle.then_some(())
            }
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn emergency_stop_clears_running_pods_within_ten_seconds_and_holds_admission() {
    with_temp_ns("stop", |client, ns| async move {
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let system =
            std::env::var("CRUCIBLE_SYSTEM_NAMESPACE").unwrap_or_else(|_| "crucible-system".into());
        let scope = Scope::Namespaces(vec![ns.clone()]);
        apply_evaluation(&client, &ns, &quick("long", 300)).await;
        wait_phase(&api, "long", Phase::Running, Duration::from_secs(90)).await;
        stop::stop(&client, &system, &scope, Some("e2e drill".into()))
            .await
            .expect("stop");
        let took = stop::wait_until_stopped(&client, &scope, Duration::from_secs(10)).await;
        let cancelled = api.get("long").await.expect("get");
        let status = cancelled.status.clone().expect("status");
        assert!(took.is_ok(), "pods still alive 10 s after stop: {took:?}");
        assert_eq!(status.phase, Some(Phase::Cancelled));
        assert_eq!(status.reason.as_deref(), Some("EmergencyStop"));
        assert!(
            status
                .message
                .as_deref()
                .is_some_and(|m| m.contains("e2e drill"))
        );
        // Nothing starts while stopped.
        apply_evaluation(&client, &ns, &quick("held", 1)).await;
        let held = wait_phase(&api, "held", Phase::Queued, Duration::from_secs(30)).await;
        let reason = held
            .status
            .and_then(|s| s.queue)
            .and_then(|q| q.reason)
            .unwrap_or_default();
        assert!(reason.starts_with("EmergencyStop"), "{reason}");
        let still = wait_phase(&api, "held", Phase::Queued, Duration::from_secs(5)).await;
        assert!(
            still.status.and_then(|s| s.pod_name).is_none(),
            "no pod while stopped"
        );
        stop::resume(&client, &system, &scope)
            .await
            .expect("resume");
        let done = wait_finished(&api, "held", Duration::from_secs(60)).await;
        assert_eq!(done.status.and_then(|s| s.phase), Some(Phase::Succeeded));
    })
    .await;
}

/// The queue reason of every one of `count` queued runs of `ns` starts with `prefix` (polled;
/// panics after two minutes naming a run that does not).
async fn every_reason_reaches(api: &Api<Evaluation>, count: usize, prefix: &str) {
    let what = format!("every queued run's reason to start with {prefix:?}");
    poll_until(Duration::from_secs(120), &what, || {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await.ok()?;
            let reasons: Vec<String> = list
                .items
                .iter()
                .filter_map(|e| e.status.as_ref()?.queue.as_ref()?.reason.clone())
                .collect();
            (reasons.len() == count && reasons.iter().all(|r| r.starts_with(prefix))).then_some(())
        }
    })
    .await;
}

/// Reasons follow a change of the namespace's quotas through a queue longer than one wake-up
/// batch (40 runs, the batch is 32; none ever starts): a pause, an invalid figure, then the
/// deletion of the quota that blocked them each reach every queued run's reason.
#[tokio::test]
async fn every_queued_runs_reason_follows_a_pause_an_invalid_quota_and_a_deleted_quota() {
    with_temp_ns("reasons", |client, ns| async move {
        let quotas: Api<EvaluationQuota> = Api::namespaced(client.clone(), &ns);
        let apply = |name: &str, spec: serde_json::Value| {
            let quotas = quotas.clone();
            let body = quota_manifest(name, spec);
            let name = name.to_string();
            async move {
                quotas
                    .patch(
                        &name,
                        &PatchParams::apply("crucible-e2e").force(),
                        &Patch::Apply(&body),
                    )
                    .await
                    .expect("apply quota");
            }
        };
        // "block" admits nothing; "cap" leaves 100m of CPU, less than any run asks.
        apply("block", serde_json::json!({"maxRunning": 0})).await;
        apply("cap", serde_json::json!({"hard": {"cpu": "100m"}})).await;
        for name in ["block", "cap"] {
            poll_until(Duration::from_secs(30), "quota status", || {
                let quotas = quotas.clone();
                async move { quotas.get(name).await.ok().and_then(|q| q.status) }
            })
            .await;
        }
        let count = 40;
        let applies = (0..count).map(|i| {
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                apply_evaluation(&client, &ns, &sleeper(&format!("q{i:02}"), 1, "200m")).await
            }
        });
        futures::future::join_all(applies).await;
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        every_reason_reaches(
            &api,
            count,
            "QuotaExceeded: cannot fit under the current quota, even with nothing else running (maxRunning 0",
        )
        .await;
        apply("block", serde_json::json!({"maxRunning": 0, "paused": true})).await;
        every_reason_reaches(&api, count, "Paused: ").await;
        apply(
            "block",
            serde_json::json!({"maxRunning": 0, "hard": {"cpu": "lots"}}),
        )
        .await;
        every_reason_reaches(&api, count, "QuotaInvalid: EvaluationQuota block").await;
        quotas
            .delete("block", &Default::default())
            .await
            .expect("delete quota");
        every_reason_reaches(
            &api,
            count,
            "QuotaExceeded: cannot fit under the current quota, even with nothing else running \
             (cpu: requests 200m, 0 of 100m in use)",
        )
        .await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let started = pods.list(&ListParams::default()).await.expect("pods");
        assert!(started.items.is_empty(), "no run could start");
    })
    .await;
}
