//! Command line and environment of the `crucible` binary (clap), parsed once into the plain
//! settings of [`crate::config`].
//!
//! Pure parts of the controller take `&Config`, never clap types or `std::env`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::local::RunArgs;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::config::Limits;
use crate::config::cidr::Cidr;
use crate::config::{Config, Runtime, SampleLimits};
use crate::quantity;
use crate::telemetry::LogArgs;

/// What `crucible --version` prints: the package version and the git commit it was built from
/// (`unknown` when built without git or `CRUCIBLE_GIT_COMMIT`; see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CRUCIBLE_GIT_COMMIT"),
    ")"
);

/// Crucible: runs AI evaluations declaratively in gVisor sandboxes.
#[derive(Parser, Debug)]
#[command(name = "crucible", version = VERSION, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands of `crucible`.
// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller against the current kubeconfig or the in-cluster config.
    Controller(ControllerArgs),
    /// Print the CRDs as YAML, or write them into the repository with `--write`.
    Crds(CrdsArgs),
    /// Print the API reference (Markdown), or write it into the repository with `--write`.
    Docs(DocsArgs),
    /// Run a tiny Evaluation, wait for it to pass, delete it (the `helm test` hook).
    Selftest(SelftestArgs),
    /// Emergency stop: cancel running Evaluations and admit nothing until `crucible resume`.
    Stop(StopArgs),
    /// Lift an emergency stop.
    Resume(ScopeArgs),
    /// Run Evaluation / EvaluationSuite manifests on this machine under gVisor, without a cluster.
    Run(RunArgs),
    /// Print a run's samples from the results store, worst first (or a bundle's, `--bundle`).
    Samples(crate::reading::SamplesArgs),
    /// Compare two runs' samples paired by id: A − B with its 95% interval.
    Compare(crate::reading::CompareArgs),
    /// Serve the model gateway: sandboxes call models through it with their run's token.
    Gateway(crate::gateway::GatewayArgs),
    /// Mint a capability token for the model gateway by hand (as the controller does per run).
    GatewayToken(crate::gateway::TokenArgs),
    /// List one run's model calls from the gateway's ledger, verifying its hash chain.
    Calls(crate::gateway::listing::CallsArgs),
    /// Inside a sandbox pod, its samples container: on SIGTERM, print the samples file on the log
    /// for the controller (see docs/samples.md).
    #[command(hide = true)]
    SamplesEmit(crate::transfer::emit::EmitArgs),
    /// Inside a sandbox canary pod: print what the sandbox looks like from inside, one line
    /// (the controller runs it; see docs/sandbox.md).
    #[command(hide = true)]
    CanaryProbe,
    /// Inside a sandbox pod with a network interface, first: wait until the pod's
    /// NetworkPolicy is in force (see docs/sandbox.md).
    #[command(hide = true)]
    NetworkGate(crate::network_gate::GateArgs),
}

/// Flags of `crucible stop` and `crucible resume`.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// Where to stop.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Why (kept in the switch and shown in every cancelled Evaluation).
    #[arg(long)]
    pub reason: Option<String>,
    /// How long `stop` waits for evaluation pods to be gone.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Flags of `crucible resume`, and the scope of `crucible stop`.
#[derive(Args, Debug)]
pub struct ScopeArgs {
    /// Every namespace.
    #[arg(
        long,
        conflicts_with = "namespaces",
        required_unless_present = "namespaces"
    )]
    pub all: bool,
    /// These namespaces (repeat or comma-separate).
    #[arg(long = "namespace", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Namespace of the switch ConfigMap (the controller's `--system-namespace`).
    #[arg(
        long,
        env = "CRUCIBLE_SYSTEM_NAMESPACE",
        default_value = "crucible-system"
    )]
    pub system_namespace: String,
}

impl ScopeArgs {
    /// The scope the flags name.
    pub fn scope(&self) -> crate::stop::Scope {
        if self.all {
            crate::stop::Scope::All
        } else {
            crate::stop::Scope::Namespaces(self.namespaces.clone())
        }
    }
}

