//! What `crucible run` prints: the table `kubectl get evaluations` shows, or the objects with
//! exactly the `status` the operator writes (same types, same serde) as a `List`. Pure.

use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::crd::samples::SamplesStatus;
use crate::crd::{Evaluation, EvaluationSuite};
use crate::table::pad;

/// Output format of `crucible run`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Columns like `kubectl get evaluations` (and suites).
    Table,
    /// A `List` of the objects, YAML.
    Yaml,
    /// A `List` of the objects, JSON.
    Json,
}

/// Banner of runs without gVisor.
pub const UNSANDBOXED_WARNING: &str = "WARNING: NOT SANDBOXED: --unsandboxed ran the evaluations WITHOUT gVisor, as plain processes on this kernel (status.sandbox.sandboxed: false)";

/// Whether any of `evaluations` ran without gVisor.
pub fn any_unsandboxed(evaluations: &[Evaluation]) -> bool {
    evaluations.iter().any(|e| {
        e.status
            .as_ref()
            .and_then(|s| s.sandbox.as_ref())
            .is_some_and(|s| !s.sandboxed)
    })
}

/// The table: Evaluations (suite children included), then suites.
pub fn table(evaluations: &[Evaluation], suites: &[EvaluationSuite]) -> String {
    let mut out = String::new();
    if any_unsandboxed(evaluations) {
        out.push_str(UNSANDBOXED_WARNING);
        out.push('\n');
    }
    if !evaluations.is_empty() {
        // A SAMPLES column only when a run wrote samples, so other tables stay as they were.
        let with_samples = evaluations
            .iter()
            .any(|e| e.status.as_ref().is_some_and(|s| s.samples.is_some()));
        let mut header = ["NAME", "PHASE", "SCORE", "PASSED", "DURATION", "REASON"]
            .map(String::from)
            .to_vec();
        if with_samples {
            header.push("SAMPLES".into());
        }
        let mut rows = vec![header];
        for ev in evaluations {
            let s = ev.status.clone().unwrap_or_default();
            let mut reason = s.reason.unwrap_or_default();
            if s.sandbox.as_ref().is_some_and(|b| !b.sandboxed) {
                reason = format!("{reason} (UNSANDBOXED)").trim_start().to_string();
            }
            rows.push(vec![
                ev.name_any(),
                s.phase.map(|p| p.as_str().to_string()).unwrap_or_default(),
                s.result
                    .as_ref()
                    .map(|r| r.score.to_string())
                    .unwrap_or_default(),
                s.result
                    .as_ref()
                    .map(|r| r.passed.to_string())
                    .unwrap_or_default(),
                s.duration.unwrap_or_default(),
                reason,
            ]);
            if with_samples && let Some(row) = rows.last_mut() {
                row.push(
                    s.samples
                        .as_ref()
                        .map(SamplesStatus::shown)
                        .unwrap_or_default(),
                );
            }
        }
        out.push_str(&pad(&rows));
    }
    if !suites.is_empty() {
        if !evaluations.is_empty() {
            out.push('\n');
        }
        let mut rows = vec![
            [
                "SUITE",
                "TOTAL",
                "SUCCEEDED",
                "FAILED",
                "PASSRATE",
                "MEANSCORE",
                "PHASE",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for suite in suites {
            let s = suite.status.clone().unwrap_or_default();
            let number = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
            rows.push(vec![
                suite.name_any(),
                s.total.to_string(),
                s.succeeded.to_string(),
                s.failed.to_string(),
                number(s.pass_rate),
                number(s.mean_score),
                s.phase.map(|p| p.as_str().to_string()).unwrap_or_default(),
            ]);
        }
        out.push_str(&pad(&rows));
    }
    out
}

/// `object` as JSON, with its apiVersion and kind from its type.
fn object<K: Resource<DynamicType = ()> + serde::Serialize>(object: &K) -> Result<Value, String> {
    let mut v = serde_json::to_value(object).map_err(|e| e.to_string())?;
    v["apiVersion"] = json!(K::api_version(&()));
    v["kind"] = json!(K::kind(&()));
    Ok(v)
}

/// The objects as a `List`, as `kubectl get -o yaml|json` prints several.
///
/// # Errors
/// Serialization errors (never for these types).
pub fn document(
    evaluations: &[Evaluation],
    suites: &[EvaluationSuite],
    format: Format,
) -> Result<String, String> {
    let mut items = Vec::new();
    for ev in evaluations {
        items.push(object(ev)?);
    }
    for suite in suites {
        items.push(object(suite)?);
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    match format {
        Format::Json => serde_json::to_string_pretty(&list)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
        Format::Yaml => serde_saphyr::to_string(&list).map_err(|e| e.to_string()),
        Format::Table => Ok(table(evaluations, suites)),
    }
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
