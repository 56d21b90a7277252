use super::*;
use crate::crd::evaluation::{EvaluationResult, EvaluationStatus, Phase, SandboxStatus};
use crate::crd::suite::{EvaluationSuiteStatus, SuitePhase};

fn finished(
    name: &str,
    phase: Phase,
    score: Option<f64>,
    reason: &str,
    sandboxed: bool,
) -> Evaluation {
    let mut ev = Evaluation::test();
    ev.metadata.name = Some(name.into());
    ev.status = Some(EvaluationStatus {
        phase: Some(phase),
        duration: Some("312ms".into()),
        reason: Some(reason.into()),
        result: score.map(|score| EvaluationResult {
            score,
            passed: score >= 0.5,
            ..Default::default()
        }),
        sandbox: Some(SandboxStatus {
            runtime_class_name: sandboxed.then(|| "gvisor".into()),
            sandboxed,
        }),
        ..Default::default()
    });
    ev
}

#[test]
fn the_table_has_kubectls_columns() {
    let evs = [
        finished("arithmetic", Phase::Succeeded, Some(0.89), "Passed", true),
        finished("invalid-result", Phase::Failed, None, "InvalidResult", true),
    ];
    let text = table(&evs, &[]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "PHASE", "SCORE", "PASSED", "DURATION", "REASON"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["arithmetic", "Succeeded", "0.89", "true", "312ms", "Passed"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["invalid-result", "Failed", "312ms", "InvalidResult"]
    );
    // Columns line up: PHASE starts at the same offset in every row.
    let at = |l: &str, w: &str| l.find(w).expect("present");
    assert_eq!(at(lines[0], "PHASE"), at(lines[1], "Succeeded"));
    assert!(!text.contains("NOT SANDBOXED"));
}

#[test]
fn unsandboxed_runs_are_flagged_in_the_banner_and_the_row() {
    let text = table(
        &[finished("a", Phase::Succeeded, Some(1.0), "Passed", false)],
        &[],
    );
    assert!(text.starts_with(UNSANDBOXED_WARNING), "{text}");
    assert!(text.contains("Passed (UNSANDBOXED)"), "{text}");
}

#[test]
fn suites_get_their_own_columns() {
    let mut suite = EvaluationSuite::new("difficulty", Default::default());
    suite.status = Some(EvaluationSuiteStatus {
        phase: Some(SuitePhase::Succeeded),
        total: 3,
        succeeded: 2,
        failed: 1,
        pass_rate: Some(2.0 / 3.0),
        mean_score: Some(0.6167),
        ..Default::default()
    });
    let text = table(&[], &[suite]);
    let row: Vec<&str> = text
        .lines()
        .nth(1)
        .expect("row")
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        ["difficulty", "3", "2", "1", "0.667", "0.617", "Succeeded"]
    );
}

#[test]
fn yaml_and_json_hold_exactly_the_status() {
    let ev = finished("arithmetic", Phase::Succeeded, Some(0.89), "Passed", true);
    let json: serde_json::Value = serde_json::from_str(
        &document(std::slice::from_ref(&ev), &[], Format::Json).expect("json"),
    )
    .expect("parses");
    assert_eq!(json["kind"], "List");
    let item = &json["items"][0];
    assert_eq!(item["kind"], "Evaluation");
    assert_eq!(item["apiVersion"], "crucible.dev/v1alpha1");
    let back: crate::crd::EvaluationStatus =
        serde_json::from_value(item["status"].clone()).expect("a status");
    assert_eq!(Some(back), ev.status);
    let yaml = document(std::slice::from_ref(&ev), &[], Format::Yaml).expect("yaml");
    let from_yaml: serde_json::Value = serde_saphyr::from_str(&yaml).expect("parses");
    assert_eq!(from_yaml, json);
}

#[test]
fn runs_with_samples_show_their_mean_and_interval() {
    let mut with = finished("arith", Phase::Succeeded, Some(0.81), "Passed", true);
    if let Some(s) = with.status.as_mut() {
        s.samples = Some(SamplesStatus {
            count: 1200,
            ids: 400,
            mean: 0.8126,
            ci95: Some(crate::crd::samples::Interval {
                low: 0.79,
                high: 0.83,
            }),
            ..Default::default()
        });
    }
    let without = finished("plain", Phase::Succeeded, Some(1.0), "Passed", true);
    let text = table(&[with, without], &[]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].ends_with("SAMPLES"), "{text}");
    assert!(lines[1].ends_with("0.813 ±0.02 (400 ids)"), "{text}");
    assert!(lines[2].trim_end().ends_with("Passed"), "{text}");
    let plain = table(
        &[finished(
            "plain",
            Phase::Succeeded,
            Some(1.0),
            "Passed",
            true,
        )],
        &[],
    );
    assert!(!plain.contains("SAMPLES"), "{plain}");
}
