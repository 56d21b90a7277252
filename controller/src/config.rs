//! Command line and environment of the `crucible` binary, parsed once into a plain [`Config`].
//!
//! Pure parts of the controller take `&Config`, never clap types or `std::env`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Crucible: runs AI evaluations declaratively in gVisor sandboxes.
#[derive(Parser, Debug)]
#[command(name = "crucible", version, about)]
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
    /// Run a tiny Evaluation, wait for it to pass, delete it (the `helm test` hook).
    Selftest(SelftestArgs),
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

/// Log output format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
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
    /// Log format.
    #[arg(long, env = "CRUCIBLE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax.
    #[arg(long, env = "CRUCIBLE_LOG", default_value = "info,kube=warn")]
    pub log_filter: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s)
}

/// Settings the pure planning functions need.
#[derive(Clone, Debug)]
pub struct Config {
    /// RuntimeClass for network `None`.
    pub runtime_class: String,
    /// RuntimeClass for network `Allowlist`.
    pub allowlist_runtime_class: String,
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
}

impl ControllerArgs {
    /// Splits the flags into the planning [`Config`] and the process [`Runtime`].
    pub fn into_parts(self) -> (Config, Runtime) {
        let ControllerArgs {
            runtime_class,
            allowlist_runtime_class,
            allow_unsandboxed,
            default_cpu,
            default_memory,
            default_ephemeral_storage,
            default_timeout,
            tmp_size,
            namespaces,
            metrics_addr,
            concurrency,
            log_format,
            log_filter,
        } = self;
        (
            Config {
                runtime_class,
                allowlist_runtime_class,
                allow_unsandboxed,
                default_cpu: Quantity(default_cpu),
                default_memory: Quantity(default_memory),
                default_ephemeral_storage: Quantity(default_ephemeral_storage),
                default_timeout,
                tmp_size: Quantity(tmp_size),
            },
            Runtime {
                namespaces,
                metrics_addr,
                concurrency,
                log_format,
                log_filter,
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
        assert!(!config.allow_unsandboxed);
        assert_eq!(config.default_timeout, Duration::from_secs(600));
    }

    #[test]
    fn namespaces_flag_takes_a_comma_separated_list() {
        let cli = Cli::parse_from(["crucible", "controller", "--namespace", "a,b"]);
        let Command::Controller(args) = cli.command else {
            panic!("controller subcommand expected")
        };
        assert_eq!(args.into_parts().1.namespaces, ["a", "b"]);
    }
}
