//! Plain settings, parsed once from the command line by `cli.rs`: [`Config`] for the
//! pure planning functions, [`Runtime`] for the running process. A leaf: it imports nothing
//! of the crate, so every layer may read it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use clap::ValueEnum;

use cidr::Cidr;

pub mod cidr;

/// Settings the pure planning functions need.
#[derive(Clone, Debug)]
pub struct Config {
    /// RuntimeClass for network `None`.
    pub runtime_class: String,
    /// RuntimeClass for network `Allowlist`.
    pub allowlist_runtime_class: String,
    /// RuntimeClass for evaluations with `resources.gpu > 0`.
    pub gpu_runtime_class: String,
    /// Whether a missing RuntimeClass may fall back to the node's default runtime.
    pub allow_unsandboxed: bool,
    /// Default CPU.
    pub default_cpu: Quantity,
    /// Default memory.
    pub default_memory: Quantity,
    /// Default ephemeral storage.
    pub default_ephemeral_storage: Quantity,
    /// Default timeout.
    pub default_timeout: Duration,
    /// Size limit of /tmp.
    pub tmp_size: Quantity,
    /// Controller-wide admission limits.
    pub global_limits: Limits,
    /// `maxRunning` of namespaces without an EvaluationQuota.
    pub namespace_max_running: u32,
    /// Largest total size of a git source's files, in bytes.
    pub max_source_bytes: usize,
    /// How often finished `follow: true` runs check their branch.
    pub follow_interval: Duration,
    /// Ranges no `Allowlist` run may reach (cloud metadata, link-local, the cluster's own).
    pub forbidden_egress: Vec<Cidr>,
    /// The samples container every sandbox pod gets when a results store is configured.
    pub samples: Option<SamplesContainer>,
    /// Bounds of one run's samples file.
    pub sample_limits: SampleLimits,
    /// The init container every sandbox pod with a network interface starts with; `None`:
    /// pods start without waiting for their NetworkPolicy.
    pub network_gate: Option<NetworkGate>,
    /// The model gateway runs with `spec.models` are connected to; `None`: such runs are
    /// refused.
    pub gateway: Option<GatewaySettings>,
}

/// Bounds of one run's samples file (`--samples-max-*`; docs/samples.md lists the defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleLimits {
    /// Most lines.
    pub max_lines: u64,
    /// Most bytes in the file.
    pub max_bytes: u64,
    /// Longest line, in bytes, without its newline.
    pub max_line_len: usize,
    /// Most distinct sample ids: each costs about 64 bytes of the controller's memory while the
    /// file is read.
    pub max_ids: usize,
}

impl SampleLimits {
    /// Default `max_lines`.
    pub const LINES: u64 = 1_000_000;
    /// Default `max_bytes`: 512 MiB.
    pub const BYTES: u64 = 512 * 1024 * 1024;
    /// Default `max_line_len`: room for the three text fields, metadata and metrics at their
    /// bounds, escaped.
    pub const LINE_LEN: usize = 512 * 1024;
    /// Default `max_ids`.
    pub const IDS: usize = 250_000;
}

impl Default for SampleLimits {
    fn default() -> Self {
        SampleLimits {
            max_lines: Self::LINES,
            max_bytes: Self::BYTES,
            max_line_len: Self::LINE_LEN,
            max_ids: Self::IDS,
        }
    }
}

/// Where the model gateway is and the key its capability tokens are signed with, as the
/// controller found them at its start (`--gateway-service`, `--gateway-token-key-file`).
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// Base URL sandboxes call, an address (sandboxes have no DNS), e.g. `http://10.96.0.40:8080`.
    pub base_url: String,
    /// Namespace of the gateway's pods.
    pub namespace: String,
    /// Labels selecting the gateway's pods (the Service's selector).
    pub pod_labels: std::collections::BTreeMap<String, String>,
    /// Port of the gateway's pods that serves calls (what a NetworkPolicy sees).
    pub port: i32,
    /// The tokens' signing key, shared with the gateway only.
    pub token_key: TokenKey,
}

/// Secret bytes that never show in a `Debug` print of the settings.
#[derive(Clone)]
pub struct TokenKey(pub std::sync::Arc<[u8]>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(…)")
    }
}

