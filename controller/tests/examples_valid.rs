//! Every manifest in `examples/evaluations/` parses into its kind, passes validation (suites
//! expand into valid cases), and states the outcome it must reach (which the e2e tier then
//! checks on a real cluster).

use std::path::{Path, PathBuf};

use crucible::config::Config;
use crucible::crd::{Evaluation, EvaluationQuota, EvaluationSuite};
use crucible::lifecycle::suite::fanout::desired_cases;
use crucible::run::validate::validate;

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/evaluations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/evaluations exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_parses_validates_and_states_its_outcome() {
    let files = examples();
    assert!(
        files.len() >= 8,
        "expected at least eight examples, found {files:?}"
    );
    let config = Config::default();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        let shown = path.display();
        let value: serde_json::Value =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{shown}: not YAML: {e}"));
        match value["kind"].as_str() {
            Some("Evaluation") => {
                let ev: Evaluation = serde_json::from_value(value)
                    .unwrap_or_else(|e| panic!("{shown}: not an Evaluation: {e}"));
                assert_eq!(validate(&ev.spec, &config), Ok(()), "{shown} is invalid");
            }
            Some("EvaluationSuite") => {
                let suite: EvaluationSuite = serde_json::from_value(value)
                    .unwrap_or_else(|e| panic!("{shown}: not an EvaluationSuite: {e}"));
                let cases = desired_cases(&suite.spec)
                    .unwrap_or_else(|e| panic!("{shown}: cases do not expand: {e:?}"));
                for case in cases {
                    assert_eq!(
                        validate(&case.spec, &config),
                        Ok(()),
                        "{shown} case {}",
                        case.name
                    );
                }
            }
            Some("EvaluationQuota") => {
                let _: EvaluationQuota = serde_json::from_value(value)
                    .unwrap_or_else(|e| panic!("{shown}: not an EvaluationQuota: {e}"));
            }
            other => panic!("{shown}: unexpected kind {other:?}"),
        }
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{shown} has no `# expect:` line"));
        assert!(expect.contains('='), "{shown}: {expect}");
        assert!(
            text.lines().take_while(|l| l.starts_with('#')).count() >= 2,
            "{shown} must say in a comment what it shows"
        );
    }
}

/// The ```` ```yaml ```` blocks of `README.md` and `docs/*.md` (not the generated reference), with
/// their info strings: `(file, info, body)`.
fn doc_yaml_blocks() -> Vec<(String, String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut pages = vec![root.join("README.md")];
    let docs = std::fs::read_dir(root.join("docs")).expect("docs/ exists");
    pages.extend(
        docs.map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "md")),
    );
    pages.sort();
    let mut blocks = Vec::new();
    for page in pages {
        let text = std::fs::read_to_string(&page).expect("readable");
        let mut open: Option<(String, String)> = None;
        for line in text.lines() {
            match open.take() {
                None => {
                    if let Some(info) = line.strip_prefix("```yaml") {
                        open = Some((info.trim().to_string(), String::new()));
                    }
                }
                Some((info, body)) if line == "```" => {
                    blocks.push((page.display().to_string(), info, body));
                }
                Some((info, mut body)) => {
                    body.push_str(line);
                    body.push('\n');
                    open = Some((info, body));
                }
            }
        }
        assert!(
            open.is_none(),
            "{}: a yaml block is not closed",
            page.display()
        );
    }
    blocks
}

/// A complete manifest in the docs is an example, copied byte for byte, so the tests that apply
/// every example (here: validation; the e2e tier and the demo: its `# expect:` outcome) apply it
/// too; anything else says it is a fragment.
#[test]
fn every_manifest_in_the_docs_is_an_example_or_marked_a_fragment() {
    let examples: Vec<String> = examples()
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("readable"))
        .collect();
    let blocks = doc_yaml_blocks();
    assert!(
        blocks.iter().any(|(_, info, _)| info.is_empty()),
        "no complete manifest found in the docs: {blocks:?}"
    );
    for (page, info, body) in blocks {
        match info.as_str() {
            "fragment" => {}
            "" => assert!(
                examples.contains(&body),
                "{page}: this yaml block is not a copy of a file in examples/evaluations/ (mark it \
                 ```yaml fragment if it is not meant to be applied):\n{body}"
            ),
            other => panic!("{page}: unknown yaml block marker {other:?}"),
        }
    }
}

/// The RBAC split of docs/models.md parses into Roles and RoleBindings as the API server reads
/// them, binds only the Roles it defines, and keeps researchers to reading ModelEndpoints and off
/// Secrets while the platform team manages both.
#[test]
fn the_model_docs_rbac_split_keeps_researchers_off_secrets_and_endpoint_writes() {
    use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
    let block = doc_yaml_blocks()
        .into_iter()
        .find(|(page, _, body)| page.ends_with("models.md") && body.contains("kind: RoleBinding"))
        .map(|(_, _, body)| body)
        .expect("docs/models.md has the RBAC split");
    let (mut roles, mut bindings) = (Vec::new(), Vec::new());
    for doc in block.split("\n---\n") {
        let value: serde_json::Value = serde_saphyr::from_str(doc).expect("YAML");
        match value["kind"].as_str() {
            Some("Role") => roles.push(serde_json::from_value::<Role>(value).expect("a Role")),
            Some("RoleBinding") => {
                bindings.push(serde_json::from_value::<RoleBinding>(value).expect("a RoleBinding"))
            }
            other => panic!("unexpected kind {other:?}"),
        }
    }
    let rules = |name: &str| -> Vec<PolicyRule> {
        roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .and_then(|r| r.rules.clone())
            .unwrap_or_else(|| panic!("Role {name}"))
    };
    let verbs = |rules: &[PolicyRule], resource: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|r| {
                r.resources
                    .iter()
                    .flatten()
                    .any(|x| x == resource || x == "*")
            })
            .flat_map(|r| r.verbs.clone())
            .collect()
    };
    let researcher = rules("model-researcher");
    assert!(verbs(&researcher, "secrets").is_empty(), "{researcher:?}");
    let on_endpoints = verbs(&researcher, "modelendpoints");
    assert!(
        on_endpoints
            .iter()
            .all(|v| ["get", "list", "watch"].contains(&v.as_str())),
        "{on_endpoints:?}"
    );
    assert!(verbs(&researcher, "evaluations").contains(&"create".to_string()));
    let platform = rules("model-platform");
    for resource in ["secrets", "modelendpoints"] {
        assert!(
            verbs(&platform, resource).contains(&"create".to_string()),
            "{resource}"
        );
    }
    assert_eq!(bindings.len(), roles.len(), "each Role is bound");
    for binding in &bindings {
        assert!(
            roles
                .iter()
                .any(|r| r.metadata.name.as_deref() == Some(binding.role_ref.name.as_str())),
            "{binding:?} binds a Role the block does not define"
        );
    }
}
