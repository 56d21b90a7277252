//! The `EvaluationSuite` kind: many Evaluations from one template, cases and a matrix. Pure
//! types; the expansion rules are in `suite::fanout`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::bounds::{self, MAX_CASES, MAX_DURATION_LEN, MAX_IMAGE_LEN};
use crate::crd::evaluation::{EvaluationSpec, Resources, Sandbox, Scorer, Source};

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
    printcolumn = r#"{"name":"Succeeded","type":"integer","jsonPath":".status.succeeded"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"PassRate","type":"number","jsonPath":".status.passRate"}"#,
    printcolumn = r#"{"name":"MeanScore","type":"number","jsonPath":".status.meanScore"}"#,
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

/// One case: a name and fields overriding the template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuiteCase {
    /// Case name; the child Evaluation is `<suite>-<case>`.
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Image override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_IMAGE_LEN))]
    pub image: Option<String>,
    /// Command override (replaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bounds::args_schema)]
    pub command: Option<Vec<String>>,
    /// Arguments override (replaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bounds::args_schema)]
    pub args: Option<Vec<String>>,
    /// Environment, merged by name onto the template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bounds::env_schema)]
    pub env: Option<Vec<EnvVar>>,
    /// Source override (inline files merge; a different kind replaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Resources, merged field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Timeout override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^([0-9]+(ms|s|m|h))+$"),
        length(max = MAX_DURATION_LEN)
    )]
    pub timeout: Option<String>,
    /// Retries override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: Option<i32>,
    /// Scorer override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scorer: Option<Scorer>,
    /// Sandbox, merged field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    /// Pass threshold override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_threshold: Option<f64>,
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
    /// Cases that finished and passed.
    #[serde(default)]
    pub succeeded: i32,
    /// Cases that finished without passing.
    #[serde(default)]
    pub failed: i32,
    /// succeeded / total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_rate: Option<f64>,
    /// Mean score of the cases with a result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_score: Option<f64>,
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
