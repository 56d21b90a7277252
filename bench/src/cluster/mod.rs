//! `cluster`: the controller against the built-in Job controller on the local cluster
//! (infrastructure/local), in one invocation so that the figures share the machine's state:
//!
//! - B1 fan-out: N objects created at concurrency c, time until a pod watch has seen the Nth
//!   (unschedulable) pod; Evaluations vs Jobs at the controller-manager's defaults and at
//!   `--kube-api-qps=200 --kube-api-burst=400`;
//! - B3 queue memory: controller RSS idle and with queued Evaluations, and the time until every
//!   queued one has a status; and its baseline Kueue (`kueue`): the same under Kueue v0.17;
//! - B4 writes: API writes per Evaluation and per Job, by resource and verb;
//! - B5 slot refill: a run ends → the next queued run's pod, with one slot;
//! - B6 latency: apply → result on status, vs a bare pod of the controller's pod spec;
//! - samples (opt-in: `--only samples`): a run's samples from pod end to the results store vs
//!   the store's raw upload of the same bytes, the controller's memory meanwhile, and other
//!   namespaces' admissions while many runs store theirs.
//!
//! It starts the controller itself for each benchmark, scoped to fresh namespaces, and cleans
//! up (namespaces, controller, controller-manager flags) also on error and on Ctrl-C.

mod api;
mod b1;
mod b3;
mod b4;
mod b5;
mod b6;
mod controller;
mod kueue;
mod lab;
mod metrics;
pub mod objects;
mod samples;
mod steps;

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use self::controller::Controller;
use self::lab::{ControllerManager, Lab};
use crate::machine::{interrupted, load_average};
use crate::stats;

/// The benchmarks, in the order they run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bench {
    B1,
    B3,
    /// B3's baseline: the same queued workloads held by Kueue.
    Kueue,
    B4,
    B5,
    B6,
    /// Sample ingestion (issue 19 item 7); opt-in: only with `--only samples`.
    Samples,
}

/// Flags of `crucible-bench cluster`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Benchmarks to run (comma-separated); when absent all but `samples`, which takes
    /// about 10 minutes (4 of them waiting for the runs to end together) and runs only
    /// when named.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Bench>,
    /// B1: Evaluations, and Jobs, created.
    #[arg(short, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    n: u32,
    /// Requests in flight while creating many objects (B1, B3, B4).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// B3 (and kueue, at most 10,000): queued Evaluations (Jobs) of each step
    /// (comma-separated), each in a fresh namespace.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    b3_counts: Vec<u32>,
    /// B3: seconds from the first create within which every queued Evaluation should have a
    /// status; the count reached by then is reported otherwise.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    b3_within: u64,
    /// B4: trivial Evaluations, and Jobs, run to completion.
    #[arg(short, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    m: u32,
    /// B5: short Evaluations queued behind one slot.
    #[arg(short, default_value_t = 30, value_parser = clap::value_parser!(u32).range(2..=1000))]
    k: u32,
    /// B6: timed rounds (after one warm-up), one evaluation and one bare pod each.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    b6_rounds: u32,
    /// samples: samples each run writes (500 bytes each: 100,000 are 50 MB).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    samples_count: u32,
    /// samples: runs ending together (as many as the node's free CPU and memory hold).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    samples_runs: u32,
    /// samples: CPU of each of those runs (a Kubernetes quantity; each also has the 20m
    /// samples container). The samples container compresses and prints the file with the
    /// pod's CPU within the pod's 5 s grace period: much less than 150m cuts it off, and the
    /// runs end InvalidResult (the output counts how runs ended).
    #[arg(long, default_value = "150m")]
    samples_runs_cpu: String,
    /// samples: memory of each of those runs (a Kubernetes quantity).
    #[arg(long, default_value = "256Mi")]
    samples_runs_memory: String,
    /// samples: seconds from their creation at which those runs end together (they have
    /// written their samples and wait until then).
    #[arg(long, default_value_t = 240, value_parser = clap::value_parser!(u64).range(10..=3600))]
    samples_finish_after: u64,
    /// samples: trivial runs whose admission is timed, with nothing else running and while
    /// those runs' samples are stored.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    samples_admissions: u32,
    /// The controller binary (default: `crucible` next to this one, e.g. target/release).
    #[arg(long)]
    controller_bin: Option<PathBuf>,
    /// kueue: Kueue's binary, its CRDs in `../crds` (default: what `cluster.sh tool kueue`
    /// prints, run from the current directory, the repository's root; it builds Kueue once).
    #[arg(long, env = "CRUCIBLE_KUEUE_BIN")]
    kueue_bin: Option<PathBuf>,
    /// The local cluster's state directory (`$LAB` of infrastructure/local).
    #[arg(long, env = "CRUCIBLE_LAB", default_value = "/var/lib/crucible-local")]
    lab: PathBuf,
}

