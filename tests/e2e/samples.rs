//! Samples on the cluster (docs/samples.md): the reporting step's file leaves the finished pod
//! on the log of its trusted samples container and reaches the controller's results store
//! (`CRUCIBLE_E2E_RESULTS_STORE`, the store `scripts/test.sh` gives the controller), checked
//! on the way; the run's status carries the statistics, and the stored bundle is the one its
//! digest names.

use std::time::Duration;

use crucible::crd::Evaluation;
use crucible::crd::evaluation::Phase;
use crucible::samples::protocol::{Limits, Validator};
use crucible::store::Store;
use crucible_e2e::{apply_evaluation, parse_evaluation, wait_finished, with_temp_ns};
use kube::Api;

/// An Evaluation named `name` running `eval` (Python), with `extra` spec lines.
fn evaluation(name: &str, eval: &str, extra: &str) -> Evaluation {
    let indented: String = eval.lines().map(|l| format!("          {l}\n")).collect();
    parse_evaluation(&format!(
        "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {{name: {name}}}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, /workspace/eval.py]\n  timeout: 2m\n  resources: {{cpu: 500m, memory: 128Mi}}\n{extra}  source:\n    inline:\n      files:\n        eval.py: |\n{indented}"
    ))
}

/// The bundle a status names, read back from the store with its digest.
async fn stored(uri: &str) -> (String, u64) {
    let url = std::env::var("CRUCIBLE_E2E_RESULTS_STORE")
        .expect("CRUCIBLE_E2E_RESULTS_STORE must be set (run scripts/test.sh)");
    let object = uri
        .strip_prefix(&format!("{}/", url.trim_end_matches('/')))
        .unwrap_or_else(|| panic!("{uri} is not in the store {url}"));
    let store = Store::open_existing(&url).expect("the store");
    let mut lines = 0u64;
    let read = store
        .read(
            object,
            Validator::reading(Limits::default(), 0.5),
            &mut |_| lines += 1,
        )
        .await
        .expect("the bundle reads back");
    (read.digest, lines)
}

/// Samples and no result object: the run is scored by its samples' mean, the statistics are
/// on its status, and the store holds exactly the bundle its digest names, every record in it.
#[tokio::test]
async fn samples_leave_the_pod_through_its_log_and_give_the_derived_result() {
    with_temp_ns("samples", |client, ns| async move {
        let eval = r#"import json, os
with open(os.environ["CRUCIBLE_SAMPLES_PATH"], "w") as f:
    for epoch in range(2):
        for i in range(40):
            f.write(json.dumps({"id": f"q{i}", "epoch": epoch, "score": float(i % 4 != 0), "output": "x" * 200}) + "\n")"#;
        let ev = evaluation("derived", eval, "  epochs: 2\n  passThreshold: 0.7\n");
        apply_evaluation(&client, &ns, &ev).await;
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let done = wait_finished(&api, "derived", Duration::from_secs(180)).await;
        let status = done.status.expect("status");
        assert_eq!(status.phase, Some(Phase::Succeeded), "{:?}", status.message);
        let samples = status.samples.expect("status.samples");
        assert_eq!((samples.count, samples.ids, samples.passed), (80, 40, 60));
        assert_eq!(samples.mean, 0.75);
        let result = status.result.expect("a derived result");
        assert_eq!((result.score, result.passed), (0.75, true));
        let (digest, lines) = stored(samples.uri.as_deref().expect("uri")).await;
        assert_eq!(Some(digest), samples.digest, "the stored bundle is the status's");
        assert_eq!(lines, 80);
    })
    .await;
}

/// A samples file that breaks the protocol fails the run with its line; nothing is published.
#[tokio::test]
async fn a_bad_samples_file_fails_the_run_with_its_line() {
    with_temp_ns("samples-bad", |client, ns| async move {
        let eval = r#"import os
with open(os.environ["CRUCIBLE_SAMPLES_PATH"], "w") as f:
    f.write('{"id": "a", "score": 1}\n{"score": 0}\n')
print('CRUCIBLE_RESULT {"score": 1}')"#;
        apply_evaluation(&client, &ns, &evaluation("bad", eval, "")).await;
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let status = wait_finished(&api, "bad", Duration::from_secs(180))
            .await
            .status
            .expect("status");
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(status.reason.as_deref(), Some("InvalidResult"));
        let message = status.message.unwrap_or_default();
        assert!(message.starts_with("samples line 2:"), "{message}");
        assert_eq!((status.result, status.samples), (None, None));
    })
    .await;
}

