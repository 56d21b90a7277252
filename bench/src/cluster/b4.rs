//! B4 writes: M trivial Evaluations run to completion, then M Jobs of the controller's own pod
//! spec through the Job controller; for each, the deltas of the API server's
//! `apiserver_request_total` (write verbs, any code) from a quiet API server before the
//! creates until it is quiet again after the last one finished, minus the benchmark's own
//! creates, per object. The counters are cluster-wide: the scheduler's bindings, the kubelet's
//! pod status and node heartbeats are in them too (the `writer` column says whose a row is);
//! Events are split by the kind of object they are about.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};

use super::api::{Mark, Watch, apply, create_many, writes};
use super::metrics::{Writes, writer};
use super::objects::{self, MANAGED_LABEL, Shape};
use super::{Error, Session, api, kube_err, say};
use crate::stats::table;

/// What one subject wrote.
struct Run {
    writes: Writes,
    /// Event occurrences (each a create or a count bump) by the kind they are about.
    events: BTreeMap<String, f64>,
    /// How the runs ended, e.g. `20 Succeeded`.
    outcome: String,
}

pub async fn run(s: &mut Session, m: usize) -> Result<String, Error> {
    let within = Duration::from_secs(60 + 30 * m as u64);

    let ns = s.namespace("b4-evaluations").await?;
    apply(
        &api::api(&s.client, &ns, &objects::quotas()),
        &objects::quota(m, false),
    )
    .await?;
    let controller = s.controller(std::slice::from_ref(&ns), m).await?;
    let pods = Watch::start(&s.client, &ns, &objects::pods(), Some(MANAGED_LABEL), &[]).await?;
    const FINISHED: &[Mark] = &[objects::finished];
    let done = Watch::start(&s.client, &ns, &objects::evaluations(), None, FINISHED).await?;
    let evaluations = api::api(&s.client, &ns, &objects::evaluations());
    say(format!("B4: running {m} Evaluations"));
    let crucible = measure(
        s,
        &evaluations,
        evaluation_phase,
        &done,
        "evaluations.crucible.dev",
        m,
        within,
        || {
            create_many(&evaluations, m, s.concurrency, |i| {
                objects::evaluation(&format!("ev-{i:03}"), Shape::Default, "5m")
            })
        },
    )
    .await?;
    let template = pods
        .seen()
        .first
        .as_ref()
        .and_then(objects::reusable_spec)
        .ok_or_else(|| Error::Setup("B4: no sandbox pod to copy the Jobs' pod spec from".into()))?;
    drop((pods, done, controller));
    s.drop_namespaces(&[ns]).await?;

    let ns = s.namespace("b4-jobs").await?;
    const DONE: &[Mark] = &[objects::job_done];
    let done = Watch::start(&s.client, &ns, &objects::jobs(), None, DONE).await?;
    let jobs = api::api(&s.client, &ns, &objects::jobs());
    let label = format!("{}-b4-jobs", s.run);
    say(format!("B4: running {m} Jobs"));
    let job_controller = measure(
        s,
        &jobs,
        job_outcome,
        &done,
        "jobs.batch",
        m,
        within,
        || {
            create_many(&jobs, m, s.concurrency, |i| {
                objects::job(&format!("job-{i:03}"), &template, &label)
            })
        },
    )
    .await?;
    drop(done);
    s.drop_namespaces(&[ns]).await?;
    Ok(report(m, &crucible, &job_controller))
}

/// Runs `create` between two readings of the write counters taken on a quiet API server,
/// after waiting until the watch's mark 0 (finished) holds for all `m`.
#[allow(clippy::too_many_arguments)] // one call per subject; a struct would only rename them
async fn measure<F, Fut>(
    s: &Session,
    objects: &Api<DynamicObject>,
    outcome: fn(&DynamicObject) -> &str,
    done: &Watch,
    created: &str,
    m: usize,
    within: Duration,
    create: F,
) -> Result<Run, Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Duration, Error>>,
{
    s.settle().await?;
    let before = writes(&s.client).await?;
    create().await?;
    if !done.wait(within, |seen| seen.marked(0) >= m).await {
        return Err(Error::Timeout {
            what: format!("{m} {created} to finish"),
            secs: within.as_secs(),
        });
    }
    s.settle().await?;
    let mut delta = writes(&s.client).await?.since(&before);
    delta.subtract(created, "POST", m as f64);
    Ok(Run {
        writes: delta,
        events: events_by_kind(&s.client, objects.namespace().unwrap_or_default()).await?,
        outcome: outcomes(objects, outcome).await?,
    })
}

