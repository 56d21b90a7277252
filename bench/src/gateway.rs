//! `gateway`: what the model gateway adds to a call. Starts the stand-in provider
//! (`crucible-stand-in-provider`) and `crucible gateway` in front of it (budget and ledger on,
//! its log at `info` going nowhere), then, in one invocation, sends the same calls directly to
//! the provider and through the gateway, JSON and streamed, interleaved in rounds so drift on a
//! shared machine hits both alike. Reports throughput and latency p50/p99 with `--concurrency`
//! callers, the overhead (gateway minus direct), and the gateway's resident memory.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::stats::{ms, percentile, table};

const PROVIDER_KEY: &str = "sk-bench-provider";
const NAMESPACE: &str = "bench";
const MODEL: &str = "gpt-bench";
/// Longest wait for a process to listen, and for one call.
const DEADLINE: Duration = Duration::from_secs(30);

/// Flags of `crucible-bench gateway`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Calls per subject and round.
    #[arg(short, default_value_t = 5_000)]
    n: usize,
    /// Rounds (each runs every subject once; the first is a warm-up).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Callers at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The `crucible` binary (default: next to this one, e.g. target/release/crucible).
    #[arg(long)]
    crucible: Option<PathBuf>,
}

/// A process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the benchmark and returns its report.
///
/// # Errors
/// A process that cannot start, or a call that fails.
pub fn run(args: &Args, default_crucible: PathBuf) -> Result<String, String> {
    let crucible = args.crucible.clone().unwrap_or(default_crucible);
    let provider_bin = crucible.with_file_name("crucible-stand-in-provider");
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let files = Files::write(dir.path())?;
    let provider_addr = free_port()?;
    let gateway_addr = free_port()?;
    let metrics_addr = free_port()?;
    let _provider = spawn(
        Command::new(&provider_bin)
            .arg("--listen")
            .arg(provider_addr.to_string())
            .arg("--api-key-file")
            .arg(&files.provider_key),
    )?;
    std::fs::write(
        &files.endpoints,
        format!(
            "endpoints:\n  - {{name: bench, api: openai, baseURL: 'http://{provider_addr}/v1', \
             keyFile: '{}', models: [{MODEL}], \
             pricing: {{{MODEL}: {{inputPerMTok: 1, outputPerMTok: 2}}}}}}\n",
            files.provider_key.display()
        ),
    )
    .map_err(|e| format!("cannot write the endpoints file: {e}"))?;
    let gateway = spawn(
        Command::new(&crucible)
            .arg("gateway")
            .arg("--listen")
            .arg(gateway_addr.to_string())
            .arg("--endpoints")
            .arg(&files.endpoints)
            .arg("--token-key-file")
            .arg(&files.token_key)
            .arg("--ledger-dir")
            .arg(dir.path().join("ledger"))
            .arg("--metrics-listen")
            .arg(metrics_addr.to_string()),
    )?;
    let token = mint(&crucible, &files.token_key)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let subjects = [
        (
            "direct, JSON",
            format!("http://{provider_addr}/v1"),
            PROVIDER_KEY.to_string(),
            false,
        ),
        (
            "gateway, JSON",
            format!("http://{gateway_addr}/ns/{NAMESPACE}/v1"),
            token.clone(),
            false,
        ),
        (
            "direct, stream",
            format!("http://{provider_addr}/v1"),
            PROVIDER_KEY.to_string(),
            true,
        ),
        (
            "gateway, stream",
            format!("http://{gateway_addr}/ns/{NAMESPACE}/v1"),
            token,
            true,
        ),
    ];
    let mut samples: Vec<(Vec<Duration>, Duration)> =
        vec![(Vec::new(), Duration::ZERO); subjects.len()];
    runtime.block_on(async {
        wait_listening(provider_addr).await?;
        wait_listening(gateway_addr).await?;
        for round in 0..args.rounds.max(2) {
            for (i, (name, base, key, stream)) in subjects.iter().enumerate() {
                let (latencies, took) = load(base, key, *stream, args.n, args.concurrency)
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                if round > 0 {
                    samples[i].0.extend(latencies);
                    samples[i].1 += took;
                }
            }
        }
        Ok::<(), String>(())
    })?;
    let rss = resident_kib(gateway.0.id());
    let mut out = format!(
        "crucible-bench gateway: {} calls per subject and round, {} measured rounds (after 1 \
         warm-up), {} callers at once, budget and ledger on\n",
        args.n,
        args.rounds.max(2) - 1,
        args.concurrency
    );
    let rows: Vec<Vec<String>> = subjects
        .iter()
        .zip(&samples)
        .map(|((name, ..), (latencies, took))| {
            vec![
                (*name).to_string(),
                format!(
                    "{:.0}/s",
                    latencies.len() as f64 / took.as_secs_f64().max(1e-9)
                ),
                ms(percentile(latencies, 50)),
                ms(percentile(latencies, 99)),
            ]
        })
        .collect();
    out.push_str(&table(&["subject", "throughput", "p50", "p99"], &rows));
    for (label, direct, through) in [("JSON", 0, 1), ("stream", 2, 3)] {
        let overhead = |p| {
            percentile(&samples[through].0, p).as_secs_f64()
                - percentile(&samples[direct].0, p).as_secs_f64()
        };
        let _ = writeln!(
            out,
            "gateway overhead, {label}: p50 {:.2} ms, p99 {:.2} ms",
            overhead(50) * 1000.0,
            overhead(99) * 1000.0
        );
    }
    if let Some(kib) = rss {
        let _ = writeln!(
            out,
            "gateway resident memory after the runs: {}",
            crate::stats::mib(kib)
        );
    }
    Ok(out)
}

