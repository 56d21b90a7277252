//! Structured logging with `tracing`: text for people, JSON on request.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The log flags of the long-running subcommands (`crucible controller`, `crucible gateway`).
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct LogArgs {
    /// Log format.
    #[arg(
        long = "log-format",
        env = "CRUCIBLE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub format: LogFormat,
    /// Log filter in `tracing` syntax.
    #[arg(
        long = "log-filter",
        env = "CRUCIBLE_LOG",
        default_value = "info,kube=warn"
    )]
    pub filter: String,
}

/// Installs the global subscriber.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
