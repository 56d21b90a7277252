use super::*;
use crate::crd::evaluation::{GitSource, InlineSource, Resources, Source};
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
        SuiteCase {
            env: Some(vec![env("LEVEL", "hard"), env("EXTRA", "x")]),
            command: Some(vec!["python3".into(), "/workspace/other.py".into()]),
            source: Some(Source::Inline(InlineSource {
                files: [("other.py".to_string(), "print(2)".to_string())].into(),
            })),
            resources: Some(Resources {
                memory: Some(Quantity("1Gi".into())),
                ..Default::default()
            }),
            ..case("hard")
        },
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
    assert_eq!(cases[1].spec, s.template, "an empty case is the template");
}

#[test]
fn a_different_source_kind_replaces_the_template_source() {
    let mut s = suite();
    s.cases = vec![SuiteCase {
        source: Some(Source::Git(GitSource {
            url: "file:///repo".into(),
            ..Default::default()
        })),
        ..case("git")
    }];
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
