//! `gateway`: what the model gateway adds to a call. Starts the stand-in provider
//! (`crucible-stand-in-provider`), `crucible gateway` in front of it (a budget on every call,
//! the ledger written, its log at `info`) and, with `--litellm`, LiteLLM's proxy in front of the
//! same provider; then, in one invocation, sends the same chat calls, JSON and streamed, to
//! each subject (direct, gateway, LiteLLM), interleaved in rounds so drift on a shared machine
//! hits all alike:
//!
//! - closed loop: `--concurrency` callers back to back, the most calls per second a subject
//!   serves, with p50/p99;
//! - open loop: calls started at `--rate` per second whatever the subject does, each timed from
//!   its scheduled start: the overhead (subject minus direct) at p50 and p99 at that rate;
//! - memory: `--streams` streams held open at once (a second, slow stand-in waits between the
//!   parts of each answer), the resident memory of the gateway before, with every stream open,
//!   at its peak and after, twice.
//!
//! The goals (issue 21): overhead p50 ≤ 1 ms and p99 ≤ 5 ms at 1,000 calls/s, at least 2,000
//! calls/s through the gateway; each is said met or missed.

mod litellm;
mod load;
mod procs;
mod streams;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use self::load::{Run, Target};
use self::procs::{Process, free_port, write};
use self::streams::{STREAM_PARTS, Wave};
use crate::machine::{interrupted, load_average};
use crate::stats::{mib, percentile, table};

const PROVIDER_KEY: &str = "sk-bench-provider";
const NAMESPACE: &str = "bench";
const MODEL: &str = "gpt-bench";
/// The memory step's model, served by the slow stand-in.
const SLOW_MODEL: &str = "gpt-bench-slow";
/// Longest wait for the stand-ins and the gateway to listen.
const STARTUP: Duration = Duration::from_secs(30);
/// The warm-up: every subject's connections, caches and code paths, before anything counts.
const WARM_UP: Duration = Duration::from_secs(1);
/// How long past its window an open loop waits for answers; a call unanswered by then failed.
const GRACE: Duration = Duration::from_secs(5);
/// Longest wait for a subject to work off its queue before the next one is measured.
const SETTLE: Duration = Duration::from_secs(30);

/// The goals on a 2-core machine (issue 21, item 8).
const GOAL_P50_MS: f64 = 1.0;
const GOAL_P99_MS: f64 = 5.0;
const GOAL_THROUGHPUT: f64 = 2_000.0;

/// Flags of `crucible-bench gateway`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Open loop: calls started per second, per subject.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// Open loop: seconds of calls per subject and round.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=600))]
    open_seconds: u64,
    /// Open loop: most calls open at once per subject (a call waiting for room still counts
    /// from its scheduled start).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    in_flight: u32,
    /// Closed loop: seconds per subject and round.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=600))]
    closed_seconds: u64,
    /// Closed loop: callers at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4_096))]
    concurrency: u32,
    /// Measured rounds (after a warm-up of one second per subject).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Memory step: streams held open at once (0: no memory step).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    streams: u32,
    /// Memory step: milliseconds the slow stand-in waits before each part of a stream.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    stream_gap_ms: u64,
    /// Also measure LiteLLM's proxy (installed into the tools cache when missing).
    #[arg(long)]
    litellm: bool,
    /// The `crucible` binary (default: next to this one, e.g. target/release/crucible).
    #[arg(long)]
    crucible: Option<PathBuf>,
}

/// Runs the benchmark and returns its report.
///
/// # Errors
/// A process that cannot start, or a signal.
pub fn run(args: &Args, default_crucible: PathBuf) -> Result<String, String> {
    let crucible = args.crucible.clone().unwrap_or(default_crucible);
    // Before anything starts: an install is minutes of pip, not part of any figure.
    let litellm = args.litellm.then(litellm::install).transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        tokio::select! {
            // Every process is dropped (killed) when this future is.
            report = bench(args, &crucible, litellm.as_deref()) => report,
            signal = interrupted() => Err(format!("interrupted by {signal}")),
        }
    })
}

