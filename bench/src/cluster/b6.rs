//! B6 latency: one object at a time, apply → done as seen by a watch: a trivial Evaluation
//! until its status carries a result, and a bare pod of exactly the pod spec the controller
//! created (copied from the warm-up's pod) until it is Succeeded. Interleaved round by round
//! (after one warm-up round) so that drift hits both alike. The controller's share is split
//! into apply → its pod ADDED and its pod terminal → result on status.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::api::{Mark, Watch, apply};
use super::objects::{self, MANAGED_LABEL, POD_LABEL, Shape};
use super::{Error, Session, api, say};
use crate::stats::{ms, percentile, ratio, table};

/// Longest wait for one object.
const WITHIN: Duration = Duration::from_secs(120);

/// The times of one round.
#[derive(Default)]
struct Samples {
    evaluation: Vec<Duration>,
    pod: Vec<Duration>,
    before_pod: Vec<Duration>,
    after_pod: Vec<Duration>,
}

pub async fn run(s: &mut Session, rounds: usize) -> Result<String, Error> {
    let ns = s.namespace("b6-latency").await?;
    let controller = s.controller(std::slice::from_ref(&ns), 100).await?;
    const RESULT: &[Mark] = &[objects::has_result];
    const TERMINAL: &[Mark] = &[objects::pod_terminal];
    let evaluations = Watch::start(&s.client, &ns, &objects::evaluations(), None, RESULT).await?;
    let sandboxes = Watch::start(
        &s.client,
        &ns,
        &objects::pods(),
        Some(MANAGED_LABEL),
        TERMINAL,
    )
    .await?;
    let label = format!("{}-b6-bare", s.run);
    let selector = format!("{POD_LABEL}={label}");
    let bare = Watch::start(&s.client, &ns, &objects::pods(), Some(&selector), TERMINAL).await?;
    let evaluation_api = api::api(&s.client, &ns, &objects::evaluations());
    let pod_api = api::api(&s.client, &ns, &objects::pods());
    s.settle().await?;
    say(format!("B6: {rounds} rounds after a warm-up"));
    let mut samples = Samples::default();
    let mut spec: Option<Value> = None;
    for round in 0..=rounds {
        let name = format!("ev-{round:02}");
        let t0 = Instant::now();
        apply(
            &evaluation_api,
            &objects::evaluation(&name, Shape::Default, "2m"),
        )
        .await?;
        let result = wait_mark(&evaluations, &name, "a result on its status").await?;
        let (pod_added, pod_end) = {
            let seen = sandboxes.seen();
            let pod = seen
                .objects
                .values()
                .find(|p| p.owner.as_deref() == Some(name.as_str()));
            (pod.map(|p| p.added), pod.and_then(|p| p.marks[0]))
        };
        if spec.is_none() {
            spec = sandboxes
                .seen()
                .first
                .as_ref()
                .and_then(objects::reusable_spec);
        }
        let spec = spec
            .as_ref()
            .ok_or_else(|| Error::Setup(format!("B6: {name} ran no pod to copy")))?;

        let pod_name = format!("pod-{round:02}");
        let t1 = Instant::now();
        apply(&pod_api, &objects::pod(&pod_name, spec, &label)).await?;
        let pod_done = wait_mark(&bare, &pod_name, "Succeeded or Failed").await?;
        let phase = pod_api
            .get(&pod_name)
            .await
            .map_err(super::kube_err(format!("reading pod {pod_name}")))?
            .data["status"]["phase"]
            .clone();
        if phase != "Succeeded" {
            return Err(Error::Setup(format!(
                "B6: the bare pod {pod_name} ended {phase}"
            )));
        }
        if round == 0 {
            continue;
        }
        samples
            .evaluation
            .push(result.saturating_duration_since(t0));
        samples.pod.push(pod_done.saturating_duration_since(t1));
        if let Some(added) = pod_added {
            samples.before_pod.push(added.saturating_duration_since(t0));
        }
        if let Some(end) = pod_end {
            samples
                .after_pod
                .push(result.saturating_duration_since(end));
        }
    }
    drop((evaluations, sandboxes, bare, controller));
    s.drop_namespaces(&[ns]).await?;
    Ok(report(rounds, &samples))
}

async fn wait_mark(watch: &Watch, name: &str, what: &str) -> Result<Instant, Error> {
    if !watch
        .wait(WITHIN, |seen| seen.mark(name, 0).is_some())
        .await
    {
        return Err(Error::Timeout {
            what: format!("{name} to have {what}"),
            secs: WITHIN.as_secs(),
        });
    }
    watch
        .seen()
        .mark(name, 0)
        .ok_or_else(|| Error::Setup(format!("{name}: mark vanished")))
}

fn report(rounds: usize, s: &Samples) -> String {
    let row = |name: &str, v: &[Duration]| {
        vec![
            name.to_string(),
            ms(percentile(v, 50)),
            ms(percentile(v, 90)),
            ms(v.iter().min().copied().unwrap_or_default()),
        ]
    };
    let mut out = format!(
        "B6 latency: n={rounds} each (after 1 warm-up), one at a time, interleaved; apply → \
         seen by a watch\n"
    );
    out.push_str(&table(
        &["subject", "p50", "p90", "min"],
        &[
            row(
                "trivial Evaluation: apply → result on status",
                &s.evaluation,
            ),
            row("bare pod of its spec: apply → Succeeded", &s.pod),
            row("  controller share: apply → its pod ADDED", &s.before_pod),
            row("  controller share: pod terminal → result", &s.after_pod),
        ],
    ));
    let (e, p) = (percentile(&s.evaluation, 50), percentile(&s.pod, 50));
    let _ = writeln!(
        out,
        "Evaluation / bare pod (p50): {}; difference {}",
        ratio(e.as_secs_f64(), p.as_secs_f64()),
        ms(e.saturating_sub(p))
    );
    out
}
