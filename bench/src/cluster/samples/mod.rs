//! `samples` (issue 19, item 7): sample ingestion, from a finished pod to `status.samples` and
//! the stored bundle, against the store's raw upload of the same bytes; and whether many runs
//! storing their samples together delay other namespaces' admissions. Its controller gets a
//! results store (`file://`, a fresh directory of the benchmark's) and room for the samples
//! file in the sandbox (`--tmp-size 128Mi`); the other benchmarks' controllers get neither.
//!
//! a. One run writes `--samples-count` samples (500 bytes each: 100,000 are 50 MB of JSON
//!    Lines): from a pod watch seeing its `samples` container terminated (the sidecar has
//!    printed the file on its log: the transfer can start) to an Evaluation watch seeing it
//!    `Succeeded` with `status.samples.digest`; bytes, throughput, and the controller's RSS
//!    before the run and at its peak (VmHWM, reset through /proc/PID/clear_refs before the
//!    run, and VmRSS sampled on every pod event and every 100 ms as a cross-check).
//! b. The baseline: the same bytes, generated on the host, uploaded by this process to the same
//!    kind of store (object_store's LocalFileSystem in a temporary directory, multipart in the
//!    controller's part size, one part in flight).
//! c. `--samples-runs` such runs (as many as the node's free CPU and memory hold) finishing
//!    together; once the first one's samples container has stopped, another namespace creates
//!    `--samples-admissions` trivial runs, and their admission latency is compared with the
//!    same count created earlier while nothing else ran.

mod figures;
mod generate;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use object_store::local::LocalFileSystem;
use object_store::{ObjectStoreExt, WriteMultipart};
use serde_json::{Value, json};

use self::figures::{Ask, latencies, mb_per_s, megabytes, runs_that_fit, slowdown};
use self::generate::{LINE_LEN, Samples};
use super::api::{Mark, Watch, apply, create_many};
use super::objects::{self, MANAGED_LABEL, Shape};
use super::{Error, Session, api, io_err, kube_err, lab, say};
use crate::stats::{mib, ratio, secs, table};

/// The controller's multipart part size (`store::PART_SIZE` in the controller).
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Bytes handed to the baseline's upload at a time (the controller's read size).
const CHUNK: usize = 64 * 1024;
/// What every sandbox pod's `samples` container asks (the controller's `run::pod`), besides
/// the run's own resources.
const SIDECAR: Ask = Ask {
    millicpus: 20,
    bytes: 64 << 20,
};
/// Longest the single run may take, from its creation to its status.
const SINGLE_WITHIN: Duration = Duration::from_secs(600);
/// Longest the many runs may take after their common end, to the last status.
const MANY_WITHIN: Duration = Duration::from_secs(1800);
/// Longest the trivial runs may take to be admitted.
const ADMIT_WITHIN: Duration = Duration::from_secs(120);
/// Interval of the RSS poll (a measurement only: every wait is on a watch).
const RSS_POLL: Duration = Duration::from_millis(100);
/// The single run's resources: one CPU, as the controller's default.
const SINGLE_CPU: &str = "1";
const SINGLE_MEMORY: &str = "256Mi";

/// The step's settings (flags of `crucible-bench cluster`).
pub struct Options {
    /// Samples per run.
    pub count: u32,
    /// Runs finishing together (c).
    pub runs: usize,
    /// Trivial runs whose admission is timed, idle and during the transfers.
    pub admissions: usize,
    /// CPU and memory of each of the many runs.
    pub cpu: String,
    pub memory: String,
    /// Seconds from their creation at which the many runs end together.
    pub finish_after: u64,
}