/// One subject: where its calls go, with which key, and its process (none for direct calls).
struct Base {
    name: &'static str,
    /// Up to `/v1`, for the loops.
    base: String,
    /// Up to `/v1`, for the memory step (the slow stand-in behind it).
    slow_base: String,
    key: String,
    pid: Option<u32>,
}

async fn bench(args: &Args, crucible: &Path, litellm: Option<&Path>) -> Result<String, String> {
    let load_before = load_average();
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let d = dir.path();
    let provider_key = write(d, "provider-key", PROVIDER_KEY)?;
    let token_key = write(d, "token-key", "bench-token-key-of-at-least-32-bytes")?;
    let provider_bin = crucible.with_file_name("crucible-stand-in-provider");
    let (provider_addr, slow_addr) = (free_port()?, free_port()?);
    let stand_in = |addr: SocketAddr, gap_ms: u64, log: &str| {
        let mut command = Command::new(&provider_bin);
        command
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--api-key-file")
            .arg(&provider_key)
            .arg("--chunk-delay-ms")
            .arg(gap_ms.to_string());
        Process::spawn("the stand-in provider", &mut command, d.join(log))
    };
    let mut provider = stand_in(provider_addr, 0, "provider.log")?;
    let mut slow_provider = stand_in(slow_addr, args.stream_gap_ms, "slow-provider.log")?;
    let (provider_base, slow_base) = (
        format!("http://{provider_addr}/v1"),
        format!("http://{slow_addr}/v1"),
    );
    let endpoint = |name: &str, base: &str, model: &str| {
        format!(
            "  - {{name: {name}, api: openai, baseURL: '{base}', keyFile: '{}', models: [{model}], \
             pricing: {{{model}: {{inputPerMTok: 1, outputPerMTok: 2}}}}}}\n",
            provider_key.display()
        )
    };
    let endpoints = write(
        d,
        "endpoints.yaml",
        &format!(
            "endpoints:\n{}{}",
            endpoint("bench", &provider_base, MODEL),
            endpoint("bench-slow", &slow_base, SLOW_MODEL)
        ),
    )?;
    let (gateway_addr, metrics_addr) = (free_port()?, free_port()?);
    let mut gateway = Process::spawn(
        "crucible gateway",
        Command::new(crucible)
            .arg("gateway")
            .arg("--listen")
            .arg(gateway_addr.to_string())
            .arg("--endpoints")
            .arg(&endpoints)
            .arg("--token-key-file")
            .arg(&token_key)
            .arg("--ledger-dir")
            .arg(d.join("ledger"))
            .arg("--metrics-listen")
            .arg(metrics_addr.to_string()),
        d.join("gateway.log"),
    )?;
    let token = mint(crucible, &token_key)?;
    provider.wait_listening(provider_addr, STARTUP).await?;
    slow_provider.wait_listening(slow_addr, STARTUP).await?;
    gateway.wait_listening(gateway_addr, STARTUP).await?;
    let gateway_base = format!("http://{gateway_addr}/ns/{NAMESPACE}/v1");
    let mut bases = vec![
        Base {
            name: "direct",
            base: provider_base.clone(),
            slow_base: slow_base.clone(),
            key: PROVIDER_KEY.to_string(),
            pid: None,
        },
        Base {
            name: "gateway",
            base: gateway_base.clone(),
            slow_base: gateway_base,
            key: token,
            pid: Some(gateway.id()),
        },
    ];
    let litellm = match litellm {
        Some(bin) => {
            let upstreams = litellm::Upstreams {
                provider: &provider_base,
                slow_provider: &slow_base,
                provider_key: PROVIDER_KEY,
            };
            let started = std::time::Instant::now();
            let (process, addr) = litellm::start(bin, d, &upstreams).await?;
            eprintln!(
                "LiteLLM's proxy listening after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            let base = format!("http://{addr}/v1");
            bases.push(Base {
                name: "LiteLLM",
                base: base.clone(),
                slow_base: base,
                key: litellm::KEY.to_string(),
                pid: Some(process.id()),
            });
            Some(process)
        }
        None => None,
    };
    // Killed when this function returns (or its future is dropped), after the figures.
    let _subjects = (provider, slow_provider, gateway, litellm, dir);
    // JSON calls of every subject, then streams: a subject's rows stand together per kind.
    let targets: Vec<(Arc<Target>, Option<u32>)> = [false, true]
        .into_iter()
        .flat_map(|stream| {
            let kind = if stream { "stream" } else { "JSON" };
            bases.iter().map(move |b| {
                let name = format!("{}, {kind}", b.name);
                (
                    Arc::new(Target::new(name, &b.base, &b.key, MODEL, stream)),
                    b.pid,
                )
            })
        })
        .collect();
    let figures = measure(args, &targets).await?;
    let memory = if args.streams > 0 {
        Some(memory(args, &bases).await?)
    } else {
        None
    };
    Ok(report(args, &figures, memory.as_deref(), &load_before))
}

/// Every subject's closed and open loops over the rounds.
struct Figures {
    names: Vec<String>,
    closed: Vec<Run>,
    open: Vec<Run>,
}

async fn measure(args: &Args, targets: &[(Arc<Target>, Option<u32>)]) -> Result<Figures, String> {
    let (closed_for, open_for) = (
        Duration::from_secs(args.closed_seconds),
        Duration::from_secs(args.open_seconds),
    );
    let concurrency = args.concurrency as usize;
    for (target, pid) in targets {
        let warm = load::closed(target, concurrency, WARM_UP).await;
        progress(0, "warm-up", &target.name, &warm);
        if warm.latencies.is_empty() {
            return Err(format!(
                "{}: no call succeeded in the warm-up: {}",
                target.name,
                warm.first_error.unwrap_or_default()
            ));
        }
        quiet(&target.name, *pid).await;
    }
    let mut closed: Vec<Run> = targets.iter().map(|_| Run::default()).collect();
    let mut open: Vec<Run> = targets.iter().map(|_| Run::default()).collect();
    for round in 1..=args.rounds {
        for (i, (target, pid)) in targets.iter().enumerate() {
            let run = load::closed(target, concurrency, closed_for).await;
            progress(round, "closed", &target.name, &run);
            closed[i].extend(run);
            quiet(&target.name, *pid).await;
        }
        for (i, (target, pid)) in targets.iter().enumerate() {
            let run = load::open(target, args.rate, open_for, args.in_flight as usize, GRACE);
            let run = run.await;
            progress(round, "open", &target.name, &run);
            open[i].extend(run);
            quiet(&target.name, *pid).await;
        }
    }
    Ok(Figures {
        names: targets.iter().map(|(t, _)| t.name.clone()).collect(),
        closed,
        open,
    })
}

/// Lets the subject just measured work off its queue before the next is measured.
async fn quiet(name: &str, pid: Option<u32>) {
    if let Some(pid) = pid
        && !procs::settle(pid, SETTLE).await
    {
        eprintln!(
            "{name}: still busy {SETTLE:?} after its loop; the next figures share the CPU with it"
        );
    }
}

/// One loop's figures on stderr as soon as they are in: a long invocation shows where it is.
fn progress(round: u32, kind: &str, name: &str, run: &Run) {
    eprintln!(
        "round {round}, {kind} loop, {name}: {:.0}/s, p50 {}, p99 {}, {} failed",
        run.throughput(),
        ms2(percentile(&run.latencies, 50)),
        ms2(percentile(&run.latencies, 99)),
        run.failed
    );
}

/// The memory step for the gateway: two waves. Not for LiteLLM: at the tens of calls per
/// second one worker serves on this machine, it does not open 1,000 streams within the
/// benchmark's 30 s bound per call (measured: 206 at once, 357 unanswered).
async fn memory(args: &Args, bases: &[Base]) -> Result<Vec<(String, Wave, u64)>, String> {
    let mut rows = Vec::new();
    for b in bases.iter().filter(|b| b.name == "gateway") {
        let Some(pid) = b.pid else { continue };
        let name = b.name;
        let target = Arc::new(Target::new(
            name.to_string(),
            &b.slow_base,
            &b.key,
            SLOW_MODEL,
            true,
        ));
        let mut idle = None;
        for wave in 1..=2 {
            let figures = streams::wave(&target, args.streams as usize, pid).await?;
            eprintln!("memory, {name}, wave {wave}: {figures:?}");
            let idle = *idle.get_or_insert(figures.before);
            rows.push((format!("{name}, wave {wave}"), figures, idle));
            quiet(name, Some(pid)).await;
        }
    }
    Ok(rows)
}

/// A token for the benchmark's run: budgets far above what it spends, so every call is
/// reserved and settled as a budgeted run's would be.
fn mint(crucible: &Path, token_key: &Path) -> Result<String, String> {
    let output = Command::new(crucible)
        .args(["gateway-token", "--namespace", NAMESPACE, "--run", "bench"])
        .args(["--model", MODEL, "--model", SLOW_MODEL])
        .args(["--calls", "1000000000", "--tokens", "1000000000000"])
        .args(["--cost-usd", "1000000000", "--token-key-file"])
        .arg(token_key)
        .output()
        .map_err(|e| format!("cannot run crucible gateway-token: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "crucible gateway-token failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Milliseconds with two decimals (overheads are fractions of one).
fn ms2(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `through`'s percentile `p` minus `direct`'s, in milliseconds (negative when faster).
fn overhead_ms(through: &Run, direct: &Run, p: u32) -> f64 {
    (percentile(&through.latencies, p).as_secs_f64()
        - percentile(&direct.latencies, p).as_secs_f64())
        * 1000.0
}

fn runs_table(names: &[String], runs: &[Run], rate_header: &str) -> String {
    let rows: Vec<Vec<String>> = names
        .iter()
        .zip(runs)
        .map(|(name, run)| {
            vec![
                name.clone(),
                format!("{:.0}/s", run.throughput()),
                ms2(percentile(&run.latencies, 50)),
                ms2(percentile(&run.latencies, 99)),
                run.failed.to_string(),
            ]
        })
        .collect();
    let mut out = table(&["subject", rate_header, "p50", "p99", "failed"], &rows);
    for (name, run) in names.iter().zip(runs) {
        if let Some(e) = &run.first_error {
            let _ = writeln!(out, "  {name}, first failure: {e}");
        }
    }
    out
}

/// Whether the gateway met each goal, one line each.
fn goals(p50_ms: f64, p99_ms: f64, throughput: f64) -> Vec<String> {
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    vec![
        format!(
            "overhead p50 <= {GOAL_P50_MS} ms at the offered rate: {} ({p50_ms:.2} ms, the \
             worse of JSON and stream)",
            verdict(p50_ms <= GOAL_P50_MS)
        ),
        format!(
            "overhead p99 <= {GOAL_P99_MS} ms at the offered rate: {} ({p99_ms:.2} ms, the \
             worse of JSON and stream)",
            verdict(p99_ms <= GOAL_P99_MS)
        ),
        format!(
            "throughput >= {GOAL_THROUGHPUT:.0} calls/s through the gateway: {} ({throughput:.0}/s, \
             the lower of JSON and stream)",
            verdict(throughput >= GOAL_THROUGHPUT)
        ),
    ]
}

fn report(
    args: &Args,
    figures: &Figures,
    memory: Option<&[(String, Wave, u64)]>,
    load_before: &str,
) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let mut out = format!(
        "crucible-bench gateway: {cpus} CPUs shared by the callers, the stand-ins and the \
         subjects; load average {load_before} at the start, {} at the end; budget and ledger \
         on; {} measured rounds after a warm-up\n\n",
        load_average(),
        args.rounds
    );
    let _ = writeln!(
        out,
        "closed loop: {} callers back to back, {} s per subject and round",
        args.concurrency, args.closed_seconds
    );
    out.push_str(&runs_table(&figures.names, &figures.closed, "calls/s"));
    let _ = writeln!(
        out,
        "\nopen loop: {} calls/s offered, {} s per subject and round, latency from each call's \
         scheduled start (at most {} open; unanswered {} s after the window: failed)",
        args.rate,
        args.open_seconds,
        args.in_flight,
        GRACE.as_secs()
    );
    out.push_str(&runs_table(&figures.names, &figures.open, "answered"));
    // Subjects come in two halves, JSON then stream, each starting with direct.
    let per_kind = figures.names.len() / 2;
    let mut rows = Vec::new();
    let (mut worst_p50, mut worst_p99, mut least) = (f64::MIN, f64::MIN, f64::MAX);
    for kind in 0..2 {
        let direct = kind * per_kind;
        for through in direct + 1..direct + per_kind {
            let (open, base) = (&figures.open[through], &figures.open[direct]);
            let (p50, p99) = (overhead_ms(open, base, 50), overhead_ms(open, base, 99));
            if figures.names[through].starts_with("gateway") {
                worst_p50 = worst_p50.max(p50);
                worst_p99 = worst_p99.max(p99);
                least = least.min(figures.closed[through].throughput());
            }
            rows.push(vec![
                figures.names[through].clone(),
                format!("{p50:.2} ms"),
                format!("{p99:.2} ms"),
            ]);
        }
    }
    let _ = writeln!(
        out,
        "\noverhead over direct calls at {} calls/s (subject's percentile minus direct's):",
        args.rate
    );
    out.push_str(&table(&["subject", "p50", "p99"], &rows));
    if let Some(waves) = memory {
        let _ = writeln!(
            out,
            "\nmemory: {} streams at once, {} ms before each of their {STREAM_PARTS} parts \
             (resident, the process and its children; per stream: the peak less the memory \
             before the first wave; after: idle connections stay pooled for the next wave)",
            args.streams, args.stream_gap_ms
        );
        let rows: Vec<Vec<String>> = waves
            .iter()
            .map(|(name, w, idle)| {
                vec![
                    name.clone(),
                    w.most_open.to_string(),
                    mib(w.before),
                    mib(w.all_open),
                    mib(w.peak),
                    mib(w.after),
                    format!(
                        "{:.1} KiB",
                        w.peak.saturating_sub(*idle) as f64 / w.most_open.max(1) as f64
                    ),
                    w.failed.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "subject",
                "most open",
                "before",
                "all open",
                "peak",
                "after",
                "per stream",
                "failed",
            ],
            &rows,
        ));
        for (name, w, _) in waves {
            if let Some(e) = &w.first_error {
                let _ = writeln!(out, "  {name}, first failure: {e}");
            }
        }
    }
    let _ = writeln!(out, "\ngoals on a 2-core machine (issue 21):");
    for line in goals(worst_p50, worst_p99, least) {
        let _ = writeln!(out, "- {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ms: &[u64]) -> Run {
        Run {
            latencies: ms.iter().map(|m| Duration::from_micros(m * 100)).collect(),
            took: Duration::from_secs(1),
            ..Run::default()
        }
    }

    #[test]
    fn the_overhead_is_the_difference_of_percentiles() {
        // Tenths of a millisecond: direct 1.0 ms at p50, the subject 1.3 ms.
        let direct = run(&[9, 10, 10, 11, 40]);
        let through = run(&[12, 13, 13, 14, 90]);
        assert!((overhead_ms(&through, &direct, 50) - 0.3).abs() < 1e-9);
        assert!((overhead_ms(&through, &direct, 99) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn each_goal_is_met_or_missed_on_its_own() {
        let lines = goals(0.4, 6.0, 2_500.0);
        assert!(lines[0].contains(": met (0.40 ms"), "{}", lines[0]);
        assert!(lines[1].contains(": MISSED (6.00 ms"), "{}", lines[1]);
        assert!(lines[2].contains(": met (2500/s"), "{}", lines[2]);
        assert!(goals(1.01, 5.0, 1_999.0)[0].contains("MISSED"));
        assert!(goals(1.0, 5.0, 1_999.0)[1].contains(": met"));
        assert!(goals(1.0, 5.0, 1_999.0)[2].contains("MISSED"));
    }
}
