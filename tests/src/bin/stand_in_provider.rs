//! `crucible-stand-in-provider`: the deterministic OpenAI- and Anthropic-compatible server of
//! `crucible_e2e::provider` as a process. The key it accepts comes from a file, so it is not on
//! the command line of the process list.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use crucible_e2e::provider::{self, Behaviour};

/// Serves the stand-in provider until interrupted.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// File holding the only API key accepted.
    #[arg(long)]
    api_key_file: PathBuf,
    /// Milliseconds to wait before answering.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Milliseconds between two streamed events.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Answer every call with this HTTP status and an error body.
    #[arg(long)]
    fail_status: Option<u16>,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let key = std::fs::read_to_string(&args.api_key_file)
        .map_err(|e| format!("cannot read {}: {e}", args.api_key_file.display()))?;
    let behaviour = Behaviour {
        delay: Duration::from_millis(args.delay_ms),
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        fail_status: args.fail_status,
        ..Behaviour::new(key.trim())
    };
    let (addr, _) = provider::spawn(args.listen, behaviour)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    println!("stand-in provider listening on {addr}");
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for a signal: {e}"))
}