/// Flags of `crucible selftest`.
#[derive(Args, Debug)]
pub struct SelftestArgs {
    /// Namespace to run the Evaluation in.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Image with python3.
    #[arg(long, default_value = "localhost/crucible/python:3.11")]
    pub image: String,
    /// How long to wait for the result.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Flags of `crucible crds`.
#[derive(Args, Debug)]
pub struct CrdsArgs {
    /// Repository root to write `crds/` and `charts/crucible/crds/` into.
    #[arg(long, value_name = "REPO_ROOT")]
    pub write: Option<std::path::PathBuf>,
}

/// Flags of `crucible docs`.
#[derive(Args, Debug)]
pub struct DocsArgs {
    /// Repository root to write `docs/reference/` into.
    #[arg(long, value_name = "REPO_ROOT")]
    pub write: Option<std::path::PathBuf>,
}

/// Flags of `crucible controller`; every flag has an environment twin.
#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// RuntimeClass of sandboxes without network (a gVisor class, e.g. runsc --network=none).
    #[arg(long, env = "CRUCIBLE_RUNTIME_CLASS", default_value = "gvisor")]
    pub runtime_class: String,
    /// RuntimeClass of sandboxes with `network: Allowlist`.
    #[arg(
        long,
        env = "CRUCIBLE_ALLOWLIST_RUNTIME_CLASS",
        default_value = "gvisor-net"
    )]
    pub allowlist_runtime_class: String,
    /// RuntimeClass of evaluations that request GPUs (gVisor with nvproxy, no network).
    #[arg(
        long,
        env = "CRUCIBLE_GPU_RUNTIME_CLASS",
        default_value = "gvisor-nvproxy"
    )]
    pub gpu_runtime_class: String,
    /// Run evaluations without gVisor when the RuntimeClass is missing (status says so).
    #[arg(long, env = "CRUCIBLE_ALLOW_UNSANDBOXED")]
    pub allow_unsandboxed: bool,
    /// CPU of an evaluation that does not set `resources.cpu`.
    #[arg(long, env = "CRUCIBLE_DEFAULT_CPU", default_value = "1")]
    pub default_cpu: String,
    /// Memory of an evaluation that does not set `resources.memory`.
    #[arg(long, env = "CRUCIBLE_DEFAULT_MEMORY", default_value = "512Mi")]
    pub default_memory: String,
    /// Ephemeral storage of an evaluation that does not set `resources.ephemeralStorage`.
    #[arg(
        long,
        env = "CRUCIBLE_DEFAULT_EPHEMERAL_STORAGE",
        default_value = "1Gi"
    )]
    pub default_ephemeral_storage: String,
    /// Timeout of an evaluation that does not set `timeout`.
    #[arg(long, env = "CRUCIBLE_DEFAULT_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub default_timeout: Duration,
    /// Size limit of the writable /tmp inside every sandbox.
    #[arg(long, env = "CRUCIBLE_TMP_SIZE", default_value = "64Mi")]
    pub tmp_size: String,
    /// Namespaces to watch (repeat or comma-separate); all namespaces when empty.
    #[arg(long = "namespace", env = "CRUCIBLE_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "CRUCIBLE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Evaluations reconciled at the same time.
    #[arg(long, env = "CRUCIBLE_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Most Evaluations running at once across the controller.
    #[arg(long, env = "CRUCIBLE_MAX_RUNNING", default_value_t = 100)]
    pub max_running: u32,
    /// Most CPU all running Evaluations may request together (unlimited when absent).
    #[arg(long, env = "CRUCIBLE_MAX_CPU", value_parser = parse_quantity)]
    pub max_cpu: Option<f64>,
    /// Most memory all running Evaluations may request together (unlimited when absent).
    #[arg(long, env = "CRUCIBLE_MAX_MEMORY", value_parser = parse_quantity)]
    pub max_memory: Option<f64>,
    /// Most GPUs all running Evaluations may request together (unlimited when absent).
    #[arg(long, env = "CRUCIBLE_MAX_GPU")]
    pub max_gpu: Option<u32>,
    /// `maxRunning` of namespaces without an EvaluationQuota.
    #[arg(long, env = "CRUCIBLE_NAMESPACE_MAX_RUNNING", default_value_t = 10)]
    pub namespace_max_running: u32,
    /// Namespace of the emergency-stop switch (and of the leader-election Lease).
    #[arg(
        long,
        env = "CRUCIBLE_SYSTEM_NAMESPACE",
        default_value = "crucible-system"
    )]
    pub system_namespace: String,
    /// Elect a leader on a Lease so that of several replicas only one acts.
    #[arg(long, env = "CRUCIBLE_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Name of the leader-election Lease (in `--system-namespace`).
    #[arg(
        long,
        env = "CRUCIBLE_LEASE_NAME",
        default_value = "crucible-controller"
    )]
    pub lease_name: String,
    /// Identity in the Lease; the pod name when run in a cluster.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Uid of this controller's pod (downward API): owner of the canary's pods, policies and
    /// ConfigMap (never of the leader Lease).
    #[arg(long, env = "POD_UID")]
    pub pod_uid: Option<String>,
    /// Namespace of this controller's pod (downward API): the canary's pods and ConfigMap are
    /// owned by the pod when they are in its namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// Directory of the shared cache of git repositories.
    #[arg(
        long,
        env = "CRUCIBLE_GIT_CACHE_DIR",
        default_value = "/var/cache/crucible/git"
    )]
    pub git_cache_dir: std::path::PathBuf,
    /// Disk budget of the git cache; least recently used repositories go first.
    #[arg(long, env = "CRUCIBLE_GIT_CACHE_SIZE", default_value = "2Gi", value_parser = parse_quantity)]
    pub git_cache_size: f64,
    /// How often a finished Evaluation with `follow: true` checks its branch for new commits.
    #[arg(long, env = "CRUCIBLE_FOLLOW_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub follow_interval: Duration,
    /// Allow `file://` git URLs (they read the controller's own disk: tests and mounted mirrors).
    #[arg(long, env = "CRUCIBLE_ALLOW_FILE_GIT_URLS")]
    pub allow_file_git_urls: bool,
    /// Largest total size of a git source's files (they travel in a ConfigMap, at most 1 MiB).
    #[arg(long, env = "CRUCIBLE_MAX_SOURCE_SIZE", default_value = "512Ki", value_parser = parse_quantity)]
    pub max_source_size: f64,
    /// Ranges no `Allowlist` run may reach: an egress entry inside one is refused, one around
    /// one excepts it (link-local and cloud metadata addresses by default).
    #[arg(
        long,
        env = "CRUCIBLE_FORBIDDEN_EGRESS_CIDRS",
        value_delimiter = ',',
        default_value = "169.254.0.0/16,fe80::/10,fd00:ec2::254/128"
    )]
    pub forbidden_egress_cidrs: Vec<Cidr>,
    /// The cluster's service and pod ranges: forbidden to `Allowlist` runs like
    /// `--forbidden-egress-cidrs` (none when not given).
    #[arg(long, env = "CRUCIBLE_CLUSTER_CIDRS", value_delimiter = ',')]
    pub cluster_cidrs: Vec<Cidr>,
    /// Cap on per-Evaluation score series in /metrics (0 turns them off).
    #[arg(long, env = "CRUCIBLE_SCORE_SERIES_LIMIT", default_value_t = 10_000)]
    pub score_series_limit: usize,
    /// Prove each sandbox with a canary pod before admitting runs to it; `false` for clusters
    /// that cannot run it (nothing is then held, and the ConfigMap crucible-sandbox says so).
    #[arg(long, env = "CRUCIBLE_SANDBOX_CANARY", default_value_t = true, action = clap::ArgAction::Set)]
    pub sandbox_canary: bool,
    /// Prove the Allowlist RuntimeClass too: egress to an allowed port only. Needs a CNI that
    /// enforces NetworkPolicy; `false` admits Allowlist runs without a canary.
    #[arg(long, env = "CRUCIBLE_CANARY_ALLOWLIST", default_value_t = true, action = clap::ArgAction::Set)]
    pub canary_allowlist: bool,
    /// How long a sandbox pod with a network interface waits, first, for its NetworkPolicy to
    /// be in force before it fails (`crucible network-gate`, docs/sandbox.md); `0s`, or
    /// `--canary-allowlist=false` (no engine to wait for), turns the gate off.
    #[arg(long, env = "CRUCIBLE_NETWORK_GATE_TIMEOUT", default_value = "1m", value_parser = parse_duration)]
    pub network_gate_timeout: Duration,
    /// Port of the controller's network-gate listener, on `--canary-listen-address`; 0: any
    /// free port (a NetworkPolicy in front of the controller must let sandbox pods reach it).
    #[arg(long, env = "CRUCIBLE_NETWORK_GATE_PORT", default_value_t = 0)]
    pub network_gate_port: u16,
    /// How often a verified sandbox is proven again (one that failed: every minute).
    #[arg(long, env = "CRUCIBLE_CANARY_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub canary_interval: Duration,
    /// Longest one canary run may take, from pod creation to its log.
    #[arg(long, env = "CRUCIBLE_CANARY_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    pub canary_timeout: Duration,
    /// How long an unschedulable canary pod waits for a node (a node pool scaling up from
    /// zero) before the sandbox counts as failed; on top of `--canary-timeout`.
    #[arg(long, env = "CRUCIBLE_CANARY_SCHEDULE_GRACE", default_value = "5m", value_parser = parse_duration)]
    pub canary_schedule_grace: Duration,
    /// Image the canary pods run `crucible canary-probe` from, and sandbox pods' samples container
    /// `crucible samples-emit`: the controller's own image (its entrypoint is this version's
    /// `crucible` binary; the chart passes the controller's image).
    /// The default is what `infrastructure/image/build.sh` tags.
    #[arg(
        long,
        env = "CRUCIBLE_CANARY_IMAGE",
        default_value = "localhost/crucible/controller:dev"
    )]
    pub canary_image: String,
    /// Results store of the samples of runs on the cluster (docs/samples.md): `file:///DIR` (a
    /// volume; the chart's default) or `s3://BUCKET/PREFIX` (credentials from the controller's
    /// environment). Unset: sandbox pods get no samples container and samples stay in the pod.
    #[arg(long, env = "CRUCIBLE_RESULTS_STORE")]
    pub results_store: Option<String>,
    /// Delete samples bundles this long after they were stored, a Go duration (90 days:
    /// `2160h`); the leader sweeps the store at its start and hourly. Unset: keep them.
    #[arg(long, env = "CRUCIBLE_RESULTS_RETENTION", value_parser = parse_duration)]
    pub results_retention: Option<Duration>,
    /// Most bytes the samples container prints on its log: keep it under the kubelet's
    /// `containerLogMaxSize` (default 10Mi), past which the start of the log is rotated away.
    #[arg(long, env = "CRUCIBLE_SAMPLES_LOG_MAX_BYTES", default_value_t = crate::transfer::emit::DEFAULT_MAX_OUTPUT)]
    pub samples_log_max_bytes: u64,
    /// Most lines of one run's samples file.
    #[arg(long, env = "CRUCIBLE_SAMPLES_MAX_LINES", default_value_t = SampleLimits::LINES)]
    pub samples_max_lines: u64,
    /// Most bytes of one run's samples file.
    #[arg(long, env = "CRUCIBLE_SAMPLES_MAX_BYTES", default_value_t = SampleLimits::BYTES)]
    pub samples_max_bytes: u64,
    /// Longest line of a samples file, in bytes (checked before the line is buffered).
    #[arg(long, env = "CRUCIBLE_SAMPLES_MAX_LINE_LENGTH", default_value_t = SampleLimits::LINE_LEN)]
    pub samples_max_line_length: usize,
    /// Most distinct sample ids of one run (each costs the controller about 64 bytes while the
    /// file is read).
    #[arg(long, env = "CRUCIBLE_SAMPLES_MAX_IDS", default_value_t = SampleLimits::IDS)]
    pub samples_max_ids: usize,
    /// Address of this controller the canary connects to (its own listener, never another
    /// host); default `--pod-ip`, else the local cluster's bridge address 10.88.0.1.
    #[arg(long, env = "CRUCIBLE_CANARY_LISTEN_ADDRESS")]
    pub canary_listen_address: Option<IpAddr>,
    /// IP of this controller's pod (downward API `status.podIP`).
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<IpAddr>,
    /// The model gateway's Service, `NAMESPACE/NAME` (or `NAME` in the system namespace): runs
    /// with `spec.models` get its cluster IP and may reach its pods only. Unset: such runs are
    /// refused.
    #[arg(
        long,
        env = "CRUCIBLE_GATEWAY_SERVICE",
        requires = "gateway_token_key_file"
    )]
    pub gateway_service: Option<String>,
    /// File holding the key the gateway's capability tokens are signed with (the gateway's
    /// `--token-key-file`, at least 32 bytes).
    #[arg(
        long,
        env = "CRUCIBLE_GATEWAY_TOKEN_KEY_FILE",
        requires = "gateway_service"
    )]
    pub gateway_token_key_file: Option<std::path::PathBuf>,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// The local cluster's bridge (and node) address: where a controller run from the checkout