pub async fn run(s: &mut Session, o: &Options) -> Result<String, Error> {
    let each = per_run(o)?;
    let (fit, room) = node_room(s, each, o.runs).await?;
    if fit == 0 {
        return Err(Error::Setup(format!(
            "samples: not one run of {} CPU and {} fits on the node ({room}); lower \
             --samples-runs-cpu or --samples-runs-memory",
            o.cpu, o.memory
        )));
    }
    let store = tempfile::Builder::new()
        .prefix("results-")
        .tempdir_in(&s.dir)
        .map_err(io_err(&s.dir))?;
    let one = s.namespace("samples-one").await?;
    let many = s.namespace("samples-many").await?;
    let idle = s.namespace("samples-idle").await?;
    let busy = s.namespace("samples-busy").await?;
    let quotas = [(&many, fit), (&idle, o.admissions), (&busy, o.admissions)];
    for (ns, max_running) in quotas {
        apply(
            &api::api(&s.client, ns, &objects::quotas()),
            &objects::quota(max_running, false),
        )
        .await?;
    }
    let namespaces = [one.clone(), many.clone(), idle.clone(), busy.clone()];
    let extra = [
        "--results-store".to_string(),
        format!("file://{}", store.path().display()),
        "--tmp-size".to_string(),
        "128Mi".to_string(),
    ];
    let controller = s
        .controller_with(&namespaces, fit + 2 * o.admissions + 1, &extra)
        .await?;
    let pid = controller.daemon().pid();

    say(format!("samples: one run of {} samples", o.count));
    let single = single(s, &one, pid, o.count).await?;
    say(format!(
        "samples: stored in {} ({}), controller RSS {} → peak {}",
        secs(single.took),
        mb_per_s(single.bytes, single.took),
        mib(single.memory.before),
        mib(single.memory.peak())
    ));
    say("samples: the store's raw upload of the same bytes");
    let raw = raw_upload(o.count).await?;
    say(format!(
        "samples: admission of {} trivial runs, nothing else running",
        o.admissions
    ));
    let quiet = Admissions::watch(s, &idle).await?;
    let quiet = quiet.measure(s, o.admissions).await?;
    // Their pods never schedule; gone, they leave the scheduler and the API server quiet.
    s.drop_namespaces(std::slice::from_ref(&idle)).await?;
    say(format!(
        "samples: {fit} runs ending together in {} s, then {} trivial runs",
        o.finish_after, o.admissions
    ));
    let together = many_runs(s, &many, &busy, pid, fit, o).await?;
    drop(controller);
    s.drop_namespaces(&[one, many, busy]).await?;
    Ok(report(o, &single, &raw, &quiet, &together, fit, &room))
}

/// What one of the many runs asks of the node (its own resources and the sidecar's).
fn per_run(o: &Options) -> Result<Ask, Error> {
    let bad = |flag: &str, value: &str| Error::Setup(format!("{flag} {value}: not a quantity"));
    Ok(Ask {
        millicpus: objects::millicpus(&o.cpu).ok_or_else(|| bad("--samples-runs-cpu", &o.cpu))?,
        bytes: figures::bytes(&o.memory).ok_or_else(|| bad("--samples-runs-memory", &o.memory))?,
    }
    .plus(SIDECAR))
}

/// An Evaluation writing `count` samples (and no result: it is derived from them), ending no
/// sooner than the Unix time `finish_at`.
fn samples_evaluation(name: &str, count: u32, finish_at: u64, cpu: &str, memory: &str) -> Value {
    json!({
        "apiVersion": "crucible.dev/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": name},
        "spec": {
            "image": objects::IMAGE,
            "command": ["python3", "-c", generate::python(count, finish_at)],
            "timeout": "30m",
            "resources": {"cpu": cpu, "memory": memory},
        }
    })
}

/// The pod's `samples` container has terminated: its log holds the whole frame.
fn samples_stopped(pod: &DynamicObject) -> bool {
    let status = &pod.data["status"];
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|field| status[field].as_array())
        .flatten()
        .any(|c| c["name"] == "samples" && c["state"]["terminated"].is_object())
}

/// The run succeeded with its samples stored.
fn samples_stored(ev: &DynamicObject) -> bool {
    let status = &ev.data["status"];
    status["phase"] == "Succeeded" && status["samples"]["digest"].is_string()
}

/// The run is admitted (its Admitted condition, or a phase past Queued).
fn admitted(ev: &DynamicObject) -> bool {
    let status = &ev.data["status"];
    let condition = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Admitted" && c["status"] == "True");
    condition || status["phase"].as_str().is_some_and(|p| p != "Queued")
}

