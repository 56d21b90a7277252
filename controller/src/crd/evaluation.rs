//! The `Evaluation` kind: one declarative run of evaluation code in a sandbox.
//!
//! Pure types; their doc comments are the field descriptions users read (`kubectl explain`,
//! docs/reference/). Every `Option` is skipped when `None`: a 1.20 API server rejects `null`
//! for enum fields, and absent fields keep server-side apply ownership and GitOps diffs quiet.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::bounds::{
    self, MAX_CIDR_LEN, MAX_DURATION_LEN, MAX_EGRESS, MAX_GIT_PATH_LEN, MAX_IMAGE_LEN, MAX_METRICS,
    MAX_NAME_LEN, MAX_REF_LEN, MAX_RUN_MODELS, MAX_SUMMARY, MAX_URL_LEN,
};
use crate::crd::model::{ModelBudget, ModelRef, ModelUsage, RecordCalls};
use crate::crd::samples::{
    CompareTo, ComparisonStatus, HistorySamples, MAX_EPOCHS, MAX_SEED, SamplesStatus,
};

/// Go-style duration such as `90s`, `10m` or `1h30m`.
const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// Desired state of an Evaluation: what to run, with what, for how long.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "crucible.dev",
    version = "v1alpha1",
    kind = "Evaluation",
    namespaced,
    status = "EvaluationStatus",
    shortname = "eval",
    category = "crucible",
    doc = "An AI evaluation run once in a gVisor sandbox; results are written to status.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Score","type":"string","jsonPath":".status.shownScore"}"#,
    printcolumn = r#"{"name":"Passed","type":"boolean","jsonPath":".status.result.passed"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".status.duration"}"#,
    printcolumn = r#"{"name":"Position","type":"integer","jsonPath":".status.queue.position"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.reason"}"#,
    printcolumn = r#"{"name":"Waiting","type":"string","priority":1,"jsonPath":".status.queue.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationSpec {
    /// Container image of the evaluation environment, e.g. `localhost/crucible/python:3.11`.
    #[schemars(length(min = 1, max = MAX_IMAGE_LEN))]
    pub image: String,
    /// Entrypoint override; the image's entrypoint when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bounds::args_schema)]
    pub command: Option<Vec<String>>,
    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bounds::args_schema)]
    pub args: Option<Vec<String>>,
    /// Extra environment variables (core/v1 EnvVar). Names starting with `CRUCIBLE_` are reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bounds::env_schema)]
    pub env: Option<Vec<EnvVar>>,
    /// Where the evaluation code comes from; mounted read-only at /workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Resources of the evaluation container; requests always equal limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Wall-clock limit of one running attempt (Go duration, e.g. `10m`). Controller default
    /// when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = MAX_DURATION_LEN))]
    pub timeout: Option<String>,
    /// Give up when the run has not been admitted within this duration (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = MAX_DURATION_LEN))]
    pub queue_timeout: Option<String>,
    /// Retries after infrastructure failures only (eviction, lost pod, image pull), never after
    /// the evaluation itself failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: Option<i32>,
    /// Optional trusted second step: the evaluated code runs first and writes to /outputs, then
    /// the scorer (not the evaluated code) writes the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scorer: Option<Scorer>,
    /// Sandbox settings: runtime class and network mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    /// `result.passed = score >= passThreshold` when the result does not say `passed` itself.
    /// Defaults to 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_threshold: Option<f64>,
    /// Seconds after the run finished when the pod and other children are deleted; the
    /// Evaluation and its results stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
    /// Keep the pod of a run that did not pass, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_pod_on_failure: Option<bool>,
    /// True stops the run now; phase becomes Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<bool>,
    /// Times each sample is run (`CRUCIBLE_EPOCHS`); samples then carry an `epoch`. 1 when
    /// empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_EPOCHS))]
    pub epochs: Option<i32>,
    /// Pins `CRUCIBLE_SEED` (0 to 2^32-1); otherwise it is derived from the run id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_SEED))]
    pub seed: Option<i64>,
    /// A paired comparison of this run's samples with a baseline run's, sample id by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_to: Option<CompareTo>,
    /// Models the run may call through the model gateway, each served by a ModelEndpoint of
    /// this namespace; the provider key never enters the sandbox (docs/models.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_RUN_MODELS))]
    pub models: Option<Vec<ModelRef>>,
    /// Limits on the run's model calls (`calls`, `tokens`, `costUSD`); needs `models`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<ModelBudget>,
    /// What the call ledger keeps of each model call: `Digests` (default) or `Full` (the
    /// bodies too); needs `models`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_calls: Option<RecordCalls>,
}