impl Args {
    fn samples(&self) -> samples::Options {
        samples::Options {
            count: self.samples_count,
            runs: self.samples_runs as usize,
            admissions: self.samples_admissions as usize,
            cpu: self.samples_runs_cpu.clone(),
            memory: self.samples_runs_memory.clone(),
            finish_after: self.samples_finish_after,
        }
    }

    fn selected(&self, bench: Bench) -> bool {
        self.only.contains(&bench) || (self.only.is_empty() && bench != Bench::Samples)
    }
}

/// What can go wrong; every variant says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
}

/// Maps a kube error to [`Error::Kube`] saying what was being done.
fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// Maps an I/O error to [`Error::Io`] naming the path or program.
fn io_err(what: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.as_ref().display().to_string();
    move |source| Error::Io { what, source }
}

/// Progress on stderr, with the time since the start (the figures go to stdout).
fn say(message: impl Display) {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    eprintln!("[{:7.1}s] {message}", start.elapsed().as_secs_f64());
}

/// What the benchmarks share: the client, the run's id and namespaces, the controller-manager.
pub struct Session {
    client: Client,
    kubeconfig: PathBuf,
    /// Distinguishes this run's namespaces and labels from any other's.
    run: String,
    controller_bin: PathBuf,
    /// Controller logs and git cache.
    dir: PathBuf,
    concurrency: usize,
    /// Whole CPUs of the largest node: an Evaluation asking for more is never scheduled.
    node_cpus: u32,
    system_namespace: String,
    /// Namespaces created and not yet deleted.
    namespaces: Vec<String>,
    kcm: Option<ControllerManager>,
    /// Kueue's binary and CRDs, when the Kueue baseline runs.
    kueue_tool: Option<kueue::Tool>,
    /// Kueue's CRDs while they are applied (removed by the cleanup if the baseline did not).
    kueue: Option<kueue::Crds>,
}

impl Session {
    /// `bench-<run>-<suffix>`.
    fn ns_name(&self, suffix: &str) -> String {
        format!("bench-{}-{suffix}", self.run)
    }

    /// Creates the fresh namespace `bench-<run>-<suffix>`.
    async fn namespace(&mut self, suffix: &str) -> Result<String, Error> {
        let name = self.ns_name(suffix);
        api::create_namespace(&self.client, &name, &self.run).await?;
        self.namespaces.push(name.clone());
        Ok(name)
    }

    /// Deletes namespaces and waits until they are gone (at most 15 minutes: 10,000
    /// Evaluations take minutes), so the next run starts on a quiet API server. Namespaces
    /// still there then are left to the final cleanup, with a warning: the figures already
    /// taken stand.
    async fn drop_namespaces(&mut self, names: &[String]) -> Result<(), Error> {
        say(format!("deleting {}", names.join(", ")));
        let started = Instant::now();
        let left = api::delete_namespaces(&self.client, names, Duration::from_secs(900)).await?;
        self.namespaces
            .retain(|n| !names.contains(n) || left.contains(n));
        if left.is_empty() {
            say(format!("deleted in {}", stats::secs(started.elapsed())));
        } else {
            say(format!(
                "WARNING: {} still terminating; what runs next shares the API server with it",
                left.join(", ")
            ));
        }
        Ok(())
    }

    /// Starts the controller for `namespaces`.
    async fn controller(
        &self,
        namespaces: &[String],
        max_running: usize,
    ) -> Result<Controller, Error> {
        self.controller_with(namespaces, max_running, &[]).await
    }

    /// Starts the controller for `namespaces` with `extra` flags.
    async fn controller_with(
        &self,
        namespaces: &[String],
        max_running: usize,
        extra: &[String],
    ) -> Result<Controller, Error> {
        Controller::start(&controller::Options {
            binary: &self.controller_bin,
            kubeconfig: &self.kubeconfig,
            namespaces,
            system_namespace: &self.system_namespace,
            max_running,
            dir: &self.dir,
            extra,
        })
        .await
    }

