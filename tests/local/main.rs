//! `crucible run` on this machine, under runsc, no cluster: every example reaches the outcome
//! its `# expect:` line states (the same expectations the cluster tier checks), hostile results
//! and a forged result behave as on the cluster, and the sandbox holds from inside.
//!
//! Needs runsc and the image `infrastructure/local/cluster.sh up` builds; without them these
//! tests fail (they never skip). `scripts/test.sh` runs them once the cluster is up:
//! `CRUCIBLE_BIN=target/debug/crucible cargo test -p crucible-e2e --features e2e --test local`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crucible::crd::{Evaluation, EvaluationSuite};
use crucible_e2e::{PROBE, example_files, expectations};
use serde_json::Value;

fn crucible() -> PathBuf {
    let path = std::env::var_os("CRUCIBLE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/crucible"));
    assert!(
        path.is_file(),
        "{} is missing: `cargo build -p crucible` first or set CRUCIBLE_BIN",
        path.display()
    );
    path
}

/// `crucible run -o json ARGS…`: the exit code, the objects by kind and name, stdout+stderr.
fn run(args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let out: Output = Command::new(crucible())
        .args(["run", "-o", "json"])
        .args(args)
        .output()
        .expect("crucible runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not a JSON list ({e}):\n{text}"));
    let items = list["items"].as_array().cloned().unwrap_or_default();
    (out.status.code(), items, text)
}

fn find<'a>(items: &'a [Value], kind: &str, name: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["kind"] == kind && i["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {items:#?}"))
}

/// A manifest file in a temp dir.
fn manifest(dir: &Path, name: &str, yaml: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write manifest");
    path.display().to_string()
}

fn python_eval(name: &str, script: &str, extra: &str) -> String {
    format!(
        "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {{name: {name}}}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -c, {}]\n  timeout: 1m\n{extra}",
        serde_json::to_string(script).expect("json string")
    )
}

#[test]
fn every_example_reaches_its_stated_outcome() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/evaluations");
    let (code, items, text) = run(&["--parallel", "3", &dir.display().to_string()]);
    assert_eq!(
        code,
        Some(1),
        "some examples do not pass on purpose:\n{text}"
    );
    for file in example_files() {
        let yaml = std::fs::read_to_string(&file).expect("readable");
        let manifest: Value = serde_saphyr::from_str(&yaml).expect("yaml");
        let (kind, name) = (
            manifest["kind"].as_str().unwrap_or_default(),
            manifest["metadata"]["name"].as_str().unwrap_or_default(),
        );
        let shown = file.display();
        let observed: Vec<(&str, Option<String>)> = match kind {
            "Evaluation" => {
                let ev: Evaluation =
                    serde_json::from_value(find(&items, kind, name).clone()).expect("Evaluation");
                let status = ev.status.expect("status");
                let sandbox = status.sandbox.clone().expect("sandbox status");
                assert!(sandbox.sandboxed, "{shown}: ran without gVisor");
                assert_eq!(
                    sandbox.runtime_class_name.as_deref(),
                    Some("gvisor"),
                    "{shown}"
                );
                assert_eq!(status.observed_generation, Some(1), "{shown}");
                assert!(status.log_tail.is_some(), "{shown}: the log tail is kept");
                let provenance = status.provenance.clone().expect("provenance");
                assert!(provenance.spec_hash.is_some(), "{shown}");
                if status.result.is_some() {
                    assert!(
                        provenance
                            .image_id
                            .is_some_and(|id| id.starts_with("sha256:")),
                        "{shown}"
                    );
                    assert!(provenance.result_digest.is_some(), "{shown}");
                }
                if name == "git-source" {
                    assert_eq!(
                        provenance.commit.map(|c| c.len()),
                        Some(40),
                        "{shown}: pinned commit"
                    );
                }
                vec![
                    ("phase", status.phase.map(|p| p.as_str().to_string())),
                    (
                        "passed",
                        status.result.as_ref().map(|r| r.passed.to_string()),
                    ),
                    ("reason", status.reason.clone()),
                ]
            }
            "EvaluationSuite" => {
                let suite: EvaluationSuite =
                    serde_json::from_value(find(&items, kind, name).clone()).expect("suite");
                let status = suite.status.expect("status");
                vec![
                    ("phase", status.phase.map(|p| p.as_str().to_string())),
                    ("total", Some(status.total.to_string())),
                    ("succeeded", Some(status.succeeded.to_string())),
                    ("failed", Some(status.failed.to_string())),
                ]
            }
            _ => {
                // Quotas govern a cluster's admission: skipped locally, and said so.
                assert!(
                    !items.iter().any(|i| i["metadata"]["name"] == name),
                    "{shown}"
                );
                assert!(
                    text.contains(&format!("skipped {kind} {name}")),
                    "{shown}:\n{text}"
                );
                continue;
            }
        };
        for (key, want) in expectations(&yaml) {
            if key == "kind" {
                assert_eq!(want, kind, "{shown}");
                continue;
            }
            let got = observed
                .iter()
                .find(|(k, _)| *k == key)
                .unwrap_or_else(|| panic!("{shown}: unknown expectation {key}"));
            assert_eq!(
                got.1.as_deref(),
                Some(want.as_str()),
                "{shown}: {key}\n{text}"
            );
        }
    }
    // The timeout example's output before the deadline is kept.
    let timeout = find(&items, "Evaluation", "timeout");
    assert!(
        timeout["status"]["logTail"]
            .as_str()
            .unwrap_or_default()
            .contains("thinking very hard"),
        "{timeout:#}"
    );
}