/// Source of the evaluation code: exactly one of `inline` or `git`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// Files written in the manifest itself.
    Inline(InlineSource),
    /// Files read from a Git repository at a pinned commit.
    Git(GitSource),
}

/// Files written in the manifest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InlineSource {
    /// Relative file path (e.g. `eval.py`, `lib/util.py`) to file content.
    #[schemars(transform = bounds::files_schema)]
    pub files: BTreeMap<String, String>,
}

/// A path in a Git repository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// Repository URL (`https://`, `ssh://` or `file://`).
    #[schemars(length(max = MAX_URL_LEN))]
    pub url: String,
    /// Branch, tag or commit; the default branch when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REF_LEN))]
    pub r#ref: Option<String>,
    /// File or directory inside the repository; the whole tree when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_GIT_PATH_LEN))]
    pub path: Option<String>,
    /// Secret with credentials for the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Start a new run whenever the branch head moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<bool>,
}

/// Reference to a Secret in the Evaluation's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(max = MAX_NAME_LEN))]
    pub name: String,
}

/// Resources of the sandbox; requests equal limits (Guaranteed QoS).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU, e.g. `1` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory, e.g. `512Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Ephemeral storage, e.g. `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<Quantity>,
    /// Number of GPUs (`nvidia.com/gpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub gpu: Option<i32>,
}

/// The trusted scoring step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scorer {
    /// Image of the scorer.
    #[schemars(length(min = 1, max = MAX_IMAGE_LEN))]
    pub image: String,
    /// Entrypoint of the scorer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bounds::args_schema)]
    pub command: Option<Vec<String>>,
    /// Arguments of the scorer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bounds::args_schema)]
    pub args: Option<Vec<String>>,
    /// Extra environment of the scorer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bounds::env_schema)]
    pub env: Option<Vec<EnvVar>>,
}

/// Sandbox settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    /// RuntimeClass of the pod; the controller's configured gVisor class when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_LEN))]
    pub runtime_class_name: Option<String>,
    /// `None` (default): no network at all. `Allowlist`: egress only to `egress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkMode>,
    /// With `Allowlist`: the destinations the pod may reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_EGRESS))]
    pub egress: Option<Vec<EgressRule>>,
}

/// Network mode of the sandbox.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NetworkMode {
    /// No network: loopback only.
    #[default]
    None,
    /// Egress only to the listed CIDRs and ports.
    Allowlist,
}

/// One allowed egress destination.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Destination network, e.g. `203.0.113.0/24`.
    #[schemars(length(max = MAX_CIDR_LEN))]
    pub cidr: String,
    /// TCP ports; all ports when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_EGRESS))]
    pub ports: Option<Vec<i32>>,
}