/// Flags naming the model gateway, resolved by the operator at its start.
#[derive(Clone, Debug)]
pub struct GatewayFlags {
    /// The gateway's Service: `NAMESPACE/NAME`, or `NAME` in the system namespace.
    pub service: String,
    /// File holding the tokens' signing key.
    pub token_key_file: std::path::PathBuf,
}

/// The pod's trusted `samples` container (`crucible samples-emit`), which carries the samples
/// file out on its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SamplesContainer {
    /// Its image: the controller's own.
    pub image: String,
    /// Most bytes it prints (under the kubelet's `containerLogMaxSize`).
    pub max_output: u64,
}

/// The pods' network gate (`crucible network-gate`): filled by the operator once its listener
/// is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkGate {
    /// Its image: the controller's own.
    pub image: String,
    /// The controller's gate listener.
    pub target: SocketAddr,
    /// How long it waits for the policy.
    pub timeout: Duration,
}

/// `--network-gate-timeout` and `--network-gate-port`.
#[derive(Clone, Copy, Debug)]
pub struct GateFlags {
    /// How long pods wait for their NetworkPolicy.
    pub timeout: Duration,
    /// The listener's port (0: any).
    pub port: u16,
}

/// Settings of the running process (not needed by pure planning).
#[derive(Clone, Debug)]
pub struct Runtime {
    /// Namespaces to watch; all when empty.
    pub namespaces: Vec<String>,
    /// Metrics server address.
    pub metrics_addr: SocketAddr,
    /// Reconcile concurrency.
    pub concurrency: u16,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_filter: String,
    /// Namespace of the emergency-stop switch and the Lease.
    pub system_namespace: String,
    /// Cap on score series.
    pub score_series_limit: usize,
    /// Lease name when leader election is on.
    pub leader_lease: Option<String>,
    /// Identity of this replica (Events, Lease).
    pub identity: String,
    /// Uid of this replica's pod, when it runs in one.
    pub pod_uid: Option<String>,
    /// Namespace of this replica's pod, when it runs in one.
    pub pod_namespace: Option<String>,
    /// The results store of samples (`--results-store`), when one is configured.
    pub results_store: Option<String>,
    /// How long bundles are kept (`--results-retention`); `None`: forever.
    pub results_retention: Option<Duration>,
    /// Git cache directory.
    pub git_cache_dir: std::path::PathBuf,
    /// Git cache budget in bytes.
    pub git_cache_bytes: u64,
    /// Whether `file://` git URLs are allowed.
    pub allow_file_git_urls: bool,
    /// The sandbox canary.
    pub canary: CanarySettings,
    /// The network gate's listener and timeout; `None`: no gate.
    pub network_gate: Option<GateFlags>,
    /// The model gateway to connect runs with models to, when configured.
    pub gateway: Option<GatewayFlags>,
}

/// Settings of the canary (`crucible controller --sandbox-canary …`).
#[derive(Clone, Debug)]
pub struct CanarySettings {
    /// Whether canaries run and hold admission at all.
    pub enabled: bool,
    /// Whether the Allowlist RuntimeClass is proven too (it needs a NetworkPolicy engine).
    pub allowlist: bool,
    /// Interval between two proofs of a verified class.
    pub interval: Duration,
    /// Longest one canary run may take, pod start included.
    pub timeout: Duration,
    /// How long an unschedulable canary pod waits for a node (a node pool scaling up from
    /// zero) before the class fails; added to `timeout`.
    pub schedule_grace: Duration,
    /// Image of the probe: its entrypoint is this version's `crucible` binary.
    pub image: String,
    /// Address of this controller that canary pods connect to.
    pub listen: IpAddr,
}

/// Limits of a namespace or of the whole controller; `None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Most runs admitted at once.
    pub max_running: Option<u32>,
    /// Most cores.
    pub cpu: Option<f64>,
    /// Most bytes of memory.
    pub memory: Option<f64>,
    /// Most GPUs.
    pub gpu: Option<f64>,
    /// Admit nothing new.
    pub paused: bool,
    /// Why a figure of the quota could not be understood: admit nothing new (fail closed).
    pub invalid: Option<String>,
}

/// Log output format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