/// Free CPU and memory of the node that has the most allocatable CPU, after the requests of
/// the pods already on it, and how many runs asking `each` (and the gvisor RuntimeClass's pod
/// overhead) fit there, at most `wanted`; with a sentence saying so.
async fn node_room(s: &Session, each: Ask, wanted: usize) -> Result<(usize, String), Error> {
    let nodes = Api::<Node>::all(s.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_err("listing nodes"))?;
    let allocatable = |n: &Node| {
        let a = n.status.as_ref()?.allocatable.as_ref()?;
        Some(Ask {
            millicpus: objects::millicpus(&a.get("cpu")?.0)?,
            bytes: figures::bytes(&a.get("memory")?.0)?,
        })
    };
    let (node, total) = nodes
        .items
        .iter()
        .filter_map(|n| Some((n.metadata.name.clone()?, allocatable(n)?)))
        .max_by_key(|(_, a)| a.millicpus)
        .ok_or_else(|| Error::Setup("no node reports its allocatable CPU and memory".into()))?;
    let pods = Api::<Pod>::all(s.client.clone())
        .list(&ListParams::default().fields(&format!(
            "spec.nodeName={node},status.phase!=Succeeded,status.phase!=Failed"
        )))
        .await
        .map_err(kube_err(format!("listing the pods on {node}")))?;
    let used = pods
        .items
        .iter()
        .map(pod_ask)
        .fold(Ask::default(), Ask::plus);
    let overhead = runtime_class_overhead(s).await?;
    let each = each.plus(overhead);
    let free = Ask {
        millicpus: total.millicpus.saturating_sub(used.millicpus),
        bytes: total.bytes.saturating_sub(used.bytes),
    };
    let fit = runs_that_fit(free, each, wanted);
    let room = format!(
        "node {node}: {}m CPU and {} free of {}m and {}; each run asks {}m and {} with its \
         sidecar and the RuntimeClass overhead",
        free.millicpus,
        mib(free.bytes / 1024),
        total.millicpus,
        mib(total.bytes / 1024),
        each.millicpus,
        mib(each.bytes / 1024)
    );
    Ok((fit, room))
}

