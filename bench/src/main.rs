//! `crucible-bench`: the project's benchmarks, one module per benchmark, each a subcommand.
//!
//! - `local`: a trivial evaluation end to end under `crucible run`, side by side with
//!   `runsc do python3 -c 'print(42)'` (gVisor's floor) and plain `python3 -c 'print(42)'`,
//!   in one invocation so the figures share the machine's state.

mod local;
mod stats;

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
}

fn main() -> std::process::ExitCode {
    let outcome = match Cli::parse().command {
        Command::Local(args) => local::run(&args),
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
