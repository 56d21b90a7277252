//! `local`: how far `crucible run` is from gVisor's floor. Times n repetitions (after one
//! warm-up each) of
//! 1. `crucible run` of a trivial Evaluation (python prints a `CRUCIBLE_RESULT` line),
//! 2. `runsc --network=none do python3 -c 'print(42)'`,
//! 3. `python3 -c 'print(42)'`,
//!
//! interleaved round by round so that drift on a shared machine hits all three alike, and
//! prints p50/p90 and the ratios.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::objects::{Shape, evaluation};
use crate::stats::{ms, percentile, ratio};

/// Flags of `crucible-bench local`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Repetitions of each command.
    #[arg(short, default_value_t = 20)]
    n: usize,
    /// The `crucible` binary (default: next to this one, e.g. target/release/crucible).
    #[arg(long)]
    crucible: Option<PathBuf>,
    /// The python3 the plain and `runsc do` runs use.
    #[arg(long, default_value = "/usr/bin/python3")]
    python: String,
}

/// Runs the benchmark and returns its report.
///
/// # Errors
/// A command that cannot start or does not succeed.
pub fn run(args: &Args, default_crucible: PathBuf) -> Result<String, String> {
    let crucible = args.crucible.clone().unwrap_or(default_crucible);
    let manifest = std::env::temp_dir().join(format!("crucible-bench-{}.yaml", std::process::id()));
    // JSON is YAML: the same trivial Evaluation as the cluster benchmark's.
    let trivial = evaluation("trivial", Shape::Default, "1m").to_string();
    std::fs::write(&manifest, trivial).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let manifest_arg = manifest.display().to_string();
    let python = args.python.as_str();
    let subjects: [(&str, Vec<&str>); 3] = [
        (
            "crucible run (trivial evaluation)",
            vec![
                crucible.to_str().unwrap_or("crucible"),
                "run",
                &manifest_arg,
            ],
        ),
        (
            "runsc do python3 -c 'print(42)'",
            vec!["runsc", "--network=none", "do", python, "-c", "print(42)"],
        ),
        ("python3 -c 'print(42)'", vec![python, "-c", "print(42)"]),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); subjects.len()];
    let result = (|| {
        for round in 0..=args.n {
            for (i, (name, argv)) in subjects.iter().enumerate() {
                let took = time(argv).map_err(|e| format!("{name}: {e}"))?;
                // Round 0 warms caches (the image is unpacked on the very first crucible run).
                if round > 0 {
                    samples[i].push(took);
                }
            }
        }
        Ok::<(), String>(())
    })();
    let _ = std::fs::remove_file(&manifest);
    result?;
    let p50: Vec<Duration> = samples.iter().map(|s| percentile(s, 50)).collect();
    let mut out = format!(
        "crucible-bench local: n={} per command (after 1 warm-up), interleaved\n",
        args.n
    );
    let _ = writeln!(
        out,
        "{:<36} {:>10} {:>10} {:>10}",
        "command", "p50", "p90", "min"
    );
    for ((name, _), s) in subjects.iter().zip(&samples) {
        let min = s.iter().min().copied().unwrap_or_default();
        let _ = writeln!(
            out,
            "{name:<36} {:>10} {:>10} {:>10}",
            ms(percentile(s, 50)),
            ms(percentile(s, 90)),
            ms(min)
        );
    }
    let ratio = |a: Duration, b: Duration| ratio(a.as_secs_f64(), b.as_secs_f64());
    let _ = writeln!(
        out,
        "ratios of p50: crucible run / runsc do = {}, crucible run / python = {}, runsc do / python = {}",
        ratio(p50[0], p50[1]),
        ratio(p50[0], p50[2]),
        ratio(p50[1], p50[2])
    );
    let _ = writeln!(
        out,
        "crucible run overhead over runsc do (p50): {}",
        ms(p50[0].saturating_sub(p50[1]))
    );
    Ok(out)
}

/// Wall time of one run of `argv`, which must exit 0.
fn time(argv: &[&str]) -> Result<Duration, String> {
    let start = Instant::now();
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(took)
}
