//! B1 fan-out: N objects created at concurrency c; the figure is the time from just before the
//! first create until a label-selected pod watch has seen the Nth pod ADDED. The pods never
//! schedule, so the node's cores do not decide it: Evaluations ask for more CPU than the node
//! has, the Jobs' pods (the controller's own pod spec) get a node selector no node matches.
//! The Job controller runs at the controller-manager's defaults (client QPS 20, burst 30) and
//! restarted with `--kube-api-qps=200 --kube-api-burst=400`, restored afterwards. The API
//! server's own limit is the last subject: the same N pod specs created directly by the
//! benchmark at the same concurrency, so each figure is also a ratio to what the cluster allows.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::api::{Watch, apply, create_many};
use super::objects::{self, MANAGED_LABEL, POD_LABEL, Shape};
use super::{Error, Session, api, say};
use crate::stats::{percentile, ratio, secs, table};

/// Client rate of the restarted controller-manager.
const QPS: u32 = 200;
const BURST: u32 = 400;

/// How one subject did.
struct Fanout {
    /// Pods seen when the wait ended.
    seen: usize,
    /// Time to the Nth pod, if it came within the deadline.
    nth: Option<Duration>,
    /// Median pod arrival.
    p50: Duration,
    /// How long the N creates took.
    creates: Duration,
}

pub async fn run(s: &mut Session, n: usize) -> Result<String, Error> {
    // The slowest subject (the Job controller at 20 QPS) makes ~6 pods/s here.
    let within = Duration::from_secs((n as u64 / 2).max(300));

    let ns = s.namespace("b1-evaluations").await?;
    apply(
        &api::api(&s.client, &ns, &objects::quotas()),
        &objects::quota(n, false),
    )
    .await?;
    let controller = s.controller(std::slice::from_ref(&ns), n).await?;
    let watch = Watch::start(&s.client, &ns, &objects::pods(), Some(MANAGED_LABEL), &[]).await?;
    s.settle().await?;
    let cpu_before = controller.daemon().cpu()?;
    let evaluations = api::api(&s.client, &ns, &objects::evaluations());
    let shape = Shape::Unschedulable {
        cpus: s.node_cpus + 1,
    };
    say(format!("B1: creating {n} Evaluations"));
    let t0 = Instant::now();
    let creates = create_many(&evaluations, n, s.concurrency, |i| {
        objects::evaluation(&format!("ev-{i:05}"), shape, "30m")
    })
    .await?;
    let crucible = fanout(&watch, t0, n, within, creates).await;
    let cpu = controller.daemon().cpu()?.saturating_sub(cpu_before);
    let template = watch
        .seen()
        .first
        .as_ref()
        .and_then(objects::reusable_spec)
        .ok_or_else(|| Error::Setup("B1: no sandbox pod to copy the Jobs' pod spec from".into()))?;
    drop(watch);
    drop(controller);
    s.drop_namespaces(&[ns]).await?;

    let defaults = jobs(s, "b1-jobs-defaults", &template, n, within).await?;
    let kcm = s
        .kcm
        .as_mut()
        .ok_or_else(|| Error::Setup("B1 needs kube-controller-manager".into()))?;
    kcm.restart_with(QPS, BURST).await?;
    let fast = jobs(s, "b1-jobs-qps", &template, n, within).await;
    // Restored here already (cleanup would too): the next benchmarks run against the original.
    let restored = match s.kcm.as_mut() {
        Some(kcm) => kcm.restore().await,
        None => Ok(()),
    };
    let fast = fast?;
    restored?;
    let direct = pods(s, &template, n, within).await?;

    let mut out = format!(
        "B1 fan-out: {n} objects created at concurrency {}, pods unschedulable; time from the \
         first create until a pod watch saw the {n}th pod ADDED\n",
        s.concurrency
    );
    let subjects = [
        (format!("Crucible, {n} Evaluations"), &crucible),
        (
            format!("Job controller, {n} Jobs, defaults (QPS 20, burst 30)"),
            &defaults,
        ),
        (
            format!("Job controller, {n} Jobs, --kube-api-qps={QPS} --kube-api-burst={BURST}"),
            &fast,
        ),
        (
            format!("{n} bare pods created directly (the API server's limit)"),
            &direct,
        ),
    ];
    let rows: Vec<Vec<String>> = subjects
        .iter()
        .map(|(name, f)| {
            let (nth, rate) = match f.nth {
                Some(t) => (secs(t), format!("{:.1}", n as f64 / t.as_secs_f64())),
                None => (
                    format!("not reached ({} of {n} in {})", f.seen, secs(within)),
                    "-".into(),
                ),
            };
            vec![name.clone(), nth, secs(f.p50), rate, secs(f.creates)]
        })
        .collect();
    out.push_str(&table(
        &["subject", "Nth pod", "median pod", "pods/s", "creates took"],
        &rows,
    ));
    let vs = |job: &Fanout| match (crucible.nth, job.nth) {
        (Some(c), Some(j)) => ratio(c.as_secs_f64(), j.as_secs_f64()),
        _ => "n/a".into(),
    };
    let _ = writeln!(
        out,
        "Crucible / Job controller (time to the Nth pod; below 1 = Crucible faster): {} vs \
         defaults, {} vs QPS {QPS}",
        vs(&defaults),
        vs(&fast)
    );
    let _ = writeln!(
        out,
        "Crucible / direct creates (goal: at most 1.5): {}",
        vs(&direct)
    );
    let _ = writeln!(out, "Crucible controller CPU during its run: {}", secs(cpu));
    Ok(out)
}

