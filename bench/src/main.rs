//! `crucible-bench`: the project's benchmarks, one module per benchmark, each a subcommand.
//!
//! - `local`: a trivial evaluation end to end under `crucible run`, side by side with
//!   `runsc do python3 -c 'print(42)'` (gVisor's floor) and plain `python3 -c 'print(42)'`,
//!   in one invocation so the figures share the machine's state.
//! - `cluster`: the controller on the local cluster against the built-in Job controller (and
//!   Kueue for queue memory): fan-out, queue memory, writes per run, slot refill and apply →
//!   result latency; and (named with `--only samples`) sample ingestion into the results store.
//! - `gateway`: calls through the model gateway vs the same calls straight to the stand-in
//!   provider and through LiteLLM's proxy: overhead p50/p99 at a fixed rate, throughput, the
//!   gateway's memory with many streams open.

mod cluster;
mod gateway;
mod local;
mod machine;
mod stats;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Crucible's benchmarks.
#[derive(Parser, Debug)]
#[command(name = "crucible-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// `crucible run` of a trivial evaluation vs `runsc do` vs plain python.
    Local(local::Args),
    /// The controller vs the Job controller and Kueue on the local cluster (B1, B3, Kueue, B4,
    /// B5, B6), and sample ingestion (samples, only when named).
    Cluster(cluster::Args),
    /// The model gateway vs direct calls to the stand-in provider and LiteLLM's proxy.
    Gateway(gateway::Args),
}

fn main() -> std::process::ExitCode {
    let outcome = match Cli::parse().command {
        Command::Local(args) => sibling_crucible().and_then(|bin| local::run(&args, bin)),
        Command::Cluster(args) => sibling_crucible().and_then(|bin| cluster::run(&args, bin)),
        Command::Gateway(args) => sibling_crucible().and_then(|bin| gateway::run(&args, bin)),
    };
    match outcome {
        Ok(report) => {
            print!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("crucible-bench: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The `crucible` binary next to this one (e.g. target/release/crucible), the default of
/// every benchmark.
fn sibling_crucible() -> Result<PathBuf, String> {
    std::env::current_exe()
        .map(|exe| exe.with_file_name("crucible"))
        .map_err(|e| format!("cannot find this binary: {e}"))
}
