//! Fairness on a real cluster: a backlog of hundreds of Evaluations being processed in one
//! namespace does not hold back an Evaluation applied in another.

use std::time::{Duration, Instant};

use crucible::crd::{Evaluation, EvaluationQuota};
use crucible_e2e::{apply_evaluation, poll_until, quota_manifest, sleeper, with_temp_ns};
use futures::StreamExt;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};

/// Size of the backlog: large enough that the controller cannot have worked through it when
/// the other namespace's Evaluation arrives (it is applied halfway through the burst).
const BACKLOG: usize = 600;

async fn paused_quota(api: &Api<EvaluationQuota>) {
    let quota = quota_manifest("hold", serde_json::json!({"paused": true}));
    api.patch(
        "hold",
        &PatchParams::apply("crucible-e2e"),
        &Patch::Apply(&quota),
    )
    .await
    .expect("apply quota");
}

fn without_status(list: &[Evaluation]) -> usize {
    list.iter()
        .filter(|e| e.status.as_ref().and_then(|s| s.phase).is_none())
        .count()
}

#[tokio::test]
async fn a_backlog_in_one_namespace_leaves_another_its_status_within_seconds() {
    with_temp_ns("backlog", |_, busy| async move {
        with_temp_ns("neighbour", |client, quiet| async move {
            // The backlog waits (paused), so every one of its runs costs the controller a
            // reconcile and a status write, none a pod.
            paused_quota(&Api::namespaced(client.clone(), &busy)).await;
            let busy_api: Api<Evaluation> = Api::namespaced(client.clone(), &busy);
            let (creator, target) = (client.clone(), busy.clone());
            let creates = futures::stream::iter(0..BACKLOG)
                .map(move |i| {
                    let (client, busy) = (creator.clone(), target.clone());
                    async move {
                        let ev = sleeper(&format!("backlog-{i}"), 1, "100m");
                        apply_evaluation(&client, &busy, &ev).await;
                    }
                })
                .buffer_unordered(32);
            let mut creates = Box::pin(creates);
            for _ in 0..BACKLOG / 2 {
                creates.next().await;
            }
            // Halfway through the burst: the neighbour's Evaluation.
            let quiet_api: Api<Evaluation> = Api::namespaced(client.clone(), &quiet);
            let applied = Instant::now();
            apply_evaluation(&client, &quiet, &sleeper("neighbour", 1, "100m")).await;
            let rest = tokio::spawn(async move { while creates.next().await.is_some() {} });
            let got = poll_until(Duration::from_secs(10), "the neighbour's status", || {
                let api = quiet_api.clone();
                async move {
                    let ev = api.get("neighbour").await.ok()?;
                    ev.status.and_then(|s| s.phase)
                }
            })
            .await;
            let waited = applied.elapsed();
            let pending = busy_api
                .list(&ListParams::default())
                .await
                .map(|l| without_status(&l.items))
                .unwrap_or(0);
            println!(
                "neighbour got {got:?} after {waited:?}; the busy namespace still had {pending} \
                 Evaluations without status"
            );
            assert!(
                pending > 0,
                "no backlog was left when the neighbour was served: the test proved nothing"
            );
            rest.await.expect("backlog created");
            // The backlog itself is served too: every one of them gets its status.
            poll_until(
                Duration::from_secs(120),
                "a status on the whole backlog",
                || {
                    let api = busy_api.clone();
                    async move {
                        let list = api.list(&ListParams::default()).await.ok()?;
                        (list.items.len() == BACKLOG && without_status(&list.items) == 0)
                            .then_some(())
                    }
                },
            )
            .await;
        })
        .await;
    })
    .await;
}
