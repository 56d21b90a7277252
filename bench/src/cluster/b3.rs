//! B3 queue memory: the controller's RSS (VmRSS) idle and with queued Evaluations (quota
//! `paused: true`, so none is admitted), and the time from the first create until every queued
//! one has a status (a phase or a condition), seen by a watch. Each step has a fresh namespace
//! and a fresh controller: idle RSS, the Evaluations created at concurrency c, RSS once the API
//! server is quiet; the controller is stopped before the namespace is deleted (deleting a
//! namespace of queued runs under a running controller was ~100× slower: the quota goes first,
//! so the controller starts admitting into the terminating namespace).

use std::time::{Duration, Instant};

use super::api::{Watch, apply, create_many};
use super::objects::{self, Shape};
use super::{Error, Session, api, say};
use crate::stats::{mib, ratio, secs, table};

/// How long the controller gets to settle before its RSS is read after a burst.
const SETTLE_AFTER_BURST: Duration = Duration::from_secs(30);

pub async fn run(s: &mut Session, counts: &[u32], within_secs: u64) -> Result<String, Error> {
    let within = Duration::from_secs(within_secs);
    let mut rows = Vec::new();
    for count in counts.iter().map(|c| *c as usize) {
        let row = step(s, count, within).await?;
        // Logged at once: the next steps take minutes and may yet fail.
        say(format!("B3: {}", row.join(" | ")));
        rows.push(row);
    }
    let mut out = format!(
        "B3 queue memory: quota paused, a fresh controller and namespace per step, Evaluations \
         created at concurrency {}; \"all with a status\" is from the first create until the \
         watch saw the last one get a phase or condition (at most {within_secs} s); RSS after \
         the API server was quiet for 3 s (at most {} s); CPU and reconciles over the step\n",
        s.concurrency,
        SETTLE_AFTER_BURST.as_secs()
    );
    out.push_str(&table(
        &[
            "queued",
            "idle RSS",
            "creates took",
            "all with a status",
            "/ creates (goal <= 1.2)",
            "RSS",
            "controller CPU",
            "reconciles",
        ],
        &rows,
    ));
    Ok(out)
}

/// One step: `count` queued Evaluations; the table row.
async fn step(s: &mut Session, count: usize, within: Duration) -> Result<Vec<String>, Error> {
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
    let idle = controller.rss_kib()?;
    let (cpu_before, reconciles_before) = (controller.cpu()?, controller.reconciles().await);
    let evaluations = api::api(&s.client, &ns, &objects::evaluations());
    say(format!("B3: creating {count} queued Evaluations"));
    let t0 = Instant::now();
    let creates = create_many(&evaluations, count, s.concurrency, |i| {
        objects::evaluation(&format!("ev-{i:05}"), Shape::Default, "10m")
    })
    .await?;
    let all = watch
        .wait(within.saturating_sub(t0.elapsed()), |seen| {
            seen.marked(0) >= count
        })
        .await;
    let waited = t0.elapsed();
    let (with_status, last) = {
        let seen = watch.seen();
        let last = seen
            .objects
            .values()
            .filter_map(|o| o.marks[0])
            .max()
            .map(|t| t.saturating_duration_since(t0));
        (seen.marked(0), last)
    };
    // The creates are the API server's limit: a status cannot come before its object.
    let (status, vs_creates) = match (all, last) {
        (true, Some(t)) => (secs(t), ratio(t.as_secs_f64(), creates.as_secs_f64())),
        _ => (
            format!("NOT all: {with_status} of {count} after {}", secs(waited)),
            "-".into(),
        ),
    };
    drop(watch);
    api::settle(&s.client, Duration::from_secs(3), SETTLE_AFTER_BURST).await?;
    let rss = controller.rss_kib()?;
    let elapsed = t0.elapsed();
    let cpu = controller.cpu()?.saturating_sub(cpu_before);
    // A counter that has not counted yet is not exported yet.
    let reconciles = match controller.reconciles().await {
        Some(after) => format!(
            "{:.0}/s",
            (after - reconciles_before.unwrap_or(0.0)) / elapsed.as_secs_f64()
        ),
        None => "n/a".into(),
    };
    drop(controller);
    s.drop_namespaces(&[ns]).await?;
    Ok(vec![
        count.to_string(),
        mib(idle),
        secs(creates),
        status,
        vs_creates,
        mib(rss),
        secs(cpu),
        reconciles,
    ])
}
