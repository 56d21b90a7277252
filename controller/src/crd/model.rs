//! The `ModelEndpoint` kind and the model fields of an Evaluation (`spec.models`, `spec.budget`,
//! `spec.recordCalls`, `status.usage`): which provider endpoint a run's model calls go to through
//! the gateway, and what they may spend. Pure types; docs/models.md.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::bounds::{
    self, MAX_ENDPOINT_MODELS, MAX_MODEL_ID_LEN, MAX_MODEL_NAME_LEN, MAX_NAME_LEN, MAX_RUN_MODELS,
    MAX_URL_LEN,
};

/// A model's name in a run: it becomes part of `CRUCIBLE_MODEL_<NAME>_URL`, so lower-case
/// letters, digits and `-` only (upper-cased, `-` as `_`: two names never give one variable).
const MODEL_NAME_PATTERN: &str = r"^[a-z]([a-z0-9-]*[a-z0-9])?$";

/// A provider endpoint the gateway forwards a namespace's model calls to, with the Secret
/// holding its key. Created by the platform team; researchers only name it from Evaluations.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "crucible.dev",
    version = "v1alpha1",
    kind = "ModelEndpoint",
    namespaced,
    status = "ModelEndpointStatus",
    shortname = "mep",
    category = "crucible",
    doc = "A model provider endpoint that Evaluations of this namespace call through the gateway.",
    printcolumn = r#"{"name":"API","type":"string","jsonPath":".spec.api"}"#,
    printcolumn = r#"{"name":"BaseURL","type":"string","jsonPath":".spec.baseURL"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ModelEndpointSpec {
    /// Wire protocol offered to the sandbox: `openai` (chat completions, responses) or
    /// `anthropic` (messages).
    pub api: ModelApi,
    /// Provider URL up to `/v1`, e.g. `https://api.openai.com/v1`; the Secret must name its host.
    #[serde(rename = "baseURL")]
    #[schemars(length(min = 1, max = MAX_URL_LEN))]
    pub base_url: String,
    /// Secret in this namespace holding the provider key; read by the gateway only, never
    /// mounted into a sandbox.
    pub secret_ref: KeySecretRef,
    /// Model ids the gateway forwards to this endpoint; any other id is refused.
    #[schemars(length(min = 1, max = MAX_ENDPOINT_MODELS))]
    #[schemars(transform = bounds::model_ids_schema)]
    pub models: Vec<String>,
    /// Price per model id, for `costUSD` budgets and usage; a model without a price costs 0.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_ENDPOINT_MODELS))]
    pub pricing: BTreeMap<String, ModelPrice>,
}

/// Wire protocol of a model endpoint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelApi {
    /// OpenAI-compatible: `/v1/chat/completions`, `/v1/responses`.
    #[default]
    Openai,
    /// Anthropic-compatible: `/v1/messages`.
    Anthropic,
}

/// A key in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct KeySecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = MAX_NAME_LEN))]
    pub name: String,
    /// Key of the provider key in the Secret's data.
    #[schemars(length(min = 1, max = MAX_NAME_LEN))]
    pub key: String,
}

/// Price of a model in US dollars per million tokens.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelPrice {
    /// Dollars per million input (prompt) tokens.
    #[schemars(range(min = 0))]
    pub input_per_m_tok: f64,
    /// Dollars per million output (completion) tokens.
    #[schemars(range(min = 0))]
    pub output_per_m_tok: f64,
}

/// Observed state of a ModelEndpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelEndpointStatus {
    /// `Ready` once the Secret exists, is labelled for model credentials, names this
    /// endpoint's host and holds the key; otherwise its reason says which is missing
    /// (`InvalidEndpoint`, `SecretNotFound`, `SecretNotLabelled`, `HostNotAllowed`,
    /// `KeyNotFound`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A model an Evaluation's run may call.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelRef {
    /// Name of the model in this run: the sandbox gets `CRUCIBLE_MODEL_<NAME>_URL` and
    /// `CRUCIBLE_MODEL_<NAME>_TOKEN` (upper-cased, `-` as `_`).
    #[schemars(length(min = 1, max = MAX_MODEL_NAME_LEN), regex(pattern = MODEL_NAME_PATTERN))]
    pub name: String,
    /// Name of the ModelEndpoint in this namespace that serves it.
    #[schemars(length(min = 1, max = MAX_NAME_LEN))]
    pub endpoint: String,
    /// Model id as the provider names it, e.g. `gpt-4.1-mini`; the endpoint must list it.
    #[schemars(length(min = 1, max = MAX_MODEL_ID_LEN))]
    pub model: String,
}

/// Limits of one run's model calls; an absent limit does not apply.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelBudget {
    /// Most calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub calls: Option<i64>,
    /// Most tokens, input and output together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub tokens: Option<i64>,
    /// Most cost in US dollars, at the endpoints' prices.
    #[serde(default, rename = "costUSD", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cost_usd: Option<f64>,
}

/// What the call ledger keeps of each model call: `Digests` (default) or `Full` (the bodies
/// too); needs `models`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RecordCalls {
    /// sha256 digests of request and response (default).
    #[default]
    Digests,
    /// The request and response bodies too.
    Full,
}

/// What a run's model calls used.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelUsage {
    /// Calls made.
    pub calls: i64,
    /// Input (prompt) tokens the providers reported.
    pub input_tokens: i64,
    /// Output (completion) tokens the providers reported.
    pub output_tokens: i64,
    /// Cost in US dollars at the endpoints' prices.
    #[serde(rename = "costUSD")]
    pub cost_usd: f64,
    /// The same per model of the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_RUN_MODELS))]
    pub by_model: Vec<ModelUsageEntry>,
}

/// What one model of a run used.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelUsageEntry {
    /// Name of the model in the run (`spec.models[].name`).
    pub name: String,
    /// Model id the run asked for.
    pub model: String,
    /// Model id the provider reported serving, when it differs in detail (e.g. a dated
    /// snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_model: Option<String>,
    /// Calls made.
    pub calls: i64,
    /// Input (prompt) tokens.
    pub input_tokens: i64,
    /// Output (completion) tokens.
    pub output_tokens: i64,
    /// Cost in US dollars.
    #[serde(rename = "costUSD")]
    pub cost_usd: f64,
}