/// With a scorer, only the scorer's samples count: the evaluated code has no samples path
/// and no samples volume, and samples it leaves for the scorer are not taken.
#[tokio::test]
async fn with_a_scorer_the_evaluated_codes_forged_samples_are_not_taken() {
    with_temp_ns("samples-forge", |client, ns| async move {
        let eval = r#"import json, os
assert "CRUCIBLE_SAMPLES_PATH" not in os.environ, "the evaluated code was given the samples path"
for path in ["/crucible-samples/samples.jsonl", os.path.join(os.environ["CRUCIBLE_OUTPUTS"], "samples.jsonl")]:
    try:
        with open(path, "w") as f:
            for i in range(500):
                f.write(json.dumps({"id": f"forged{i}", "score": 1}) + "\n")
    except OSError as e:
        print("refused:", path, e)"#;
        let score = r#"import json, os
with open(os.environ["CRUCIBLE_SAMPLES_PATH"], "w") as f:
    for i in range(3):
        f.write(json.dumps({"id": f"real{i}", "score": 0.0}) + "\n")
with open(os.environ["CRUCIBLE_RESULT_PATH"], "w") as f:
    json.dump({"score": 0.0}, f)"#;
        let extra = "  scorer:\n    image: localhost/crucible/python:3.11\n    command: [python3, /workspace/score.py]\n";
        let mut ev = evaluation("forge", eval, extra);
        if let Some(crucible::crd::evaluation::Source::Inline(inline)) = ev.spec.source.as_mut() {
            inline.files.insert("score.py".into(), format!("{score}\n"));
        }
        apply_evaluation(&client, &ns, &ev).await;
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let status = wait_finished(&api, "forge", Duration::from_secs(180))
            .await
            .status
            .expect("status");
        let samples = status.samples.expect("the scorer's samples");
        assert_eq!((samples.count, samples.ids, samples.passed), (3, 3, 0));
        let (_, lines) = stored(samples.uri.as_deref().expect("uri")).await;
        assert_eq!(lines, 3, "no forged record in the bundle");
    })
    .await;
}

/// `compareTo` on the cluster: paired by sample id with another Evaluation's latest run, then,
/// after a spec change started a new run, with this Evaluation's previous run (from its
/// history); the baseline named by evaluation, run id and digest.
#[tokio::test]
async fn compare_to_pairs_with_another_evaluation_and_after_a_spec_change_with_the_previous_run() {
    with_temp_ns("samples-compare", |client, ns| async move {
        // Sample qI scores 1 when I < K (env K), else 0; `base` scores I % 2.
        let eval = r#"import json, os
k = int(os.environ.get("K", "-1"))
with open(os.environ["CRUCIBLE_SAMPLES_PATH"], "w") as f:
    for i in range(20):
        score = float(i % 2) if k < 0 else float(i < k)
        f.write(json.dumps({"id": f"q{i}", "score": score}) + "\n")"#;
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        apply_evaluation(&client, &ns, &evaluation("base", eval, "")).await;
        let base = wait_finished(&api, "base", Duration::from_secs(180)).await;
        let base_digest = base.status.and_then(|s| s.samples?.digest);
        assert!(base_digest.is_some(), "the baseline stored its samples");

        let versus_base = "  env: [{name: K, value: \"20\"}]\n  compareTo: {evaluation: base}\n";
        apply_evaluation(&client, &ns, &evaluation("cand", eval, versus_base)).await;
        let first = wait_finished(&api, "cand", Duration::from_secs(180)).await;
        let first_status = first.status.expect("status");
        let comparison = first_status.comparison.expect("status.comparison");
        assert_eq!(comparison.baseline.evaluation.as_deref(), Some("base"));
        assert_eq!(comparison.baseline.digest, base_digest);
        assert_eq!((comparison.pairs, comparison.delta), (20, 0.5));
        assert!(comparison.ci95.is_some());

        let versus_previous = "  env: [{name: K, value: \"10\"}]\n  compareTo: {previous: true}\n";
        apply_evaluation(&client, &ns, &evaluation("cand", eval, versus_previous)).await;
        let second = crucible_e2e::wait_for(
            &api,
            "cand",
            Duration::from_secs(180),
            "the new run finished",
            |e: &Evaluation| {
                e.status.as_ref().is_some_and(|s| {
                    s.run_id != first_status.run_id && s.phase.is_some_and(|p| p.is_finished())
                })
            },
        )
        .await;
        let comparison = second
            .status
            .and_then(|s| s.comparison)
            .expect("status.comparison against the previous run");
        assert_eq!(comparison.baseline.evaluation.as_deref(), Some("cand"));
        assert_eq!(comparison.baseline.run_id, first_status.run_id);
        assert_eq!((comparison.pairs, comparison.delta), (20, -0.5));
    })
    .await;
}
