//! The `EvaluationQuota` kind: per-namespace limits on what Crucible admits. Pure types.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::bounds::{MAX_COST_USD_PER_DAY, MAX_TOKENS_PER_DAY};

/// Limits of one namespace. An Evaluation is admitted only if admitting it keeps every figure
/// within these limits (and within the controller-wide ones).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "crucible.dev",
    version = "v1alpha1",
    kind = "EvaluationQuota",
    namespaced,
    status = "EvaluationQuotaStatus",
    shortname = "evq",
    category = "crucible",
    doc = "Per-namespace limits on the Evaluations Crucible admits.",
    printcolumn = r#"{"name":"MaxRunning","type":"integer","jsonPath":".spec.maxRunning"}"#,
    printcolumn = r#"{"name":"Running","type":"integer","jsonPath":".status.used.running"}"#,
    printcolumn = r#"{"name":"Queued","type":"integer","jsonPath":".status.queued"}"#,
    printcolumn = r#"{"name":"CPU","type":"string","jsonPath":".status.shownCpu"}"#,
    printcolumn = r#"{"name":"Memory","type":"string","jsonPath":".status.shownMemory"}"#,
    printcolumn = r#"{"name":"GPU","type":"string","jsonPath":".status.shownGpu"}"#,
    printcolumn = r#"{"name":"Paused","type":"boolean","jsonPath":".status.paused"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationQuotaSpec {
    /// Most Evaluations running at once in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_running: Option<i32>,
    /// Most resources the running Evaluations may request together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard: Option<QuotaHard>,
    /// True: admit nothing new in this namespace (running Evaluations go on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// Resource limits of a quota.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaHard {
    /// Total CPU, e.g. `8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Total memory, e.g. `16Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Total GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub gpu: Option<i32>,
    /// Most model tokens (input and output together) the namespace's runs may use in any 24
    /// hours, counted by the model gateway; a call that would start with the last day's usage
    /// at or above it is refused and its run ends `BudgetExceeded`. Applies to runs started
    /// after it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_TOKENS_PER_DAY))]
    pub tokens_per_day: Option<i64>,
    /// Most cost in US dollars (at the endpoints' prices) of the namespace's model calls in any
    /// 24 hours; as `tokensPerDay`.
    #[serde(
        default,
        rename = "costUSDPerDay",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = MAX_COST_USD_PER_DAY))]
    pub cost_usd_per_day: Option<f64>,
}

/// What the namespace uses now.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationQuotaStatus {
    /// Admitted Evaluations and their resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<QuotaUsed>,
    /// Evaluations waiting for admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<i32>,
    /// Whether the namespace admits nothing new (`spec.paused`, false when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// CPU used and `hard.cpu`, e.g. `1500m/4` (`-`: no limit), for the CPU column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown_cpu: Option<String>,
    /// Memory used and `hard.memory`, e.g. `256Mi/16Gi` (`-`: no limit), for the Memory column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown_memory: Option<String>,
    /// GPUs used and `hard.gpu`, e.g. `1/2` (`-`: no limit), for the GPU column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown_gpu: Option<String>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: True when every figure of the spec is understood; False with reason
    /// `InvalidQuota` (the namespace then admits nothing) naming the figure that is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Usage figures.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUsed {
    /// Admitted Evaluations whose pods have not finished.
    pub running: i32,
    /// CPU they request.
    pub cpu: Quantity,
    /// Memory they request.
    pub memory: Quantity,
    /// GPUs they request.
    pub gpu: i32,
}