/// Occurrences of the namespace's Events by the kind of their object.
async fn events_by_kind(client: &Client, ns: &str) -> Result<BTreeMap<String, f64>, Error> {
    let list = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(kube_err(format!("listing the Events of {ns}")))?;
    let mut by_kind = BTreeMap::new();
    for event in &list.items {
        let kind = event.involved_object.kind.clone().unwrap_or_default();
        *by_kind.entry(kind).or_insert(0.0) += f64::from(event.count.unwrap_or(1).max(1));
    }
    Ok(by_kind)
}

/// How the objects ended, e.g. `20 Succeeded`, by `outcome` of each.
async fn outcomes(
    objects: &Api<DynamicObject>,
    outcome: fn(&DynamicObject) -> &str,
) -> Result<String, Error> {
    let list = objects
        .list(&ListParams::default())
        .await
        .map_err(kube_err("listing the finished objects"))?;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for object in &list.items {
        *counts.entry(outcome(object)).or_insert(0) += 1;
    }
    Ok(counts
        .iter()
        .map(|(outcome, n)| format!("{n} {outcome}"))
        .collect::<Vec<_>>()
        .join(", "))
}

fn evaluation_phase(ev: &DynamicObject) -> &str {
    ev.data["status"]["phase"].as_str().unwrap_or("no phase")
}

fn job_outcome(job: &DynamicObject) -> &str {
    if job.data["status"]["succeeded"].as_i64().unwrap_or(0) > 0 {
        "Succeeded"
    } else {
        "Failed"
    }
}

fn report(m: usize, crucible: &Run, jobs: &Run) -> String {
    let per = |w: &Writes, key: &(String, String)| w.0.get(key).copied().unwrap_or(0.0) / m as f64;
    let keys: BTreeSet<&(String, String)> = crucible
        .writes
        .0
        .keys()
        .chain(jobs.writes.0.keys())
        .collect();
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|key| {
            vec![
                key.0.clone(),
                key.1.clone(),
                writer(&key.0).to_string(),
                format!("{:.2}", per(&crucible.writes, key)),
                format!("{:.2}", per(&jobs.writes, key)),
            ]
        })
        .collect();
    let mut out = format!(
        "B4 writes: {m} trivial Evaluations ({}) vs {m} Jobs of the same pod spec ({}), API \
         writes per object from apiserver_request_total (all clients, the benchmark's own \
         creates taken out)\n",
        crucible.outcome, jobs.outcome
    );
    out.push_str(&table(
        &["resource", "verb", "writer", "per Evaluation", "per Job"],
        &rows,
    ));
    let controller_share = |run: &Run, kind: &str| {
        let rows: f64 = run
            .writes
            .0
            .iter()
            .filter(|((r, _), _)| writer(r) == "controller")
            .map(|(_, v)| v)
            .sum();
        (rows + run.events.get(kind).copied().unwrap_or(0.0)) / m as f64
    };
    let _ = writeln!(
        out,
        "all writes per object: {:.2} per Evaluation, {:.2} per Job",
        crucible.writes.total() / m as f64,
        jobs.writes.total() / m as f64
    );
    let events = |run: &Run| {
        run.events
            .iter()
            .map(|(kind, n)| format!("{:.2} on {kind}", n / m as f64))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "Event occurrences per object: Evaluations: {}; Jobs: {}",
        events(crucible),
        events(jobs)
    );
    let _ = writeln!(
        out,
        "controller writes per object (rows written by the controller + Events on its own \
         kind): {:.2} per Evaluation (Crucible), {:.2} per Job (Job controller)",
        controller_share(crucible, "Evaluation"),
        controller_share(jobs, "Job")
    );
    let _ = writeln!(
        out,
        "(events rows hold kubelet and scheduler Events too; node heartbeat rows are \
         background over the measured window)"
    );
    out
}
