//! Every manifest in `examples/evaluations/` reaches the outcome its `# expect:` line states.

use std::path::Path;
use std::time::Duration;

use crucible::crd::Evaluation;
use crucible_e2e::{apply_evaluation, parse_evaluation, wait_finished, with_temp_ns};
use kube::Api;

/// The `key=value` pairs of an example's `# expect:` line.
fn expectations(text: &str) -> Vec<(String, String)> {
    text.lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .expect("example states its outcome")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn every_example_reaches_its_stated_outcome() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/evaluations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    with_temp_ns("examples", |client, ns| async move {
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let mut applied = Vec::new();
        for path in &files {
            let text = std::fs::read_to_string(path).expect("readable");
            let ev = apply_evaluation(&client, &ns, &parse_evaluation(&text)).await;
            applied.push((path.clone(), ev, expectations(&text)));
        }
        for (path, ev, expect) in applied {
            let name = kube::ResourceExt::name_any(&ev);
            let done = wait_finished(&api, &name, Duration::from_secs(240)).await;
            let status = done.status.clone().expect("status");
            let sandbox = status.sandbox.clone().expect("sandbox status");
            assert!(sandbox.sandboxed, "{name} ran without gVisor");
            assert_eq!(sandbox.runtime_class_name.as_deref(), Some("gvisor"));
            for (key, want) in expect {
                let got = match key.as_str() {
                    "phase" => status.phase.map(|p| p.as_str().to_string()),
                    "passed" => status.result.as_ref().map(|r| r.passed.to_string()),
                    "reason" => status.reason.clone(),
                    other => panic!("{}: unknown expectation {other}", path.display()),
                };
                assert_eq!(
                    got.as_deref(),
                    Some(want.as_str()),
                    "{}: {key} (status: {status:#?})",
                    path.display()
                );
            }
            assert_eq!(status.observed_generation, done.metadata.generation);
            assert!(status.log_tail.is_some(), "{name}: the log tail is kept");
            if status.result.is_some() {
                let provenance = status.provenance.clone().expect("provenance");
                assert!(provenance.image_id.is_some_and(|id| !id.is_empty()));
                assert!(provenance.result_digest.is_some());
            }
        }
    })
    .await;
}