/// N Jobs of `template` (made unschedulable) in a fresh namespace, timed like the Evaluations.
async fn jobs(
    s: &mut Session,
    suffix: &str,
    template: &Value,
    n: usize,
    within: Duration,
) -> Result<Fanout, Error> {
    let ns = s.namespace(suffix).await?;
    let label = format!("{}-{suffix}", s.run);
    let spec = objects::unschedulable(template.clone());
    let jobs = api::api(&s.client, &ns, &objects::jobs());
    // The Job controller may have just been restarted: one Job's pod first shows it is serving.
    let probe_label = format!("{label}-probe");
    let probe_selector = format!("{POD_LABEL}={probe_label}");
    let probe = Watch::start(&s.client, &ns, &objects::pods(), Some(&probe_selector), &[]).await?;
    apply(&jobs, &objects::job("probe", &spec, &probe_label)).await?;
    if !probe
        .wait(Duration::from_secs(180), |seen| !seen.objects.is_empty())
        .await
    {
        return Err(Error::Timeout {
            what: "the Job controller to create a probe Job's pod".into(),
            secs: 180,
        });
    }
    drop(probe);
    let selector = format!("{POD_LABEL}={label}");
    let watch = Watch::start(&s.client, &ns, &objects::pods(), Some(&selector), &[]).await?;
    s.settle().await?;
    say(format!("B1: creating {n} Jobs ({suffix})"));
    let t0 = Instant::now();
    let creates = create_many(&jobs, n, s.concurrency, |i| {
        objects::job(&format!("job-{i:05}"), &spec, &label)
    })
    .await?;
    let result = fanout(&watch, t0, n, within, creates).await;
    drop(watch);
    s.drop_namespaces(&[ns]).await?;
    Ok(result)
}

/// N bare pods of `template` (made unschedulable), created by the benchmark itself at the same
/// concurrency in a fresh namespace, timed like the Evaluations: no controller in between.
async fn pods(
    s: &mut Session,
    template: &Value,
    n: usize,
    within: Duration,
) -> Result<Fanout, Error> {
    let ns = s.namespace("b1-pods").await?;
    let label = format!("{}-b1-pods", s.run);
    let spec = objects::unschedulable(template.clone());
    let pods = api::api(&s.client, &ns, &objects::pods());
    let selector = format!("{POD_LABEL}={label}");
    let watch = Watch::start(&s.client, &ns, &objects::pods(), Some(&selector), &[]).await?;
    s.settle().await?;
    say(format!("B1: creating {n} bare pods"));
    let t0 = Instant::now();
    let creates = create_many(&pods, n, s.concurrency, |i| {
        objects::pod(&format!("pod-{i:05}"), &spec, &label)
    })
    .await?;
    let result = fanout(&watch, t0, n, within, creates).await;
    drop(watch);
    s.drop_namespaces(&[ns]).await?;
    Ok(result)
}

/// Waits (from `t0`, at most `within`) until the watch has seen `n` pods.
async fn fanout(
    watch: &Watch,
    t0: Instant,
    n: usize,
    within: Duration,
    creates: Duration,
) -> Fanout {
    let reached = watch
        .wait(within.saturating_sub(t0.elapsed()), |seen| {
            seen.objects.len() >= n
        })
        .await;
    let arrivals: Vec<Duration> = watch
        .seen()
        .added_sorted()
        .iter()
        .map(|t| t.saturating_duration_since(t0))
        .collect();
    let nth = reached.then(|| arrivals.get(n - 1).copied()).flatten();
    say(format!(
        "B1: {} of {n} pods seen{}",
        arrivals.len(),
        nth.map(|t| format!(", the last after {}", secs(t)))
            .unwrap_or_default()
    ));
    Fanout {
        seen: arrivals.len(),
        nth,
        p50: percentile(&arrivals, 50),
        creates,
    }
}
