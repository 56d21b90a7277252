//! The model gateway (`crucible gateway`): the only holder of provider keys. Sandboxes call it
//! with their run's capability token; it checks the token and the model, reserves the call
//! against the run's budget, forwards it with the provider's key, streams the answer back,
//! settles the budget with the provider's reported usage and appends the call to the run's
//! ledger.
//!
//! Pure parts: `token` (capability tokens), `grant` (a run's token from its Evaluation),
//! `endpoint` (whether a ModelEndpoint and its Secret may be used), `budget` (accounting),
//! `usage` (reading reported usage from responses), `ledger` (the hash chain; its file sink is
//! the one I/O there). `listing` is `crucible calls`: a run's ledger, verified as it is read.

pub mod budget;
pub mod call;
pub mod catalog;
pub mod discovery;
pub mod endpoint;
pub mod expiring;
pub mod grant;
pub mod ledger;
pub mod listing;
pub mod metrics;
pub mod notice;
pub mod proxy;
pub mod refusal;
pub mod tally;
pub mod token;
pub mod usage;
pub mod window;
pub mod writer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::telemetry::LogArgs;

/// Unix seconds now: the clock of token expiry.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

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
    /// Address of `/metrics`, `/healthz` and `/readyz`: apart from the sandboxes' port, so a
    /// sandbox cannot read other namespaces' usage.
    #[arg(
        long,
        env = "CRUCIBLE_GATEWAY_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: SocketAddr,
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
    /// Logging (the controller's flags; the gateway has no `kube` target, so the shared
    /// default filter means `info` here).
    #[command(flatten)]
    pub log: LogArgs,
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

/// Flags of `crucible gateway-token`: mints a capability token by hand, as the controller
/// does for each run (for trying the gateway out and for its benchmark).
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// File holding the tokens' signing key (the gateway's `--token-key-file`).
    #[arg(long, env = "CRUCIBLE_GATEWAY_TOKEN_KEY_FILE")]
    pub token_key_file: PathBuf,
    /// Namespace of the run.
    #[arg(long)]
    pub namespace: String,
    /// Evaluation of the run.
    #[arg(long, default_value = "manual")]
    pub evaluation: String,
    /// Run id (what revocation and the ledger name).
    #[arg(long)]
    pub run: String,
    /// A model id the run may call (repeat for several).
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = crate::duration::parse)]
    pub ttl: Duration,
    /// Most calls.
    #[arg(long)]
    pub calls: Option<u64>,
    /// Most tokens.
    #[arg(long)]
    pub tokens: Option<u64>,
    /// Most cost, in US dollars.
    #[arg(long)]
    pub cost_usd: Option<f64>,
    /// Most tokens of the namespace's calls in any 24 hours (its quota's `tokensPerDay`).
    #[arg(long)]
    pub tokens_per_day: Option<u64>,
    /// Most cost of the namespace's calls in any 24 hours, in US dollars (`costUSDPerDay`).
    #[arg(long)]
    pub cost_usd_per_day: Option<f64>,
    /// Keep request and response bodies in the ledger.
    #[arg(long)]
    pub record_full: bool,
}

/// `crucible gateway-token`: the token, to print.
pub fn mint(args: &TokenArgs) -> Result<String, String> {
    let ttl = i64::try_from(args.ttl.as_secs()).map_err(|_| "--ttl is too long".to_string())?;
    let claims = token::Claims {
        namespace: args.namespace.clone(),
        evaluation: args.evaluation.clone(),
        run: args.run.clone(),
        models: args.models.clone(),
        budget: budget::Budget {
            calls: args.calls,
            tokens: args.tokens,
            cost_usd: args.cost_usd,
        },
        daily_budget: budget::DailyBudget {
            tokens_per_day: args.tokens_per_day,
            cost_usd_per_day: args.cost_usd_per_day,
        },
        record_calls: if args.record_full {
            ledger::RecordCalls::Full
        } else {
            ledger::RecordCalls::Digests
        },
        expires: now().saturating_add(ttl),
    };
    Ok(signing_key(&args.token_key_file)?.mint(&claims))
}

fn signing_key(path: &std::path::Path) -> Result<token::SigningKey, String> {
    let secret = key_bytes(path)?;
    token::SigningKey::new(&secret).ok_or_else(|| format!("{} is unusable", path.display()))
}

/// The signing key in `path` (surrounding whitespace dropped), at least
/// [`token::MIN_KEY_BYTES`] long; the controller and the gateway read the same file.
pub fn key_bytes(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let secret = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = secret.trim_ascii();
    if secret.len() < token::MIN_KEY_BYTES {
        return Err(format!(
            "{} holds fewer than {} bytes",
            path.display(),
            token::MIN_KEY_BYTES
        ));
    }
    Ok(secret.to_vec())
}

/// Builds the gateway from its flags' files; errors name the file, never a key.
pub fn build(args: &GatewayArgs) -> Result<proxy::Gateway, String> {
    let key = signing_key(&args.token_key_file)?;
    let catalog = catalog::Catalog::load(&args.endpoints).map_err(|e| e.to_string())?;
    let ledger = ledger::Ledger::new(Box::new(ledger::DirSink::new(args.ledger_dir.clone())));
    proxy::Gateway::new(key, catalog, ledger, args.limits())
        .map_err(|e| format!("cannot start the gateway (TLS roots, ledger writer): {e}"))
}

/// `crucible gateway`: serves until interrupted.
pub async fn main(args: GatewayArgs) -> Result<(), String> {
    crate::telemetry::init(args.log.format, &args.log.filter);
    let gateway = Arc::new(build(&args)?);
    let mut registry = prometheus_client::registry::Registry::with_prefix("crucible");
    gateway.register_metrics(&mut registry);
    let endpoints = crate::http::Endpoints {
        registry: Arc::new(registry),
        ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
    };
    let metrics = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.metrics_listen))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let bound = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(listen = %bound, "model gateway serving");
    // Without a signal handler the process just ends on the signal: same outcome.
    let stop = || async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let calls = proxy::serve(listener, gateway.clone(), stop());
    let metrics =
        axum::serve(metrics, crate::http::router(endpoints)).with_graceful_shutdown(stop());
    let (calls, metrics) = tokio::join!(calls, metrics);
    // The records of the calls that ended last are written before the process ends.
    let _ = tokio::task::spawn_blocking(move || gateway.writer.flush()).await;
    calls
        .and(metrics)
        .map_err(|e| format!("the gateway stopped: {e}"))
}