/// listens for canaries (infrastructure/local).
const LOCAL_BRIDGE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 88, 0, 1));

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "local".into())
}

fn parse_quantity(s: &str) -> Result<f64, String> {
    quantity::parse(s).ok_or_else(|| format!("{s:?} is not a quantity such as 8, 500m or 16Gi"))
}

impl ControllerArgs {
    /// Splits the flags into the planning [`Config`] and the process [`Runtime`].
    pub fn into_parts(self) -> (Config, Runtime) {
        let ControllerArgs {
            runtime_class,
            allowlist_runtime_class,
            gpu_runtime_class,
            allow_unsandboxed,
            default_cpu,
            default_memory,
            default_ephemeral_storage,
            default_timeout,
            tmp_size,
            namespaces,
            metrics_addr,
            concurrency,
            max_running,
            max_cpu,
            max_memory,
            max_gpu,
            namespace_max_running,
            system_namespace,
            score_series_limit,
            leader_election,
            lease_name,
            identity,
            pod_uid,
            pod_namespace,
            git_cache_dir,
            git_cache_size,
            follow_interval,
            allow_file_git_urls,
            max_source_size,
            forbidden_egress_cidrs,
            cluster_cidrs,
            sandbox_canary,
            canary_allowlist,
            network_gate_timeout,
            network_gate_port,
            canary_interval,
            canary_timeout,
            canary_schedule_grace,
            canary_image,
            results_store,
            results_retention,
            samples_log_max_bytes,
            samples_max_lines,
            samples_max_bytes,
            samples_max_line_length,
            samples_max_ids,
            canary_listen_address,
            pod_ip,
            gateway_service,
            gateway_token_key_file,
            log,
        } = self;
        let samples = results_store
            .is_some()
            .then(|| crate::config::SamplesContainer {
                image: canary_image.clone(),
                max_output: samples_log_max_bytes,
            });
        (
            Config {
                runtime_class,
                allowlist_runtime_class,
                gpu_runtime_class,
                allow_unsandboxed,
                default_cpu: Quantity(default_cpu),
                default_memory: Quantity(default_memory),
                default_ephemeral_storage: Quantity(default_ephemeral_storage),
                default_timeout,
                tmp_size: Quantity(tmp_size),
                global_limits: Limits {
                    max_running: Some(max_running),
                    cpu: max_cpu,
                    memory: max_memory,
                    gpu: max_gpu.map(f64::from),
                    paused: false,
                    invalid: None,
                },
                namespace_max_running,
                max_source_bytes: max_source_size as usize,
                follow_interval,
                forbidden_egress: forbidden_egress_cidrs
                    .into_iter()
                    .chain(cluster_cidrs)
                    .collect(),
                // Filled by the operator once it has read the Service and the key.
                gateway: None,
                samples,
                sample_limits: SampleLimits {
                    max_lines: samples_max_lines,
                    max_bytes: samples_max_bytes,
                    max_line_len: samples_max_line_length,
                    max_ids: samples_max_ids,
                },
                // Filled by the operator once its listener is open.
                network_gate: None,
            },
            Runtime {
                // One watcher per namespace: the caches are ready when every distinct
                // namespace has listed, so a repeated one must not count twice.
                namespaces: namespaces
                    .into_iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                metrics_addr,
                concurrency,
                log_format: log.format,
                log_filter: log.filter,
                system_namespace,
                score_series_limit,
                leader_lease: leader_election.then_some(lease_name),
                identity: identity
                    .unwrap_or_else(|| format!("crucible-{}-{}", hostname(), std::process::id())),
                git_cache_dir,
                git_cache_bytes: git_cache_size as u64,
                allow_file_git_urls,
                pod_uid,
                pod_namespace,
                results_store,
                results_retention,
                network_gate: (canary_allowlist && !network_gate_timeout.is_zero()).then_some(
                    crate::config::GateFlags {
                        timeout: network_gate_timeout,
                        port: network_gate_port,
                    },
                ),
                canary: crate::config::CanarySettings {
                    enabled: sandbox_canary,
                    allowlist: canary_allowlist,
                    interval: canary_interval,
                    timeout: canary_timeout,
                    schedule_grace: canary_schedule_grace,
                    image: canary_image,
                    listen: canary_listen_address.or(pod_ip).unwrap_or(LOCAL_BRIDGE),
                },
                gateway: gateway_service
                    .zip(gateway_token_key_file)
                    .map(|(service, key)| crate::config::GatewayFlags {
                        service,
                        token_key_file: key,
                    }),
            },
        )
    }
}

