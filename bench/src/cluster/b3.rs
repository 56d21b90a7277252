//! B3 queue memory: the controller's RSS (VmRSS) idle and with queued Evaluations (quota
//! `paused: true`, so none is admitted), and the time from the first create until every queued
//! one has a status (a phase or a condition), seen by a watch. Each step has a fresh namespace
//! and a fresh controller: idle RSS, the Evaluations created at concurrency c, RSS once the API
//! server is quiet; the controller is stopped before the namespace is deleted (deleting a
//! namespace of queued runs under a running controller was ~100× slower: the quota goes first,
//! so the controller starts admitting into the terminating namespace).

use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject};
use serde_json::Value;

use super::api::{Watch, apply, create_many};
use super::controller::Daemon;
use super::objects::{self, Shape};
use super::steps::Steps;
use super::{Error, Session, api, say};
use crate::stats::{mib, ratio, secs};

/// How long the API server gets to go quiet before the RSS is read after a burst.
pub const SETTLE_AFTER_BURST: Duration = Duration::from_secs(30);

pub async fn run(s: &mut Session, counts: &[u32], within_secs: u64) -> Result<String, Error> {
    let within = Duration::from_secs(within_secs);
    let mut steps = Steps::new("B3");
    for count in counts.iter().map(|c| *c as usize) {
        step(s, count, within, &mut steps).await?;
        if steps.failed() {
            break;
        }
    }
    let mut out = format!(
        "B3 queue memory: quota paused, a fresh controller and namespace per step, Evaluations \
         created at concurrency {}; \"all with a status\" is from the first create until the \
         watch saw the last one get a phase or condition (at most {within_secs} s); RSS after \
         the API server was quiet for 3 s (at most {} s); CPU and reconciles over the step\n",
        s.concurrency,
        SETTLE_AFTER_BURST.as_secs()
    );
    let mut header = COLUMNS.to_vec();
    header.extend(["controller CPU", "reconciles"]);
    out.push_str(&steps.section(&header, counts));
    Ok(out)
}

/// One step: `count` queued Evaluations; its row goes to `steps` before the cleanup.
async fn step(
    s: &mut Session,
    count: usize,
    within: Duration,
    steps: &mut Steps,
) -> Result<(), Error> {
    let ns = s.namespace(&format!("b3-{count}")).await?;
    apply(
        &api::api(&s.client, &ns, &objects::quotas()),
        &objects::quota(1, true),
    )
    .await?;
    let controller = s.controller(std::slice::from_ref(&ns), 100).await?;
    const HAS_STATUS: &[api::Mark] = &[objects::has_status];
    let watch = Watch::start(&s.client, &ns, &objects::evaluations(), None, HAS_STATUS).await?;
    s.settle().await?;
    let idle = controller.daemon().rss_kib()?;
    let cpu_before = controller.daemon().cpu()?;
    let reconciles_before = controller.reconciles().await;
    let evaluations = api::api(&s.client, &ns, &objects::evaluations());
    say(format!("B3: creating {count} queued Evaluations"));
    let burst = burst(
        s,
        controller.daemon(),
        watch,
        &evaluations,
        count,
        within,
        |i| objects::evaluation(&format!("ev-{i:05}"), Shape::Default, "10m"),
    )
    .await?;
    let cpu = controller.daemon().cpu()?.saturating_sub(cpu_before);
    // A counter that has not counted yet is not exported yet.
    let reconciles = match controller.reconciles().await {
        Some(after) => format!(
            "{:.0}/s",
            (after - reconciles_before.unwrap_or(0.0)) / burst.elapsed.as_secs_f64()
        ),
        None => "n/a".into(),
    };
    drop(controller);
    let mut row = vec![count.to_string(), mib(idle)];
    row.extend(burst.cells(cpu));
    row.push(reconciles);
    steps.measured(row);
    let cleanup = s.drop_namespaces(&[ns]).await;
    steps.cleaned(&format!("deleting the {count} step's objects"), cleanup);
    Ok(())
}

/// The columns of a row that starts with the count and the idle RSS and goes on with
/// [`Burst::cells`] but for the CPU, whose column names the process.
pub const COLUMNS: [&str; 6] = [
    "queued",
    "idle RSS",
    "creates took",
    "all with a status",
    "/ creates (goal <= 1.2)",
    "RSS",
];

/// What a burst of queued objects showed: the creates, when the watch saw the last one
/// marked, the process's RSS once the API server was quiet.
pub struct Burst {
    count: usize,
    creates: Duration,
    /// From the first create to the last mark, if every object was marked in time.
    all: Option<Duration>,
    /// How many were marked, and how long the wait took, otherwise.
    marked: usize,
    waited: Duration,
    rss_kib: u64,
    /// From the first create until the RSS was read.
    pub elapsed: Duration,
}

impl Burst {
    /// The table cells "creates took", "all with a status", "/ creates", "RSS", "CPU".
    pub fn cells(&self, cpu: Duration) -> Vec<String> {
        // The creates are the API server's limit: a status cannot come before its object.
        let (status, vs_creates) = match self.all {
            Some(t) => (secs(t), ratio(t.as_secs_f64(), self.creates.as_secs_f64())),
            None => (
                format!(
                    "NOT all: {} of {} after {}",
                    self.marked,
                    self.count,
                    secs(self.waited)
                ),
                "-".into(),
            ),
        };
        vec![
            secs(self.creates),
            status,
            vs_creates,
            mib(self.rss_kib),
            secs(cpu),
        ]
    }
}

/// Creates `make(0..count)` in `objects` at the session's concurrency, waits (at most
/// `within` from the first create) until `watch` has seen `count` objects with its first mark,
/// then lets the API server go quiet and reads `daemon`'s RSS.
pub async fn burst(
    s: &Session,
    daemon: &Daemon,
    watch: Watch,
    objects: &Api<DynamicObject>,
    count: usize,
    within: Duration,
    make: impl Fn(usize) -> Value,
) -> Result<Burst, Error> {
    let t0 = Instant::now();
    let creates = create_many(objects, count, s.concurrency, make).await?;
    let all = watch
        .wait(within.saturating_sub(t0.elapsed()), |seen| {
            seen.marked(0) >= count
        })
        .await;
    let waited = t0.elapsed();
    let (marked, last) = {
        let seen = watch.seen();
        let last = seen
            .objects
            .values()
            .filter_map(|o| o.marks[0])
            .max()
            .map(|t| t.saturating_duration_since(t0));
        (seen.marked(0), last)
    };
    drop(watch);
    api::settle(&s.client, Duration::from_secs(3), SETTLE_AFTER_BURST).await?;
    Ok(Burst {
        count,
        creates,
        all: last.filter(|_| all),
        marked,
        waited,
        rss_kib: daemon.rss_kib()?,
        elapsed: t0.elapsed(),
    })
}