/// Observed state of an Evaluation, written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationStatus {
    /// Where the current run is: Queued, Pending, Running, Succeeded, Failed, TimedOut, Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions (Reconciling, Ready, Stalled) and domain conditions (Admitted,
    /// Running, Passed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Name of the pod of the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Pods created for the current run (1 + infrastructure retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// When the current attempt's pod was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Wall-clock duration of the run, e.g. `12s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The result the evaluation reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<EvaluationResult>,
    /// `result.score` rounded to three decimals, for the Score column (`result.score` keeps
    /// full precision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown_score: Option<String>,
    /// Exit code of the evaluation container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Machine-readable reason of the outcome (OOMKilled, DeadlineExceeded, InvalidResult, …);
    /// while Queued, why the run waits (`QuotaExceeded`, `Paused`, …; the sentence is in
    /// `queue.reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable explanation of the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Last 4 KiB of the evaluation's output, captured before the pod was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
    /// Last 4 KiB of the scorer's own output when a run with a scorer did not succeed
    /// (`ScorerFailed`, an invalid result, a timeout or cancel while scoring), captured before
    /// the pod was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scorer_log_tail: Option<String>,
    /// What produced the result: commit, image, spec and result digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// How the run is sandboxed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxStatus>,
    /// Position in the admission queue while Queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueStatus>,
    /// `metadata.generation` when the current run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_generation: Option<i64>,
    /// True once `ttlSecondsAfterFinished` expired and the run's own children (pod, Allowlist
    /// NetworkPolicy, workspace ConfigMap unless a suite shares it) were deleted (the
    /// Evaluation and its status stay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children_removed: Option<bool>,
    /// Id of the current run: its pods carry it as label `crucible.dev/run-id` and hold its
    /// share of the quota until they are gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Value of the `crucible.dev/rerun` annotation the current run answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun: Option<String>,
    /// The last 10 finished runs, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// `CRUCIBLE_SEED` of the current run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Statistics of the current run's samples, and where they are stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<SamplesStatus>,
    /// The paired comparison asked for by `spec.compareTo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<ComparisonStatus>,
    /// What the current run's model calls used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ModelUsage>,
}

/// Lifecycle phase of a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Waiting for admission.
    Queued,
    /// Admitted; the sandbox is being created.
    Pending,
    /// The evaluation is running.
    Running,
    /// The run completed with a valid result (which may or may not pass).
    Succeeded,
    /// The run failed: non-zero exit, invalid result, invalid spec or unavailable sandbox.
    Failed,
    /// The run exceeded its timeout.
    TimedOut,
    /// The run was cancelled.
    Cancelled,
}

impl EvaluationStatus {
    /// Whether the run succeeded with a result that passed (a run that ended
    /// `BudgetExceeded` keeps its result, passed or not, and did not pass).
    pub fn passed(&self) -> bool {
        self.phase == Some(Phase::Succeeded) && self.result.as_ref().is_some_and(|r| r.passed)
    }
}

impl Phase {
    /// Whether the run is over.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Phase::Succeeded | Phase::Failed | Phase::TimedOut | Phase::Cancelled
        )
    }

    /// The phase name as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "Queued",
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::TimedOut => "TimedOut",
            Phase::Cancelled => "Cancelled",
        }
    }
}

/// The result reported by the evaluation (docs/results-protocol.md).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationResult {
    /// The score, a finite number.
    pub score: f64,
    /// Whether the evaluation passed: reported, or `score >= passThreshold`.
    pub passed: bool,
    /// Named finite numbers reported next to the score.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_METRICS))]
    pub metrics: BTreeMap<String, f64>,
    /// A human-readable summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_SUMMARY))]
    pub summary: Option<String>,
}

/// What produced a result.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// Repository of the code, for git sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Commit the code was read at, for git sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Image ID reported by the container runtime for the evaluation container.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "imageID")]
    pub image_id: Option<String>,
    /// sha256 of the spec that ran (fields that do not change the run excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// sha256 of the result JSON as the evaluation wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_digest: Option<String>,
    /// sha256 of the source files mounted at /workspace (inline or read from git), as stored
    /// in the run's workspace ConfigMap, whose name is derived from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
}

/// How the run is sandboxed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// RuntimeClass the pod runs with; empty when unsandboxed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// False only when the controller runs with `--allow-unsandboxed` and no gVisor class exists.
    pub sandboxed: bool,
}

/// Position in the admission queue.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// 1-based position among the queued Evaluations of the namespace: exact for the first 10,
    /// then rounded up to the next 10 (to 100), the next 100 (to 1,000) and the next 1,000
    /// beyond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i32>,
    /// Why the run is not admitted yet, e.g. `QuotaExceeded: maxRunning 5 reached`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the run started waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// One finished run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Generation of the spec that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Commit of the code, for git sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Final phase of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Score of the run, when it reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Whether the run passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The run's samples statistics and bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<HistorySamples>,
}