/// The files both processes read.
struct Files {
    provider_key: PathBuf,
    token_key: PathBuf,
    endpoints: PathBuf,
}

impl Files {
    fn write(dir: &Path) -> Result<Self, String> {
        let files = Self {
            provider_key: dir.join("provider-key"),
            token_key: dir.join("token-key"),
            endpoints: dir.join("endpoints.yaml"),
        };
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        write(&files.provider_key, PROVIDER_KEY)?;
        write(&files.token_key, "bench-token-key-of-at-least-32-bytes")?;
        Ok(files)
    }
}

/// A free port on 127.0.0.1 (released for the process about to take it).
fn free_port() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn spawn(command: &mut Command) -> Result<Process, String> {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Process)
        .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))
}

/// A token for the benchmark's run: a budget far above what it spends, so every call is
/// reserved and settled as a budgeted run's would be.
fn mint(crucible: &Path, token_key: &Path) -> Result<String, String> {
    let output = Command::new(crucible)
        .args([
            "gateway-token",
            "--namespace",
            NAMESPACE,
            "--run",
            "bench",
            "--model",
            MODEL,
        ])
        .args(["--calls", "1000000000", "--token-key-file"])
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

async fn wait_listening(addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing listens on {addr} after {DEADLINE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `n` chat calls by `concurrency` callers; each call's latency, and the wall time of all.
async fn load(
    base: &str,
    key: &str,
    stream: bool,
    n: usize,
    concurrency: usize,
) -> Result<(Vec<Duration>, Duration), String> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let body = Bytes::from(
        serde_json::json!({"model": MODEL, "stream": stream, "max_tokens": 16,
                           "messages": [{"role": "user", "content": "say something short"}]})
        .to_string(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let callers = (0..concurrency.max(1)).map(|_| {
        let (client, body, next) = (client.clone(), body.clone(), next.clone());
        let (url, auth) = (format!("{base}/chat/completions"), format!("Bearer {key}"));
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let request = http::Request::post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", &auth)
                    .body(Full::new(body.clone()))
                    .map_err(|e| e.to_string())?;
                let start = Instant::now();
                let call = async {
                    let response = client.request(request).await.map_err(|e| e.to_string())?;
                    let status = response.status();
                    response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?;
                    if status.is_success() {
                        Ok(())
                    } else {
                        Err(format!("status {status}"))
                    }
                };
                tokio::time::timeout(DEADLINE, call)
                    .await
                    .map_err(|_| "a call took longer than 30 s".to_string())??;
                latencies.push(start.elapsed());
            }
            Ok::<_, String>(latencies)
        })
    });
    let mut all = Vec::with_capacity(n);
    for caller in callers.collect::<Vec<_>>() {
        all.extend(caller.await.map_err(|e| e.to_string())??);
    }
    Ok((all, started.elapsed()))
}

/// VmRSS of a process, in KiB.
fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
