//! The `EvaluationSuite` kind: many Evaluations from one template, cases and a matrix. Pure
//! types; the expansion rules are in `lifecycle::suite::fanout`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::crd::bounds::{self, MAX_CASES};
use crate::crd::evaluation::EvaluationSpec;

/// Longest case name (the child is `<suite>-<case>`).
const MAX_CASE_NAME_LEN: usize = 40;
/// A case name is a DNS label.
const CASE_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A suite of Evaluations.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "crucible.dev",
    version = "v1alpha1",
    kind = "EvaluationSuite",
    namespaced,
    status = "EvaluationSuiteStatus",
    shortname = "evs",
    shortname = "suite",
    category = "crucible",
    doc = "A suite of Evaluations expanded from a template, cases and a matrix.",
    printcolumn = r#"{"name":"Total","type":"integer","jsonPath":".status.total"}"#,
    printcolumn = r#"{"name":"Passed","type":"integer","jsonPath":".status.succeeded"}"#,
    printcolumn = r#"{"name":"NotPassed","type":"integer","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"PassRate","type":"string","jsonPath":".status.shownPassRate"}"#,
    printcolumn = r#"{"name":"MeanScore","type":"string","jsonPath":".status.shownMeanScore"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationSuiteSpec {
    /// Evaluation spec shared by every case.
    pub template: EvaluationSpec,
    /// Cases: each a name and a partial spec merged onto the template (maps merge, lists
    /// replace, env merges by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CASES))]
    pub cases: Vec<SuiteCase>,
    /// Cartesian product of values, given to each case as env `MATRIX_<KEY>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounds::matrix_schema)]
    pub matrix: BTreeMap<String, Vec<String>>,
    /// At most this many child Evaluations unfinished at once. Default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub parallelism: Option<i32>,
    /// Stop starting new cases once this many have failed; the suite is then Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_failures: Option<i32>,
    /// The suite passes when at least this fraction of its cases passed. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub pass_threshold: Option<f64>,
    /// True stops every case now; phase becomes Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<bool>,
}

/// One case: a name and fields of an Evaluation spec overriding the template's (any field but
/// `cancel`, which belongs to the suite). Maps merge, lists replace, `env` merges by name,
/// `resources` and `sandbox` merge field by field, an inline `source` merges files while a
/// different source kind replaces it.
///
/// The overrides are kept as JSON (fan-out merges them onto the template as JSON); the schema
/// is the Evaluation spec's with every field optional, so `kubectl explain` documents each one
/// and the API server checks its type.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SuiteCase {
    /// Case name; the child Evaluation is `<suite>-<case>`.
    pub name: String,
    /// The spec fields this case overrides.
    #[serde(flatten)]
    pub overrides: serde_json::Map<String, serde_json::Value>,
}

impl JsonSchema for SuiteCase {
    fn schema_name() -> Cow<'static, str> {
        "SuiteCase".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = EvaluationSpec::json_schema(generator);
        if let Some(object) = schema.as_object_mut() {
            object.insert(
                "description".into(),
                "One case: a name and fields of an Evaluation spec overriding the template's \
                 (any field but cancel). Maps merge, lists replace, env merges by name, \
                 resources and sandbox merge field by field, an inline source merges files \
                 while a different source kind replaces it."
                    .into(),
            );
            object.insert("required".into(), serde_json::json!(["name"]));
            if let Some(properties) = object
                .get_mut("properties")
                .and_then(serde_json::Value::as_object_mut)
            {
                properties.remove("cancel");
                properties.insert(
                    "name".into(),
                    serde_json::json!({
                        "description": "Case name; the child Evaluation is `<suite>-<case>`.",
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_CASE_NAME_LEN,
                        "pattern": CASE_NAME_PATTERN,
                    }),
                );
            }
        }
        schema
    }
}

/// Phase of a suite.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SuitePhase {
    /// Cases are queued or running.
    Running,
    /// Every case finished and the pass rate reached the threshold.
    Succeeded,
    /// The pass rate missed the threshold, `maxFailures` was reached, or the spec is invalid.
    Failed,
    /// Cancelled by `spec.cancel`.
    Cancelled,
}

impl SuitePhase {
    /// The phase name.
    pub fn as_str(self) -> &'static str {
        match self {
            SuitePhase::Running => "Running",
            SuitePhase::Succeeded => "Succeeded",
            SuitePhase::Failed => "Failed",
            SuitePhase::Cancelled => "Cancelled",
        }
    }
}

/// Observed state of a suite.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationSuiteStatus {
    /// Running, Succeeded, Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SuitePhase>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of cases.
    #[serde(default)]
    pub total: i32,
    /// Cases not started yet or waiting for admission.
    #[serde(default)]
    pub queued: i32,
    /// Cases running.
    #[serde(default)]
    pub running: i32,
    /// Cases that finished and passed (the Passed column).
    #[serde(default)]
    pub succeeded: i32,
    /// Cases that finished without passing: below their threshold, failed, timed out or
    /// cancelled (the NotPassed column).
    #[serde(default)]
    pub failed: i32,
    /// succeeded / total; empty until a case has finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_rate: Option<f64>,
    /// Mean score of the cases with a result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_score: Option<f64>,
    /// The 95% interval of `meanScore`, the cases as the units (Student's t; from two cases with
    /// a result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci95: Option<super::samples::Interval>,
    /// `passRate` rounded to three decimals, for the PassRate column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown_pass_rate: Option<String>,
    /// `meanScore` rounded to three decimals with the half-width of `ci95` (`0.81 ±0.02`), for
    /// the MeanScore column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown_mean_score: Option<String>,
    /// Why the suite is in its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// kstatus conditions (Reconciling, Ready, Stalled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// One row per case (at most 200; `casesOmitted` counts the rest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cases: Vec<CaseStatus>,
    /// Cases left out of `cases` to bound the object's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cases_omitted: Option<i32>,
}

/// One case's row.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaseStatus {
    /// Case name.
    pub name: String,
    /// Child Evaluation name.
    pub evaluation: String,
    /// Child phase (`Waiting` before the child exists).
    pub phase: String,
    /// Child score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Whether the child passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
}