#[test]
fn hostile_results_are_invalid_results_as_on_the_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "not-json",
            "print('CRUCIBLE_RESULT {score: 1')",
            "not valid JSON",
        ),
        (
            "nan",
            "print('CRUCIBLE_RESULT {\"score\": NaN}')",
            "not valid JSON",
        ),
        (
            "wrong-type",
            "print('CRUCIBLE_RESULT {\"score\": \"high\"}')",
            "score must be a number",
        ),
        (
            "oversized-line",
            "print('CRUCIBLE_RESULT {\"score\": 1, \"summary\": \"' + 'x' * 70000 + '\"}')",
            "longer than 65536 bytes",
        ),
        (
            "oversized-file",
            "import os; open(os.environ['CRUCIBLE_RESULT_PATH'], 'w').write('{\"score\": 1, \"summary\": \"' + 'x' * 5000 + '\"}')",
            "4096 bytes or more",
        ),
        ("no-result", "print('hello')", "no result"),
    ];
    let files: Vec<String> = cases
        .iter()
        .map(|(name, script, _)| {
            manifest(
                dir.path(),
                &format!("{name}.yaml"),
                &python_eval(name, script, ""),
            )
        })
        .collect();
    let mut args: Vec<&str> = vec!["--parallel", "3"];
    args.extend(files.iter().map(String::as_str));
    let (code, items, text) = run(&args);
    assert_eq!(code, Some(1), "{text}");
    for (name, _, message) in cases {
        let status = &find(&items, "Evaluation", name)["status"];
        assert_eq!(status["phase"], "Failed", "{name}: {status:#}");
        assert_eq!(status["reason"], "InvalidResult", "{name}: {status:#}");
        assert!(
            status["message"]
                .as_str()
                .unwrap_or_default()
                .contains(message),
            "{name}: {status:#}"
        );
        assert!(status.get("result").is_none(), "{name}");
    }
}

#[test]
fn the_evaluated_code_cannot_forge_the_scorers_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The evaluated code prints a perfect result, tries the result file the scorer will use,
    // and records what it managed; the scorer reports that next to the real score.
    let solve = r#"import json, os
forged = 0
try:
    open("/crucible/result.json", "w").write('{"score": 1000, "passed": true}'); forged = 1
except OSError:
    pass
open(os.path.join(os.environ["CRUCIBLE_OUTPUTS"], "answers.json"), "w").write(json.dumps({"q1": 1, "forged": forged}))
print('CRUCIBLE_RESULT {"score": 1000, "passed": true}')
"#;
    let score = r#"import json, os
a = json.load(open(os.path.join(os.environ["CRUCIBLE_OUTPUTS"], "answers.json")))
try:
    open(os.path.join(os.environ["CRUCIBLE_OUTPUTS"], "scorer-was-here"), "w"); outputs_writable = 1
except OSError:
    outputs_writable = 0
json.dump({"score": 0.25, "metrics": {"forged": a["forged"], "outputsWritable": outputs_writable}},
          open(os.environ["CRUCIBLE_RESULT_PATH"], "w"))