impl Default for Config {
    /// The defaults of the command line flags.
    fn default() -> Self {
        let cli = Cli::parse_from(["crucible", "controller"]);
        match cli.command {
            Command::Controller(args) => args.into_parts().0,
            _ => unreachable!("parsed the controller subcommand"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogFormat;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_gvisor_and_sandboxed() {
        let config = Config::default();
        assert_eq!(config.runtime_class, "gvisor");
        assert_eq!(config.allowlist_runtime_class, "gvisor-net");
        assert_eq!(config.gpu_runtime_class, "gvisor-nvproxy");
        assert!(!config.allow_unsandboxed);
        assert_eq!(config.default_timeout, Duration::from_secs(600));
    }

    #[test]
    fn the_gateway_takes_the_controllers_log_flags_and_defaults() {
        let log_of = |args: &[&str]| match Cli::parse_from(args).command {
            Command::Controller(args) => args.log,
            Command::Gateway(args) => args.log,
            _ => panic!("controller or gateway subcommand expected"),
        };
        let gateway: &[&str] = &[
            "crucible",
            "gateway",
            "--endpoints",
            "e.yaml",
            "--token-key-file",
            "key",
            "--ledger-dir",
            "ledger",
        ];
        let controller: &[&str] = &["crucible", "controller"];
        assert_eq!(log_of(gateway), log_of(controller));
        let flags = ["--log-format", "json", "--log-filter", "debug"];
        for base in [gateway, controller] {
            assert_eq!(
                log_of(&[base, &flags].concat()),
                LogArgs {
                    format: LogFormat::Json,
                    filter: "debug".into()
                }
            );
        }
    }

    #[test]
    fn stop_needs_a_scope() {
        assert!(Cli::try_parse_from(["crucible", "stop"]).is_err());
        assert!(Cli::try_parse_from(["crucible", "stop", "--all", "--namespace", "a"]).is_err());
        let cli = Cli::parse_from(["crucible", "stop", "--namespace", "a,b"]);
        let Command::Stop(args) = cli.command else {
            panic!("stop subcommand expected")
        };
        assert_eq!(
            args.scope.scope(),
            crate::stop::Scope::Namespaces(vec!["a".into(), "b".into()])
        );
    }

    #[test]
    fn run_needs_files_and_bounds_its_parallelism() {
        assert!(Cli::try_parse_from(["crucible", "run"]).is_err());
        assert!(Cli::try_parse_from(["crucible", "run", "--parallel", "0", "a.yaml"]).is_err());
        assert!(Cli::try_parse_from(["crucible", "run", "-o", "wide", "a.yaml"]).is_err());
        let cli = Cli::parse_from([
            "crucible",
            "run",
            "-o",
            "json",
            "--unsandboxed",
            "a.yaml",
            "dir",
        ]);
        let Command::Run(args) = cli.command else {
            panic!("run subcommand expected")
        };
        assert_eq!(args.files.len(), 2);
        assert_eq!(args.output, crate::local::output::Format::Json);
        assert!(args.unsandboxed && !args.keep);
        assert_eq!((args.parallel, args.namespace.as_str()), (2, "default"));
    }

    #[test]
    fn the_canary_is_on_by_default_and_listens_on_the_pod_ip_unless_told_otherwise() {
        let runtime = |args: &[&str]| {
            let cli = Cli::parse_from(["crucible", "controller"].iter().chain(args));
            let Command::Controller(args) = cli.command else {
                panic!("controller subcommand expected")
            };
            args.into_parts().1.canary
        };
        let default = runtime(&[]);
        assert!(default.enabled && default.allowlist);
        assert_eq!(default.interval, Duration::from_secs(600));
        let off = runtime(&["--sandbox-canary=false", "--canary-allowlist", "false"]);
        assert!(!off.enabled && !off.allowlist);
        let pod = runtime(&["--pod-ip", "10.1.2.3"]);
        assert_eq!(pod.listen.to_string(), "10.1.2.3");
        let both = runtime(&["--pod-ip", "10.1.2.3", "--canary-listen-address", "fd00::1"]);
        assert_eq!(both.listen.to_string(), "fd00::1");
        assert!(
            Cli::try_parse_from([
                "crucible",
                "controller",
                "--canary-listen-address",
                "example.com"
            ])
            .is_err()
        );
    }

    /// The canary pod runs `crucible canary-probe` (hidden from `--help`: people do not run it)
    /// from, by default, the image `infrastructure/image/build.sh` builds and tags.
    #[test]
    fn the_canary_runs_a_hidden_subcommand_of_the_controllers_own_image() {
        let cli = Cli::try_parse_from(["crucible", crate::canary::probe::SUBCOMMAND])
            .expect("the canary's subcommand parses");
        assert!(matches!(cli.command, Command::CanaryProbe));
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains(crate::canary::probe::SUBCOMMAND), "{help}");
        let Command::Controller(args) = Cli::parse_from(["crucible", "controller"]).command else {
            panic!("controller subcommand expected")
        };
        let image = args.into_parts().1.canary.image;
        let build = include_str!("../../infrastructure/image/build.sh");
        assert!(
            build.contains(&format!("REF=${{CRUCIBLE_CONTROLLER_IMAGE:-{image}}}")),
            "--canary-image defaults to {image}, which build.sh does not tag"
        );
    }

    #[test]
    fn version_names_the_package_version_and_the_commit() {
        let version = Cli::command().render_version();
        assert!(
            version.starts_with(&format!("crucible {} (commit ", env!("CARGO_PKG_VERSION"))),
            "{version}"
        );
        assert!(!version.contains("(commit )"), "{version}");
    }

    #[test]
    fn resume_takes_only_the_scope_not_stops_reason_or_timeout() {
        let mut command = Cli::command();
        let resume = command.find_subcommand_mut("resume").expect("resume");
        let flags: Vec<_> = resume
            .get_arguments()
            .filter_map(|a| a.get_long())
            .collect();
        assert_eq!(flags, ["all", "namespace", "system-namespace"]);
        assert!(Cli::try_parse_from(["crucible", "resume", "--all", "--reason", "x"]).is_err());
        assert!(Cli::try_parse_from(["crucible", "stop", "--all", "--reason", "x"]).is_ok());
    }

    #[test]
    fn forbidden_egress_is_link_local_and_metadata_plus_the_cluster_ranges_given() {
        let forbidden = |args: &[&str]| -> Vec<String> {
            let cli = Cli::parse_from(["crucible", "controller"].iter().chain(args));
            let Command::Controller(args) = cli.command else {
                panic!("controller subcommand expected")
            };
            let config = args.into_parts().0;
            config
                .forbidden_egress
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let defaults = ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"];
        assert_eq!(forbidden(&[]), defaults);
        let with_cluster = forbidden(&["--cluster-cidrs", "10.96.0.0/12,10.244.0.0/16"]);
        assert_eq!(with_cluster[..3], defaults);
        assert_eq!(with_cluster[3..], ["10.96.0.0/12", "10.244.0.0/16"]);
        let only = forbidden(&["--forbidden-egress-cidrs", "192.0.2.0/24"]);
        assert_eq!(only, ["192.0.2.0/24"]);
        assert!(
            Cli::try_parse_from(["crucible", "controller", "--cluster-cidrs", "10.96.0.0"])
                .is_err(),
            "not a CIDR"
        );
    }

    /// The samples flags: the bounds reach the planning config; a results store switches the
    /// sidecar on, from the canary image, with the log budget; none by default.
    #[test]
    fn samples_flags_reach_the_config() {
        let config = |args: &[&str]| -> Config {
            let cli = Cli::parse_from(["crucible", "controller"].iter().chain(args));
            let Command::Controller(args) = cli.command else {
                panic!("controller subcommand expected")
            };
            args.into_parts().0
        };
        let defaults = config(&[]);
        assert_eq!(defaults.sample_limits, SampleLimits::default());
        assert_eq!(defaults.samples, None, "no store, no sidecar");
        let retention = |args: &[&str]| {
            let cli = Cli::parse_from(["crucible", "controller"].iter().chain(args));
            let Command::Controller(args) = cli.command else {
                panic!("controller subcommand expected")
            };
            args.into_parts().1.results_retention
        };
        assert_eq!(retention(&[]), None, "kept forever by default");
        assert_eq!(
            retention(&["--results-retention=2160h"]),
            Some(std::time::Duration::from_secs(2160 * 3600))
        );
        let set = config(&[
            "--samples-max-lines=10",
            "--samples-max-bytes=2048",
            "--samples-max-line-length=512",
            "--samples-max-ids=5",
            "--results-store=file:///r",
            "--samples-log-max-bytes=4096",
            "--canary-image=registry.example/crucible:1",
        ]);
        assert_eq!(
            set.sample_limits,
            SampleLimits {
                max_lines: 10,
                max_bytes: 2048,
                max_line_len: 512,
                max_ids: 5,
            }
        );
        assert_eq!(
            set.samples,
            Some(crate::config::SamplesContainer {
                image: "registry.example/crucible:1".into(),
                max_output: 4096,
            })
        );
    }

    #[test]
    fn namespaces_flag_takes_a_comma_separated_list() {
        let cli = Cli::parse_from(["crucible", "controller", "--namespace", "b,a,b"]);
        let Command::Controller(args) = cli.command else {
            panic!("controller subcommand expected")
        };
        assert_eq!(args.into_parts().1.namespaces, ["a", "b"], "each once");
    }
}