    /// Waits until the API server has had no write for 3 s (at most a minute).
    async fn settle(&self) -> Result<bool, Error> {
        api::settle(
            &self.client,
            Duration::from_secs(3),
            Duration::from_secs(60),
        )
        .await
    }
}

/// Runs the selected benchmarks and returns the summary; each benchmark's figures are
/// printed as soon as it has them.
///
/// # Errors
/// A cluster that is not there or not ready, a benchmark that fails, or a signal.
pub fn run(args: &Args, default_controller: PathBuf) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime
        .block_on(run_async(args, default_controller))
        .map_err(|e| e.to_string())
}

async fn run_async(args: &Args, default_controller: PathBuf) -> Result<String, Error> {
    let mut session = connect(args, default_controller).await?;
    say(format!(
        "run {}: controller {}, logs in {}",
        session.run,
        session.controller_bin.display(),
        session.dir.display()
    ));
    let outcome = tokio::select! {
        outcome = run_benches(&mut session, args) => outcome,
        signal = interrupted() => Err(Error::Interrupted(signal)),
    };
    // The benchmark futures, and with them every controller and watch, are dropped here.
    let cleanup = cleanup(&mut session).await;
    match (outcome, cleanup) {
        (Ok(()), Ok(summary)) => Ok(summary),
        (Ok(()), Err(problem)) => Err(Error::Setup(format!("cleanup: {problem}"))),
        (Err(e), Ok(summary)) => Err(Error::Setup(format!("{e}\n{summary}"))),
        (Err(e), Err(problem)) => Err(Error::Setup(format!("{e}\ncleanup: {problem}"))),
    }
}

async fn connect(args: &Args, default_controller: PathBuf) -> Result<Session, Error> {
    let lab = Lab {
        root: lab::existing(&args.lab, "the local cluster's state directory")?,
    };
    let kubeconfig = lab::existing(&lab.kubeconfig(), "kubeconfig")?;
    let controller_bin = lab::existing(
        &args.controller_bin.clone().unwrap_or(default_controller),
        "controller binary",
    )?;
    let config = Kubeconfig::read_from(&kubeconfig)
        .map_err(|e| Error::Setup(format!("{}: {e}", kubeconfig.display())))?;
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Setup(format!("{}: {e}", kubeconfig.display())))?;
    let client = Client::try_from(config).map_err(kube_err("building the client"))?;
    let crds = http::Request::get("/apis/crucible.dev/v1alpha1")
        .body(Vec::new())
        .map_err(|e| Error::Setup(e.to_string()))?;
    client.request_text(crds).await.map_err(|e| {
        Error::Setup(format!(
            "crucible.dev/v1alpha1 is not served ({e}): is the cluster up and are the CRDs \
             applied (kubectl apply -f crds/)?"
        ))
    })?;
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_err("listing nodes"))?;
    let node_cpus = nodes
        .items
        .iter()
        .filter_map(|n| {
            let cpu = n.status.as_ref()?.allocatable.as_ref()?.get("cpu")?;
            objects::whole_cpus(&cpu.0)
        })
        .max()
        .ok_or_else(|| Error::Setup("no node reports its allocatable CPU".into()))?;
    let kcm = if args.selected(Bench::B1) {
        Some(ControllerManager::find(&lab)?)
    } else {
        None
    };
    let kueue_tool = if args.selected(Bench::Kueue) {
        if let Some(big) = args.b3_counts.iter().find(|c| **c > kueue::MAX_COUNT) {
            return Err(Error::Setup(format!(
                "--b3-counts {big}: the Kueue baseline queues at most {} (leave it out with --only)",
                kueue::MAX_COUNT
            )));
        }
        let binary = match &args.kueue_bin {
            Some(path) => lab::existing(path, "Kueue binary")?,
            None => kueue_from_cluster_sh()?,
        };
        Some(kueue::Tool::at(binary)?)
    } else {
        None
    };
    let run = run_id();
    let dir = std::env::temp_dir().join(format!("crucible-bench-{run}"));
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let mut session = Session {
        client,
        kubeconfig,
        system_namespace: String::new(),
        run,
        controller_bin,
        dir,
        concurrency: args.concurrency as usize,
        node_cpus,
        namespaces: Vec::new(),
        kcm,
        kueue_tool,
        kueue: None,
    };
    session.system_namespace = session.namespace("system").await?;
    Ok(session)
}