"#;
    let yaml = format!(
        "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {{name: forgery}}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -c, {}]\n  timeout: 1m\n  scorer:\n    image: localhost/crucible/python:3.11\n    command: [python3, -c, {}]\n",
        serde_json::to_string(solve).expect("json"),
        serde_json::to_string(score).expect("json")
    );
    let file = manifest(dir.path(), "forgery.yaml", &yaml);
    let (code, items, text) = run(&[&file]);
    assert_eq!(code, Some(1), "the real score does not pass:\n{text}");
    let status = &find(&items, "Evaluation", "forgery")["status"];
    assert_eq!(status["phase"], "Succeeded", "{status:#}");
    assert_eq!(
        status["result"]["score"], 0.25,
        "only the scorer's result counts: {status:#}"
    );
    assert_eq!(status["result"]["passed"], false);
    assert_eq!(
        status["result"]["metrics"]["forged"], 0.0,
        "no result file for the evaluated code"
    );
    assert_eq!(
        status["result"]["metrics"]["outputsWritable"], 0.0,
        "the scorer sees /outputs read-only"
    );
    // The log tail is the evaluated code's, forged line included, as on the cluster.
    assert!(
        status["logTail"]
            .as_str()
            .unwrap_or_default()
            .contains("1000"),
        "{status:#}"
    );
}

#[test]
fn the_sandbox_holds_from_inside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = manifest(dir.path(), "probe.yaml", &python_eval("inside", PROBE, ""));
    let (code, items, text) = run(&[&file]);
    assert_eq!(code, Some(0), "{text}");
    let status = &find(&items, "Evaluation", "inside")["status"];
    let m = &status["result"]["metrics"];
    assert_eq!(
        (m["uid"].as_f64(), m["gid"].as_f64()),
        (Some(65534.0), Some(65534.0)),
        "{status:#}"
    );
    assert_eq!(m["rootWritable"], 0.0, "root must be read-only");
    assert_eq!(
        m["varTmpWritable"], 0.0,
        "the root is read-only, even where the image's modes allow writing"
    );
    assert_eq!(m["tmpWritable"], 1.0, "/tmp is the writable tmpfs");
    let summary: Value =
        serde_json::from_str(status["result"]["summary"].as_str().expect("summary")).expect("json");
    crucible_e2e::assert_gvisor_kernel(&summary);
    assert_eq!(
        summary["interfaces"],
        serde_json::json!(["lo"]),
        "only loopback"
    );
    assert!(
        summary["sysClassNet"]
            .as_array()
            .is_none_or(|n| n.iter().all(|i| i == "lo")),
        "{summary}"
    );
    assert_eq!(status["sandbox"]["sandboxed"], true);
}

#[test]
fn unsandboxed_runs_say_so_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = manifest(dir.path(), "probe.yaml", &python_eval("outside", PROBE, ""));
    let (code, items, text) = run(&["--unsandboxed", &file]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("NOT SANDBOXED"), "{text}");
    let status = &find(&items, "Evaluation", "outside")["status"];
    assert_eq!(status["sandbox"]["sandboxed"], false, "{status:#}");
    assert!(status["sandbox"].get("runtimeClassName").is_none());
    // Same rules without gVisor: nobody, read-only root, loopback only.
    let m = &status["result"]["metrics"];
    assert_eq!(m["uid"], 65534.0);
    assert_eq!(m["rootWritable"], 0.0);
    assert_eq!(m["varTmpWritable"], 0.0);
    assert_eq!(m["tmpWritable"], 1.0);
    assert_eq!(m["interfaces"], 1.0, "a network namespace with only lo");
    let table = Command::new(crucible())
        .args(["run", "--unsandboxed", &file])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&table.stdout).starts_with("WARNING: NOT SANDBOXED"));
}

#[test]
fn the_memory_limit_holds_and_running_out_is_oom_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limit = python_eval(
        "limit",
        "print('CRUCIBLE_RESULT {\"score\": 1, \"metrics\": {\"memKiB\": %s}}' % open('/proc/meminfo').readline().split()[1])",
        "  resources: {memory: 200Mi}\n",
    );
    let hog = python_eval(
        "hog",
        "x = [bytearray(64 << 20) for _ in range(64)]",
        "  resources: {memory: 128Mi}\n",
    );
    let files = [
        manifest(dir.path(), "limit.yaml", &limit),
        manifest(dir.path(), "hog.yaml", &hog),
    ];
    let (code, items, text) = run(&[&files[0], &files[1]]);
    assert_eq!(code, Some(1), "{text}");
    let limit = &find(&items, "Evaluation", "limit")["status"];
    assert_eq!(
        limit["result"]["metrics"]["memKiB"],
        200.0 * 1024.0,
        "{limit:#}"
    );
    let hog = &find(&items, "Evaluation", "hog")["status"];
    assert_eq!(hog["phase"], "Failed", "{hog:#}");
    // On cgroup v1 the runner reads the OOM-kill counter (runsc sets v2 limits itself).
    if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        assert_eq!(hog["reason"], "OOMKilled", "{hog:#}");
        assert!(
            hog["message"]
                .as_str()
                .unwrap_or_default()
                .contains("raise spec.resources.memory")
        );
    }
}