/// A pod's requests as the scheduler counts them while it runs: its containers, its sidecars
/// (init containers that keep running) and its overhead.
fn pod_ask(pod: &Pod) -> Ask {
    let Some(spec) = pod.spec.as_ref() else {
        return Ask::default();
    };
    let container = |c: &k8s_openapi::api::core::v1::Container| {
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let get = |key: &str, parse: fn(&str) -> Option<u64>| {
            requests
                .and_then(|r| r.get(key))
                .and_then(|q| parse(&q.0))
                .unwrap_or(0)
        };
        Ask {
            millicpus: get("cpu", objects::millicpus),
            bytes: get("memory", figures::bytes),
        }
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let overhead = spec.overhead.as_ref().map_or(Ask::default(), |o| Ask {
        millicpus: o
            .get("cpu")
            .and_then(|q| objects::millicpus(&q.0))
            .unwrap_or(0),
        bytes: o
            .get("memory")
            .and_then(|q| figures::bytes(&q.0))
            .unwrap_or(0),
    });
    spec.containers
        .iter()
        .chain(sidecars)
        .map(container)
        .fold(overhead, Ask::plus)
}

/// The gvisor RuntimeClass's `overhead.podFixed` (none when it has none or is not there).
async fn runtime_class_overhead(s: &Session) -> Result<Ask, Error> {
    let classes = objects::resource("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses");
    let class = Api::<DynamicObject>::all_with(s.client.clone(), &classes)
        .get_opt("gvisor")
        .await
        .map_err(kube_err("reading RuntimeClass gvisor"))?;
    let fixed = class.map(|c| c.data["overhead"]["podFixed"].clone());
    let get = |key: &str, parse: fn(&str) -> Option<u64>| {
        fixed
            .as_ref()
            .and_then(|f| f[key].as_str())
            .and_then(parse)
            .unwrap_or(0)
    };
    Ok(Ask {
        millicpus: get("cpu", objects::millicpus),
        bytes: get("memory", figures::bytes),
    })
}

/// The controller's memory over a measured span.
struct Memory {
    /// VmRSS before, KiB.
    before: u64,
    /// VmHWM at the end, since a reset at the start; `None` when the reset failed.
    hwm: Option<u64>,
    /// Highest VmRSS sampled.
    sampled: u64,
}

impl Memory {
    fn peak(&self) -> u64 {
        self.hwm.unwrap_or(self.sampled).max(self.sampled)
    }

    fn growth(&self) -> u64 {
        self.peak().saturating_sub(self.before)
    }

    fn shown(&self) -> String {
        format!(
            "{} → peak {} (+{}; VmHWM {}, sampled {})",
            mib(self.before),
            mib(self.peak()),
            mib(self.growth()),
            self.hwm.map_or("not resettable here".into(), mib),
            mib(self.sampled)
        )
    }
}

/// Samples the controller's VmRSS on every event of the sandbox pods of a namespace and every
/// [`RSS_POLL`], keeping the highest; VmHWM reset at the start.
struct Probe {
    pid: u32,
    before: u64,
    reset: bool,
    peak: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Probe {
    fn start(s: &Session, ns: &str, pid: u32) -> Result<Probe, Error> {
        let before = lab::rss_kib(pid)?;
        let reset = match lab::reset_hwm(pid) {
            Ok(()) => true,
            Err(e) => {
                say(format!(
                    "samples: VmHWM not reset ({e}); the sampled peak stands"
                ));
                false
            }
        };
        let peak = Arc::new(AtomicU64::new(before));
        let sample = move |peak: &AtomicU64| {
            if let Ok(kib) = lab::rss_kib(pid) {
                peak.fetch_max(kib, Ordering::SeqCst);
            }
        };
        let polled = peak.clone();
        let poll = tokio::spawn(async move {
            loop {
                sample(&polled);
                tokio::time::sleep(RSS_POLL).await;
            }
        });
        let config = watcher::Config::default().labels(MANAGED_LABEL);
        let events = watcher(api::api(&s.client, ns, &objects::pods()), config).default_backoff();
        let on_event = peak.clone();
        let watch = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while events.next().await.is_some() {
                sample(&on_event);
            }
        });
        Ok(Probe {
            pid,
            before,
            reset,
            peak,
            tasks: vec![poll, watch],
        })
    }

    fn memory(&self) -> Memory {
        Memory {
            before: self.before,
            hwm: self.reset.then(|| lab::hwm_kib(self.pid).ok()).flatten(),
            sampled: self.peak.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// (a): one run.
struct Single {
    /// Samples container terminated → stored and Succeeded.
    took: Duration,
    /// Uncompressed JSON Lines.
    bytes: u64,
    /// The stored bundle.
    compressed: u64,
    memory: Memory,
}

/// What the samples runs of a namespace are measured by: a watch of their pods (mark 0: the
/// samples container stopped) and of the Evaluations (mark 0: stored, 1: finished).
struct Runs {
    pods: Watch,
    evaluations: Watch,
    api: Api<DynamicObject>,
}

impl Runs {
    async fn watch(s: &Session, ns: &str) -> Result<Runs, Error> {
        const STOPPED: &[Mark] = &[samples_stopped];
        const DONE: &[Mark] = &[samples_stored, objects::finished];
        let pods = Watch::start(
            &s.client,
            ns,
            &objects::pods(),
            Some(MANAGED_LABEL),
            STOPPED,
        )
        .await?;
        Ok(Runs {
            pods,
            evaluations: Watch::start(&s.client, ns, &objects::evaluations(), None, DONE).await?,
            api: api::api(&s.client, ns, &objects::evaluations()),
        })
    }
}

async fn single(s: &Session, ns: &str, pid: u32, count: u32) -> Result<Single, Error> {
    let name = "ingest";
    let Runs {
        pods,
        evaluations,
        api: evaluation_api,
    } = Runs::watch(s, ns).await?;
    s.settle().await?;
    let probe = Probe::start(s, ns, pid)?;
    apply(
        &evaluation_api,
        &samples_evaluation(name, count, 0, SINGLE_CPU, SINGLE_MEMORY),
    )
    .await?;
    evaluations
        .expect(
            SINGLE_WITHIN,
            |seen| seen.mark(name, 1).is_some(),
            |_| format!("the run of {count} samples ({ns}/{name}) to finish"),
        )
        .await?;
    let memory = probe.memory();
    drop(probe);
    let ev = evaluation_api
        .get(name)
        .await
        .map_err(kube_err(format!("reading {ns}/{name}")))?;
    let status = &ev.data["status"];
    let stored_at = evaluations.seen().mark(name, 0);
    let (Some(stored_at), Some(uri)) = (stored_at, status["samples"]["uri"].as_str()) else {
        return Err(Error::Setup(format!(
            "samples: {ns}/{name} ended {} ({}): {}",
            status["phase"], status["reason"], status["message"]
        )));
    };
    if status["samples"]["count"].as_u64() != Some(u64::from(count)) {
        return Err(Error::Setup(format!(
            "samples: {ns}/{name} stored {} samples, not {count}",
            status["samples"]["count"]
        )));
    }
    let stopped_at = pods
        .seen()
        .objects
        .values()
        .find(|p| p.owner.as_deref() == Some(name))
        .and_then(|p| p.marks[0])
        .ok_or_else(|| {
            Error::Setup(format!(
                "samples: the pod watch did not see {ns}/{name}'s samples container terminate"
            ))
        })?;
    let bundle = uri.strip_prefix("file://").unwrap_or(uri);
    let compressed = std::fs::metadata(bundle).map_err(io_err(bundle))?.len();
    Ok(Single {
        took: stored_at.saturating_duration_since(stopped_at),
        bytes: u64::from(count) * LINE_LEN as u64,
        compressed,
        memory,
    })
}

/// (b): the store's raw upload of the same bytes.
struct Raw {
    bytes: u64,
    took: Duration,
}

async fn raw_upload(count: u32) -> Result<Raw, Error> {
    let bytes = Samples::all(count);
    let dir = tempfile::tempdir().map_err(io_err("a temporary directory"))?;
    let failed = |e: object_store::Error| Error::Setup(format!("the raw upload: {e}"));
    let store = LocalFileSystem::new_with_prefix(dir.path()).map_err(failed)?;
    let path = object_store::path::Path::from("raw/samples.jsonl");
    let started = Instant::now();
    let mut upload = WriteMultipart::new_with_chunk_size(
        store.put_multipart(&path).await.map_err(failed)?,
        PART_SIZE,
    );
    for chunk in bytes.chunks(CHUNK) {
        // One part in flight, as the controller's upload.
        upload.wait_for_capacity(1).await.map_err(failed)?;
        upload.write(chunk);
    }
    upload.finish().await.map_err(failed)?;
    let took = started.elapsed();
    let stored = store.head(&path).await.map_err(failed)?.size;
    if stored != bytes.len() as u64 {
        return Err(Error::Setup(format!(
            "the raw upload stored {stored} bytes of {}",
            bytes.len()
        )));
    }
    Ok(Raw {
        bytes: stored,
        took,
    })
}

/// Trivial runs in a namespace of their own, admitted as a watch sees them.
struct Admissions {
    ns: String,
    watch: Watch,
}

impl Admissions {
    async fn watch(s: &Session, ns: &str) -> Result<Admissions, Error> {
        const ADMITTED: &[Mark] = &[admitted];
        let watch = Watch::start(&s.client, ns, &objects::evaluations(), None, ADMITTED).await?;
        Ok(Admissions {
            ns: ns.to_string(),
            watch,
        })
    }

    /// Creates `k` runs and returns each one's ADDED → admitted. Their pods ask for more CPU
    /// than the node has: admission is what is timed, and the node stays the samples runs'.
    async fn measure(&self, s: &Session, k: usize) -> Result<Vec<Duration>, Error> {
        let shape = Shape::Unschedulable {
            cpus: s.node_cpus + 1,
        };
        create_many(
            &api::api(&s.client, &self.ns, &objects::evaluations()),
            k,
            s.concurrency,
            |i| objects::evaluation(&format!("adm-{i:03}"), shape, "30m"),
        )
        .await?;
        self.watch
            .expect(
                ADMIT_WITHIN,
                |seen| seen.marked(0) >= k,
                |seen| {
                    format!(
                        "{k} trivial runs in {} to be admitted ({} were)",
                        self.ns,
                        seen.marked(0)
                    )
                },
            )
            .await?;
        let seen = self.watch.seen();
        Ok(seen
            .objects
            .values()
            .filter_map(|o| Some(o.marks[0]?.saturating_duration_since(o.added)))
            .collect())
    }
}

/// (c): many runs ending together.
struct Many {
    /// Admission latencies of the trivial runs created once the first samples container stopped.
    busy: Vec<Duration>,
    /// Runs whose samples were stored after the last of those admissions (or never).
    unstored_at_admission: usize,
    /// First → last samples container terminated.
    spread: Duration,
    /// First samples container terminated → last run stored.
    ingest: Duration,
    stored: usize,
    outcomes: String,
    bytes: u64,
    memory: Memory,
}

async fn many_runs(
    s: &Session,
    ns: &str,
    busy_ns: &str,
    pid: u32,
    runs: usize,
    o: &Options,
) -> Result<Many, Error> {
    let Runs {
        pods,
        evaluations,
        api: evaluation_api,
    } = Runs::watch(s, ns).await?;
    let busy = Admissions::watch(s, busy_ns).await?;
    s.settle().await?;
    let probe = Probe::start(s, ns, pid)?;
    let finish_at = unix_now()? + o.finish_after;
    create_many(&evaluation_api, runs, s.concurrency, |i| {
        samples_evaluation(
            &format!("run-{i:03}"),
            o.count,
            finish_at,
            &o.cpu,
            &o.memory,
        )
    })
    .await?;
    let within = Duration::from_secs(o.finish_after) + MANY_WITHIN;
    pods.expect(
        within,
        |seen| seen.marked(0) >= 1,
        |_| format!("the first samples container of the {runs} runs in {ns} to stop"),
    )
    .await?;
    let busy = busy.measure(s, o.admissions).await?;
    let admitted_by = Instant::now();
    evaluations
        .expect(
            within,
            |seen| seen.marked(1) >= runs,
            |seen| format!("the {runs} runs in {ns} to finish ({} did)", seen.marked(1)),
        )
        .await?;
    let memory = probe.memory();
    drop(probe);
    let stops = pods.seen().times(0);
    let stored = evaluations.seen().times(0);
    let between = |from: Option<&Instant>, to: Option<&Instant>| match (from, to) {
        (Some(from), Some(to)) => to.saturating_duration_since(*from),
        _ => Duration::ZERO,
    };
    let first_stop = stops.iter().min();
    let spread = between(first_stop, stops.iter().max());
    let ingest = between(first_stop, stored.iter().max());
    let stored_before = stored.iter().filter(|t| **t <= admitted_by).count();
    Ok(Many {
        busy,
        unstored_at_admission: runs - stored_before.min(runs),
        spread,
        ingest,
        stored: stored.len(),
        outcomes: outcomes(&evaluation_api).await?,
        bytes: stored.len() as u64 * u64::from(o.count) * LINE_LEN as u64,
        memory,
    })
}

/// How the runs ended, e.g. `20 Succeeded, 2 Failed (InvalidResult)`.
async fn outcomes(evaluations: &Api<DynamicObject>) -> Result<String, Error> {
    let list = evaluations
        .list(&ListParams::default())
        .await
        .map_err(kube_err("listing the samples runs"))?;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for ev in &list.items {
        let status = &ev.data["status"];
        let mut outcome = status["phase"].as_str().unwrap_or("no phase").to_string();
        if let Some(reason) = status["reason"].as_str().filter(|_| outcome != "Succeeded") {
            outcome.push_str(&format!(" ({reason})"));
        }
        *counts.entry(outcome).or_default() += 1;
    }
    Ok(counts
        .iter()
        .map(|(outcome, n)| format!("{n} {outcome}"))
        .collect::<Vec<_>>()
        .join(", "))
}

fn unix_now() -> Result<u64, Error> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|e| Error::Setup(format!("the clock is before 1970: {e}")))
}

fn report(
    o: &Options,
    single: &Single,
    raw: &Raw,
    quiet: &[Duration],
    many: &Many,
    fit: usize,
    room: &str,
) -> String {
    let mut out = format!(
        "samples: ingestion of {} samples ({} of JSON Lines) into a file:// store, from the \
         pod watch seeing the samples container terminated to the Evaluation watch seeing it \
         Succeeded with status.samples.digest\n",
        o.count,
        megabytes(single.bytes)
    );
    out.push_str(&table(
        &["subject", "bytes", "time", "throughput"],
        &[
            vec![
                "controller: pod end → status.samples".into(),
                format!(
                    "{} ({} stored)",
                    megabytes(single.bytes),
                    megabytes(single.compressed)
                ),
                secs(single.took),
                mb_per_s(single.bytes, single.took),
            ],
            vec![
                "store's raw upload of the same bytes".into(),
                megabytes(raw.bytes),
                secs(raw.took),
                mb_per_s(raw.bytes, raw.took),
            ],
        ],
    ));
    let throughput = |bytes: u64, took: Duration| bytes as f64 / took.as_secs_f64().max(1e-9);
    let _ = writeln!(
        out,
        "ingestion / raw: {} (goal ≥ 0.5); compression {}×; controller RSS {} (goal: growth ≤ 16 MiB)",
        ratio(
            throughput(single.bytes, single.took),
            throughput(raw.bytes, raw.took)
        ),
        ratio(single.bytes as f64, single.compressed as f64),
        single.memory.shown()
    );
    let _ = writeln!(
        out,
        "{fit} of {} runs of {} samples ending together ({room}): {}; samples containers \
         stopped within {} of each other; first stop → last stored {} ({} of {} stored, {}); \
         controller RSS {}",
        o.runs,
        o.count,
        many.outcomes,
        secs(many.spread),
        secs(many.ingest),
        many.stored,
        fit,
        mb_per_s(many.bytes, many.ingest),
        many.memory.shown()
    );
    let _ = writeln!(
        out,
        "admission of {} trivial runs (ADDED → Admitted, watched): nothing else running {}; \
         during those transfers {} ({} run(s) not yet stored when the last was admitted); \
         busy/idle {} (goal ≈ 1)",
        o.admissions,
        latencies(quiet),
        latencies(&many.busy),
        many.unstored_at_admission,
        slowdown(&many.busy, quiet)
    );
    out
}

/// Checks that the watches' predicates read what the controller writes.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_samples_container_stopped_only_when_terminated() {
        let pod = |state: Value| {
            api::dynamic(json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "status": {"initContainerStatuses": [{"name": "samples", "state": state}],
                           "containerStatuses": [{"name": "evaluation",
                                                  "state": {"terminated": {"exitCode": 0}}}]}
            }))
            .unwrap()
        };
        assert!(!samples_stopped(&pod(json!({"running": {}}))));
        assert!(samples_stopped(&pod(
            json!({"terminated": {"exitCode": 0}})
        )));
    }

    #[test]
    fn stored_needs_success_and_a_digest_and_admitted_a_condition_or_a_later_phase() {
        let ev = |status: Value| {
            api::dynamic(json!({
                "apiVersion": "crucible.dev/v1alpha1", "kind": "Evaluation",
                "metadata": {"name": "e"}, "status": status
            }))
            .unwrap()
        };
        assert!(!samples_stored(&ev(json!({"phase": "Running"}))));
        assert!(!samples_stored(&ev(
            json!({"phase": "Succeeded", "samples": {"count": 1}})
        )));
        assert!(samples_stored(&ev(
            json!({"phase": "Succeeded", "samples": {"digest": "sha256:00"}})
        )));
        assert!(!admitted(&ev(json!({}))));
        assert!(!admitted(&ev(json!({"phase": "Queued", "conditions": [
            {"type": "Admitted", "status": "False"}]}))));
        assert!(admitted(&ev(json!({"phase": "Queued", "conditions": [
            {"type": "Admitted", "status": "True"}]}))));
        assert!(admitted(&ev(json!({"phase": "Pending"}))));
    }

    #[test]
    fn a_pod_asks_for_its_containers_sidecars_and_overhead() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "evaluation",
                                "resources": {"requests": {"cpu": "50m", "memory": "256Mi"}}}],
                "initContainers": [
                    {"name": "samples", "restartPolicy": "Always",
                     "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}}},
                    {"name": "setup", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}],
                "overhead": {"cpu": "10m", "memory": "16Mi"}
            }
        }))
        .unwrap();
        assert_eq!(
            pod_ask(&pod),
            Ask {
                millicpus: 80,
                bytes: (256 + 64 + 16) << 20
            },
            "a plain init container has ended while the pod runs"
        );
    }

    #[test]
    fn the_many_runs_ask_their_resources_and_the_sidecars() {
        let o = Options {
            count: 10,
            runs: 2,
            admissions: 2,
            cpu: "50m".into(),
            memory: "256Mi".into(),
            finish_after: 1,
        };
        assert_eq!(
            per_run(&o).unwrap(),
            Ask {
                millicpus: 70,
                bytes: 320 << 20
            }
        );
        let bad = Options {
            cpu: "fast".into(),
            ..o
        };
        assert!(per_run(&bad).is_err());
        let ev = samples_evaluation("run-000", 10, 42, "50m", "256Mi");
        assert_eq!(ev["spec"]["resources"]["cpu"], "50m");
        let source = ev["spec"]["command"][2].as_str().unwrap();
        assert!(
            source.contains("range(10)") && source.contains("< 42:"),
            "{source}"
        );
    }

    #[test]
    fn the_report_sets_ingestion_beside_the_raw_upload() {
        let memory = || Memory {
            before: 20 * 1024,
            hwm: Some(30 * 1024),
            sampled: 28 * 1024,
        };
        let o = Options {
            count: 100_000,
            runs: 100,
            admissions: 2,
            cpu: "150m".into(),
            memory: "256Mi".into(),
            finish_after: 240,
        };
        let single = Single {
            took: Duration::from_secs(5),
            bytes: 50_000_000,
            compressed: 5_000_000,
            memory: memory(),
        };
        let raw = Raw {
            bytes: 50_000_000,
            took: Duration::from_millis(2500),
        };
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        let many = Many {
            busy: ms(&[30, 60]),
            unstored_at_admission: 7,
            spread: Duration::from_secs(3),
            ingest: Duration::from_secs(50),
            stored: 10,
            outcomes: "10 Succeeded".into(),
            bytes: 500_000_000,
            memory: memory(),
        };
        let text = report(&o, &single, &raw, &ms(&[10, 30]), &many, 10, "node n: room");
        for expected in [
            "controller: pod end → status.samples  50.0 MB (5.0 MB stored)  5.0 s   10.0 MB/s",
            "store's raw upload of the same bytes                  50.0 MB  2.5 s   20.0 MB/s",
            "ingestion / raw: 0.50 (goal ≥ 0.5); compression 10.00×",
            "10 of 100 runs of 100000 samples ending together (node n: room): 10 Succeeded",
            "first stop → last stored 50.0 s (10 of 10 stored, 10.0 MB/s)",
            "nothing else running p50 10.0 ms, max 30.0 ms (n=2)",
            "(7 run(s) not yet stored when the last was admitted); busy/idle p50 ×3.00, max ×2.00",
        ] {
            assert!(text.contains(expected), "{expected:?} not in:\n{text}");
        }
    }

    /// The baseline uploads every byte, in more than one part.
    #[tokio::test]
    async fn the_raw_upload_stores_every_byte() {
        let count = 25_000; // 12.5 MB: three parts
        let raw = raw_upload(count).await.unwrap();
        assert_eq!(raw.bytes, u64::from(count) * LINE_LEN as u64);
        assert!(raw.bytes > 2 * PART_SIZE as u64);
        assert!(!raw.took.is_zero());
    }

    #[test]
    fn memory_growth_is_from_the_higher_of_the_two_peaks() {
        let memory = Memory {
            before: 20 * 1024,
            hwm: Some(30 * 1024),
            sampled: 28 * 1024,
        };
        assert_eq!(memory.growth(), 10 * 1024);
        assert_eq!(
            memory.shown(),
            "20.0 MiB → peak 30.0 MiB (+10.0 MiB; VmHWM 30.0 MiB, sampled 28.0 MiB)"
        );
        let unreset = Memory {
            hwm: None,
            ..memory
        };
        assert_eq!(unreset.peak(), 28 * 1024);
    }
}