/// Kueue's binary as `infrastructure/local/cluster.sh tool kueue` prints it (built on first use).
fn kueue_from_cluster_sh() -> Result<PathBuf, Error> {
    let script = Path::new("infrastructure/local/cluster.sh");
    lab::existing(
        script,
        "cluster.sh (run from the repository's root, or give --kueue-bin)",
    )?;
    say("Kueue: cluster.sh tool kueue (the first time, a Go build of minutes)");
    let out = std::process::Command::new("bash")
        .arg(script)
        .args(["tool", "kueue"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(io_err(script))?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || path.is_empty() {
        return Err(Error::Setup(format!(
            "{} tool kueue failed ({}); leave the baseline out with --only b1,b3,b4,b5,b6",
            script.display(),
            out.status
        )));
    }
    lab::existing(Path::new(&path), "Kueue binary")
}

/// Six hex digits that differ between runs.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{:06x}", (nanos ^ (std::process::id() << 12)) & 0xff_ffff)
}

async fn run_benches(session: &mut Session, args: &Args) -> Result<(), Error> {
    let benches: [(Bench, &str); 7] = [
        (Bench::B1, "B1 fan-out"),
        (Bench::B3, "B3 queue memory"),
        (Bench::Kueue, "B3 Kueue baseline"),
        (Bench::B4, "B4 writes"),
        (Bench::B5, "B5 slot refill"),
        (Bench::B6, "B6 latency"),
        (Bench::Samples, "samples ingestion"),
    ];
    for (bench, title) in benches.into_iter().filter(|(b, _)| args.selected(*b)) {
        say(format!("{title}: starting"));
        let load_before = load_average();
        let section = match bench {
            Bench::B1 => b1::run(session, args.n as usize).await?,
            Bench::B3 => b3::run(session, &args.b3_counts, args.b3_within).await?,
            Bench::Kueue => {
                let tool = session
                    .kueue_tool
                    .take()
                    .ok_or_else(|| Error::Setup("Kueue's binary was not resolved".into()))?;
                kueue::run(session, &tool, &args.b3_counts, args.b3_within).await?
            }
            Bench::B4 => b4::run(session, args.m as usize).await?,
            Bench::B5 => b5::run(session, args.k as usize).await?,
            Bench::B6 => b6::run(session, args.b6_rounds as usize).await?,
            Bench::Samples => samples::run(session, &args.samples()).await?,
        };
        println!(
            "{section}(load average over 1 min: {load_before} at the start, {} at the end)\n",
            load_average()
        );
    }
    Ok(())
}

/// Puts the cluster back: the controller-manager's original command line, every namespace of
/// the run deleted. Returns what it found, or what it could not undo.
async fn cleanup(session: &mut Session) -> Result<String, String> {
    let mut done = Vec::new();
    let mut problems = Vec::new();
    if let Some(kcm) = session.kcm.as_mut() {
        match kcm.restore().await {
            Ok(()) if kcm.is_original() => done.push(format!(
                "kube-controller-manager runs with its original command line (PID {})",
                kcm.pid().unwrap_or_default()
            )),
            Ok(()) => problems.push("kube-controller-manager is not back as it was".to_string()),
            Err(e) => problems.push(format!("restoring kube-controller-manager: {e}")),
        }
    }
    // Kueue was stopped with the benchmark futures: its finalizers would keep the namespaces.
    let kueue = session.kueue.take();
    if let Some(crds) = &kueue {
        match kueue::release(session, crds).await {
            Ok(n) => done.push(format!("Kueue's finalizers released from {n} object(s)")),
            Err(e) => problems.push(format!("releasing Kueue's finalizers: {e}")),
        }
    }
    let mut names = session.namespaces.clone();
    match api::run_namespaces(&session.client, &session.run).await {
        Ok(labelled) => names.extend(labelled),
        Err(e) => problems.push(e.to_string()),
    }
    names.sort();
    names.dedup();
    say(format!("cleanup: deleting {} namespace(s)", names.len()));
    match api::delete_namespaces(&session.client, &names, Duration::from_secs(600)).await {
        Ok(left) if left.is_empty() => {
            done.push(format!("{} namespace(s) of the run deleted", names.len()))
        }
        Ok(left) => problems.push(format!("namespaces still there: {}", left.join(", "))),
        Err(e) => problems.push(e.to_string()),
    }
    if let Some(crds) = &kueue {
        match kueue::uninstall(session, crds).await {
            Ok(()) => done.push("Kueue's CRDs deleted".into()),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(format!("cleanup: {}\n", done.join("; ")))
    } else {
        Err(problems.join("; "))
    }
}
