//! The model gateway (`crucible gateway`): the only holder of provider keys. Sandboxes call it
//! with their run's capability token; it checks the token and the model, reserves the call
//! against the run's budget, forwards it with the provider's key, streams the answer back,
//! settles the budget with the provider's reported usage and appends the call to the run's
//! ledger.
//!
//! Pure parts: `token` (capability tokens), `budget` (accounting), `usage` (reading reported
//! usage from responses), `ledger` (the hash chain; its file sink is the one I/O there).

pub mod budget;
pub mod call;
pub mod catalog;
pub mod expiring;
pub mod ledger;
pub mod proxy;
pub mod refusal;
pub mod token;
pub mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::config::LogFormat;

/// Flags of `crucible gateway`.
#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// Address to serve sandboxes on.
    #[arg(long, env = "CRUCIBLE_GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The endpoints file: provider endpoints, their key files, models and prices.
    #[arg(long, env = "CRUCIBLE_GATEWAY_ENDPOINTS")]
    pub endpoints: PathBuf,
    /// File holding the key capability tokens are signed with (at least 32 bytes; shared with
    /// the controller, which mints them).
    #[arg(long, env = "CRUCIBLE_GATEWAY_TOKEN_KEY_FILE")]
    pub token_key_file: PathBuf,
    /// Directory the call ledgers are appended to (`<namespace>/<run>.jsonl`).
    #[arg(long, env = "CRUCIBLE_GATEWAY_LEDGER_DIR")]
    pub ledger_dir: PathBuf,
    /// Connecting to a provider.
    #[arg(long, env = "CRUCIBLE_GATEWAY_CONNECT_TIMEOUT", default_value = "10s", value_parser = crate::duration::parse)]
    pub connect_timeout: Duration,
    /// From a call's request to the provider's response headers (a non-streamed answer comes
    /// whole, so this is the longest a model may think).
    #[arg(long, env = "CRUCIBLE_GATEWAY_FIRST_BYTE_TIMEOUT", default_value = "5m", value_parser = crate::duration::parse)]
    pub first_byte_timeout: Duration,
    /// Longest silence between two parts of a streamed response.
    #[arg(long, env = "CRUCIBLE_GATEWAY_IDLE_TIMEOUT", default_value = "2m", value_parser = crate::duration::parse)]
    pub idle_timeout: Duration,
    /// Longest call, streaming included.
    #[arg(long, env = "CRUCIBLE_GATEWAY_CALL_TIMEOUT", default_value = "15m", value_parser = crate::duration::parse)]
    pub call_timeout: Duration,
    /// Largest request body accepted, in MiB.
    #[arg(long, env = "CRUCIBLE_GATEWAY_MAX_REQUEST_MIB", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_request_mib: u16,
    /// Log format.
    #[arg(long, env = "CRUCIBLE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax.
    #[arg(long, env = "CRUCIBLE_LOG", default_value = "info")]
    pub log_filter: String,
}

impl GatewayArgs {
    /// The bounds of one call.
    pub fn limits(&self) -> proxy::Limits {
        proxy::Limits {
            connect: self.connect_timeout,
            first_byte: self.first_byte_timeout,
            idle: self.idle_timeout,
            call: self.call_timeout,
            max_request_bytes: usize::from(self.max_request_mib) * 1024 * 1024,
        }
    }
}

/// Builds the gateway from its flags' files; errors name the file, never a key.
pub fn build(args: &GatewayArgs) -> Result<proxy::Gateway, String> {
    let secret = std::fs::read(&args.token_key_file)
        .map_err(|e| format!("cannot read {}: {e}", args.token_key_file.display()))?;
    let key = token::SigningKey::new(secret.trim_ascii()).ok_or_else(|| {
        format!(
            "{} holds fewer than {} bytes",
            args.token_key_file.display(),
            token::MIN_KEY_BYTES
        )
    })?;
    let catalog = catalog::Catalog::load(&args.endpoints).map_err(|e| e.to_string())?;
    let ledger = ledger::Ledger::new(Box::new(ledger::DirSink::new(args.ledger_dir.clone())));
    proxy::Gateway::new(key, catalog, ledger, args.limits())
        .map_err(|e| format!("cannot load the TLS roots: {e}"))
}

/// `crucible gateway`: serves until interrupted.
pub async fn main(args: GatewayArgs) -> Result<(), String> {
    crate::telemetry::init(args.log_format, &args.log_filter);
    let gateway = Arc::new(build(&args)?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(listen = %args.listen, "model gateway serving");
    axum::serve(listener, proxy::router(gateway))
        .with_graceful_shutdown(async {
            // Without a signal handler the process just ends on the signal: same outcome.
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("the gateway stopped: {e}"))
}
