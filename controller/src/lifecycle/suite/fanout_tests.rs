use super::*;
use crate::crd::bounds::MAX_PROBLEMS;
use crate::crd::evaluation::{InlineSource, Resources, Source};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn suite() -> EvaluationSuiteSpec {
    EvaluationSuiteSpec {
        template: EvaluationSpec {
            image: "localhost/crucible/python:3.11".into(),
            command: Some(vec!["python3".into(), "/workspace/eval.py".into()]),
            env: Some(vec![env("LEVEL", "easy"), env("SEED", "1")]),
            source: Some(Source::Inline(InlineSource {
                files: [("eval.py".to_string(), "print(1)".to_string())].into(),
            })),
            resources: Some(Resources {
                cpu: Some(Quantity("1".into())),
                memory: Some(Quantity("256Mi".into())),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn case(name: &str) -> SuiteCase {
    SuiteCase {
        name: name.into(),
        ..Default::default()
    }
}

/// A case overriding the template with `fields` (an object of Evaluation spec fields).
fn overriding(name: &str, fields: serde_json::Value) -> SuiteCase {
    SuiteCase {
        name: name.into(),
        overrides: fields.as_object().cloned().unwrap_or_default(),
    }
}

fn env_of(spec: &EvaluationSpec) -> Vec<(String, String)> {
    spec.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn cases_merge_onto_the_template_maps_merge_lists_replace_env_by_name() {
    let mut s = suite();
    s.cases = vec![
        overriding(
            "hard",
            serde_json::json!({
                "env": [env("LEVEL", "hard"), env("EXTRA", "x")],
                "command": ["python3", "/workspace/other.py"],
                "source": {"inline": {"files": {"other.py": "print(2)"}}},
                "resources": {"memory": "1Gi"},
                "cancel": true,
            }),
        ),
        case("plain"),
    ];
    let cases = desired_cases(&s).expect("valid");
    assert_eq!(
        cases.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["hard", "plain"]
    );
    let hard = &cases[0].spec;
    assert_eq!(
        env_of(hard),
        pairs(&[("LEVEL", "hard"), ("SEED", "1"), ("EXTRA", "x")])
    );
    assert_eq!(
        hard.command.as_deref(),
        Some(&["python3".to_string(), "/workspace/other.py".to_string()][..])
    );
    let Some(Source::Inline(files)) = &hard.source else {
        panic!("inline source")
    };
    assert_eq!(
        files.files.keys().collect::<Vec<_>>(),
        ["eval.py", "other.py"],
        "files merge"
    );
    let r = hard.resources.clone().expect("resources");
    assert_eq!(
        (r.cpu.map(|q| q.0), r.memory.map(|q| q.0)),
        (Some("1".into()), Some("1Gi".into()))
    );
    assert_eq!(hard.cancel, None, "cancel is the suite's, not a case's");
    assert_eq!(cases[1].spec, s.template, "an empty case is the template");
}

#[test]
fn a_different_source_kind_replaces_the_template_source() {
    let mut s = suite();
    s.cases = vec![overriding(
        "git",
        serde_json::json!({"source": {"git": {"url": "file:///repo"}}}),
    )];
    let cases = desired_cases(&s).expect("valid");
    assert!(matches!(cases[0].spec.source, Some(Source::Git(_))));
}

#[test]
fn matrix_is_the_cartesian_product_given_as_env() {
    let mut s = suite();
    s.matrix = [
        ("model".to_string(), vec!["a".to_string(), "b".to_string()]),
        ("task".to_string(), vec!["x".to_string(), "y".to_string()]),
    ]
    .into();
    let cases = desired_cases(&s).expect("valid");
    assert_eq!(
        cases.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["a-x", "a-y", "b-x", "b-y"]
    );
    assert_eq!(
        env_of(&cases[1].spec),
        pairs(&[
            ("LEVEL", "easy"),
            ("SEED", "1"),
            ("MATRIX_MODEL", "a"),
            ("MATRIX_TASK", "y")
        ])
    );
    s.cases = vec![case("easy"), case("hard")];
    let cases = desired_cases(&s).expect("valid");
    assert_eq!(cases.len(), 8);
    assert_eq!(cases[0].name, "easy-a-x");
}

#[test]
fn names_are_dns_labels_stable_and_unique_for_awkward_values() {
    let mut s = suite();
    s.matrix = [(
        "model".to_string(),
        vec![
            "GPT-4o/Mini".to_string(),
            "gpt 4o mini".to_string(),
            "x".repeat(80),
        ],
    )]
    .into();
    let first = desired_cases(&s).expect("valid");
    let again = desired_cases(&s).expect("valid");
    assert_eq!(first, again, "names are stable");
    let names: Vec<_> = first.iter().map(|c| c.name.clone()).collect();
    assert_eq!(
        names
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3,
        "{names:?}"
    );
    for n in &names {
        assert!(n.len() <= CASE_NAME_MAX, "{n}");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{n}"
        );
        assert!(!n.starts_with('-') && !n.ends_with('-'), "{n}");
    }
    assert!(names[0].starts_with("gpt-4o-mini-"), "{names:?}");
}

#[test]
fn bad_suites_are_refused_with_reasons() {
    assert!(desired_cases(&suite()).is_err(), "no cases and no matrix");
    let mut dup = suite();
    dup.cases = vec![case("a"), case("a")];
    assert!(desired_cases(&dup).expect_err("duplicate")[0].contains("used twice"));
    let mut huge = suite();
    huge.matrix = [
        ("a".to_string(), (0..100).map(|i| i.to_string()).collect()),
        ("b".to_string(), (0..100).map(|i| i.to_string()).collect()),
    ]
    .into();
    assert!(desired_cases(&huge).expect_err("too many")[0].contains("at most"));
    let mut empty = suite();
    empty.matrix = [("a".to_string(), vec![])].into();
    assert!(desired_cases(&empty).is_err());
}

fn matrix(keys: usize, values: usize) -> BTreeMap<String, Vec<String>> {
    (0..keys)
        .map(|k| {
            (
                format!("k{k}"),
                (0..values).map(|v| v.to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn a_30_key_matrix_is_refused_at_once_without_building_it() {
    let mut s = suite();
    s.matrix = matrix(30, 2);
    let started = std::time::Instant::now();
    let problems = expansion(&s).expect_err("2^30 cases");
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&format!("{} cases, at most", 1u64 << 30))),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("30 keys")),
        "{problems:?}"
    );
    // desired_cases refuses through the same check before it builds a single combination;
    // building 2^30 of them would take minutes and gigabytes.
    assert_eq!(desired_cases(&s).expect_err("refused"), problems);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_product_is_computed_arithmetically_and_saturates() {
    let mut s = suite();
    s.matrix = matrix(2, 50);
    s.cases = vec![case("a"), case("b")];
    assert_eq!(expansion(&s).expect("5000 cases").cases, MAX_CASES);
    s.cases.push(case("c"));
    let refused = expansion(&s).expect_err("7500 cases");
    assert!(
        refused[0].contains("7500 cases, at most 5000"),
        "{refused:?}"
    );
    // 5000^16 does not fit in 64 bits: the product saturates instead of wrapping to a small
    // number that would pass.
    s.cases.clear();
    s.matrix = matrix(MAX_MATRIX_KEYS, MAX_CASES);
    let refused = expansion(&s).expect_err("overflow");
    assert!(refused[0].contains("more than 2^64 cases"), "{refused:?}");
}

#[test]
fn matrix_keys_and_values_are_bounded() {
    let mut s = suite();
    s.matrix = [
        ("k".repeat(MAX_MATRIX_KEY_LEN + 1), vec!["a".to_string()]),
        ("ok".to_string(), vec!["v".repeat(MAX_MATRIX_VALUE_LEN + 1)]),
    ]
    .into();
    let problems = expansion(&s).expect_err("bounds");
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("key"), "{problems:?}");
    assert!(
        problems[1].contains("longer than 256 bytes"),
        "{problems:?}"
    );
    assert!(
        problems.iter().all(|p| p.len() < 300),
        "messages quote at most 64 characters: {problems:?}"
    );
}

#[test]
fn the_size_estimate_bounds_the_real_children_and_refuses_huge_suites() {
    let mut s = suite();
    s.matrix = matrix(3, 4);
    s.cases = vec![
        overriding("a", serde_json::json!({"env": [env("EXTRA", "x")]})),
        case("b"),
    ];
    let estimate = expansion(&s).expect("valid");
    let cases = desired_cases(&s).expect("valid");
    assert_eq!(estimate.cases, cases.len());
    let real: usize = cases.iter().map(|c| json_len(&c.spec)).sum();
    assert!(real <= estimate.bytes, "{real} > {}", estimate.bytes);
    assert!(estimate.bytes < 2 * real, "{} vs {real}", estimate.bytes);

    // 100 KiB of inline source times 400 cases is 40 MiB of children.
    let mut big = suite();
    big.template.source = Some(Source::Inline(InlineSource {
        files: [("eval.py".to_string(), "#".repeat(100 * 1024))].into(),
    }));
    big.matrix = matrix(1, 400);
    let problems = desired_cases(&big).expect_err("too large");
    assert!(problems[0].contains("MiB of specs"), "{problems:?}");
    big.matrix = matrix(1, 100);
    assert!(desired_cases(&big).is_ok());
}

#[test]
fn a_merge_that_exceeds_a_bound_refuses_the_suite() {
    let files = |prefix: &str| {
        Source::Inline(InlineSource {
            files: (0..600)
                .map(|i| (format!("{prefix}{i}.py"), "x".to_string()))
                .collect(),
        })
    };
    let mut s = suite();
    s.template.source = Some(files("t"));
    s.cases = vec![
        overriding("merged", serde_json::json!({ "source": files("c") })),
        case("plain"),
    ];
    let problems = desired_cases(&s).expect_err("1200 files");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("case merged: spec.source.inline.files: 1200 files"),
        "{problems:?}"
    );

    // Matrix variables are added to the template's env.
    let mut s = suite();
    s.template.env = Some((0..250).map(|i| env(&format!("V{i}"), "1")).collect());
    s.matrix = matrix(8, 1);
    let problems = desired_cases(&s).expect_err("258 variables");
    assert!(problems[0].contains("258 variables"), "{problems:?}");
}

#[test]
fn many_problems_are_capped() {
    let mut s = suite();
    s.cases = (0..50).map(|_| case("same")).collect();
    let problems = desired_cases(&s).expect_err("duplicates");
    assert_eq!(problems.len(), MAX_PROBLEMS + 1, "{problems:?}");
    assert!(problems[MAX_PROBLEMS].starts_with("and "), "{problems:?}");
}

#[test]
fn suite_names_must_fit_a_label_value() {
    assert_eq!(check_suite_name(&"s".repeat(MAX_SUITE_NAME_LEN)), Ok(()));
    let err = check_suite_name(&"s".repeat(MAX_SUITE_NAME_LEN + 1)).expect_err("too long");
    assert!(err.contains("at most 63 characters"), "{err}");
}
