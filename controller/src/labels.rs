//! Labels and annotations shared by both controllers, the CLI and the tests' selectors.

/// Label on every object the controller creates for a run: selects what it manages.
pub const MANAGED_LABEL: &str = "crucible.dev/managed";
/// Label with the owning Evaluation's uid (names can be longer than a label value).
pub const EVALUATION_UID_LABEL: &str = "crucible.dev/evaluation-uid";
/// Label with the run/attempt id of a pod.
pub const RUN_LABEL: &str = "crucible.dev/run";
/// Label with the id of the run a pod belongs to: the pod holds that run's admission until it
/// is gone.
pub const RUN_ID_LABEL: &str = "crucible.dev/run-id";
/// Label on every child Evaluation of a suite (and on its pods) naming the suite.
pub const SUITE_LABEL: &str = "crucible.dev/suite";
/// Annotation with the owning Evaluation's name, for people.
pub const EVALUATION_ANNOTATION: &str = "crucible.dev/evaluation";
/// Annotation whose new value re-runs an Evaluation without a spec change.
pub const RERUN_ANNOTATION: &str = "crucible.dev/rerun";
/// Annotation on a suite's child: the `crucible.dev/rerun` value its suite let start. A child
/// whose `crucible.dev/rerun` differs (re-run by hand) waits for a free slot of the suite's
/// `parallelism` (see `run::state::awaits_suite`).
pub const GO_AHEAD_ANNOTATION: &str = "crucible.dev/go-ahead";
/// Annotation on a suite's child: the suite's own `crucible.dev/rerun` value the child has
/// answered (a later re-run of the child by hand does not undo it).
pub const SUITE_RERUN_ANNOTATION: &str = "crucible.dev/suite-rerun";
/// Annotation ordering the queue: higher first (integer, default 0).
pub const PRIORITY_ANNOTATION: &str = "crucible.dev/priority";
/// Label with the id of a sandbox canary run, on its pod (selected by its NetworkPolicy).
pub const CANARY_LABEL: &str = "crucible.dev/canary";
/// Label on the namespace's deny-all sandbox NetworkPolicy: what the controller's watch of its
/// NetworkPolicies selects.
pub const SANDBOX_POLICY_LABEL: &str = "crucible.dev/sandbox-policy";
/// Label on every workspace ConfigMap: the first 32 hex digits of its content digest.
pub const SOURCE_DIGEST_LABEL: &str = "crucible.dev/source-digest";
/// Annotation on every workspace ConfigMap: its full content digest (`sha256:…`), for people.
pub const SOURCE_DIGEST_ANNOTATION: &str = "crucible.dev/source-digest";
/// Label a Secret must carry (value `true`) before a ModelEndpoint may use it as a provider key:
/// the platform team marks which Secrets are model credentials.
pub const MODEL_CREDENTIALS_LABEL: &str = "crucible.dev/model-credentials";
/// Annotation on a model-credentials Secret naming the host(s) its key may be sent to
/// (comma-separated): a ModelEndpoint pointing the key at another host is not Ready.
pub const MODEL_HOST_ANNOTATION: &str = "crucible.dev/model-host";
