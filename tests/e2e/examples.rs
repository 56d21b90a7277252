//! Every manifest in `examples/evaluations/` reaches the outcome its `# expect:` line states,
//! applied together into one namespace (quota first), as a new user would.

use std::time::Duration;

use crucible::crd::{Evaluation, EvaluationQuota, EvaluationSuite};
use crucible_e2e::{
    apply_typed, example_files, expectations, has_event, poll_until, wait_finished,
    wait_suite_finished, with_temp_ns,
};
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::ListParams;

struct Example {
    file: String,
    kind: String,
    name: String,
    expect: Vec<(String, String)>,
}

#[tokio::test]
async fn every_example_reaches_its_stated_outcome() {
    let mut examples = Vec::new();
    for path in example_files() {
        let text = std::fs::read_to_string(&path).expect("readable");
        let value: serde_json::Value = serde_saphyr::from_str(&text).expect("yaml");
        examples.push((
            Example {
                file: path.display().to_string(),
                kind: value["kind"].as_str().unwrap_or_default().to_string(),
                name: value["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                expect: expectations(&text),
            },
            value,
        ));
    }
    // Quotas first, as a platform engineer would set them up before the researchers apply.
    examples.sort_by_key(|(e, _)| (e.kind != "EvaluationQuota", e.file.clone()));
    with_temp_ns("examples", |client, ns| async move {
        for (example, value) in &examples {
            match example.kind.as_str() {
                "EvaluationQuota" => {
                    apply_typed::<EvaluationQuota>(&client, &ns, value).await;
                    let quotas: Api<EvaluationQuota> = Api::namespaced(client.clone(), &ns);
                    poll_until(Duration::from_secs(30), "the quota's first status", || {
                        let (q, name) = (quotas.clone(), example.name.clone());
                        async move { q.get(&name).await.ok().and_then(|q| q.status) }
                    })
                    .await;
                }
                "EvaluationSuite" => {
                    apply_typed::<EvaluationSuite>(&client, &ns, value).await;
                }
                _ => {
                    apply_typed::<Evaluation>(&client, &ns, value).await;
                }
            }
        }
        for (example, _) in &examples {
            check(&client, &ns, example).await;
        }
    })
    .await;
}

async fn check(client: &kube::Client, ns: &str, example: &Example) {
    let file = &example.file;
    let got = |key: &str, value: Option<String>| (key.to_string(), value);
    let observed: Vec<(String, Option<String>)> = match example.kind.as_str() {
        "Evaluation" => {
            let api: Api<Evaluation> = Api::namespaced(client.clone(), ns);
            let done = wait_finished(&api, &example.name, Duration::from_secs(300)).await;
            let status = done.status.clone().expect("status");
            let sandbox = status.sandbox.clone().expect("sandbox status");
            assert!(sandbox.sandboxed, "{file}: ran without gVisor");
            assert_eq!(
                sandbox.runtime_class_name.as_deref(),
                Some("gvisor"),
                "{file}"
            );
            assert_eq!(
                status.observed_generation, done.metadata.generation,
                "{file}"
            );
            // Whenever the pod ran. On a busy node a short run may reach its deadline while its
            // pod still waits for CPU (the timeout counts scheduling): then there is no output.
            let timed_out = status.phase == Some(crucible::crd::evaluation::Phase::TimedOut);
            if !timed_out || has_event(client, ns, &example.name, "Started").await {
                assert!(status.log_tail.is_some(), "{file}: the log tail is kept");
            }
            if status.reason.as_deref() == Some("NotPassed") {
                // A run that did not pass is a Warning under the same name (the Event follows
                // the status from a background sender, so it may take a moment).
                let events: Api<Event> = Api::namespaced(client.clone(), ns);
                let selector = format!(
                    "involvedObject.name={},reason=NotPassed,type=Warning",
                    example.name
                );
                poll_until(Duration::from_secs(30), "a Warning NotPassed Event", || {
                    let (events, selector) = (events.clone(), selector.clone());
                    async move {
                        let list = events.list(&ListParams::default().fields(&selector)).await;
                        list.ok().filter(|l| !l.items.is_empty())
                    }
                })
                .await;
            }
            if status.result.is_some() {
                let provenance = status.provenance.clone().expect("provenance");
                assert!(
                    provenance.image_id.is_some_and(|id| !id.is_empty()),
                    "{file}"
                );
                assert!(provenance.result_digest.is_some(), "{file}");
            }
            vec![
                got("phase", status.phase.map(|p| p.as_str().to_string())),
                got(
                    "passed",
                    status.result.as_ref().map(|r| r.passed.to_string()),
                ),
                got("reason", status.reason.clone()),
            ]
        }
        "EvaluationSuite" => {
            let api: Api<EvaluationSuite> = Api::namespaced(client.clone(), ns);
            let done = wait_suite_finished(&api, &example.name, Duration::from_secs(300)).await;
            let status = done.status.expect("status");
            vec![
                got("phase", status.phase.map(|p| p.as_str().to_string())),
                got("total", Some(status.total.to_string())),
                got("succeeded", Some(status.succeeded.to_string())),
                got("failed", Some(status.failed.to_string())),
            ]
        }
        _ => {
            let api: Api<EvaluationQuota> = Api::namespaced(client.clone(), ns);
            let quota = api.get(&example.name).await.expect("quota");
            let status = quota.status.clone().expect("quota status");
            assert_eq!(
                status.observed_generation, quota.metadata.generation,
                "{file}"
            );
            let max = quota.spec.max_running.unwrap_or(i32::MAX);
            assert!(
                status.used.as_ref().is_some_and(|u| u.running <= max),
                "{file}: {status:?}"
            );
            vec![got(
                "maxRunning",
                quota.spec.max_running.map(|m| m.to_string()),
            )]
        }
    };
    for (key, want) in &example.expect {
        if key == "kind" {
            assert_eq!(want, &example.kind, "{file}");
            continue;
        }
        let value = observed
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{file}: unknown expectation {key}"));
        assert_eq!(value.1.as_deref(), Some(want.as_str()), "{file}: {key}");
    }
}
