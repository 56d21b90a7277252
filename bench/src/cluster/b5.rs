//! B5 slot refill: K short Evaluations queued behind a namespace quota of `maxRunning: 1`. For
//! each run but the first: the time from the watch seeing the previous run end to the watch
//! seeing this run's pod ADDED, measured from two ends: the previous pod terminal (Succeeded
//! or Failed, the earliest sign) and the previous Evaluation finished (its status says so).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::api::{Mark, Watch, apply, create_many};
use super::objects::{self, MANAGED_LABEL, Shape};
use super::{Error, Session, api, say};
use crate::stats::{ms, percentile};

pub async fn run(s: &mut Session, k: usize) -> Result<String, Error> {
    let ns = s.namespace("b5-refill").await?;
    apply(
        &api::api(&s.client, &ns, &objects::quotas()),
        &objects::quota(1, false),
    )
    .await?;
    let controller = s.controller(std::slice::from_ref(&ns), 100).await?;
    const TERMINAL: &[Mark] = &[objects::pod_terminal];
    const FINISHED: &[Mark] = &[objects::finished];
    let pods = Watch::start(
        &s.client,
        &ns,
        &objects::pods(),
        Some(MANAGED_LABEL),
        TERMINAL,
    )
    .await?;
    let evaluations = Watch::start(&s.client, &ns, &objects::evaluations(), None, FINISHED).await?;
    s.settle().await?;
    say(format!("B5: queueing {k} Evaluations behind one slot"));
    // One at a time, so that the queue's order is the order of creation.
    create_many(
        &api::api(&s.client, &ns, &objects::evaluations()),
        k,
        1,
        |i| objects::evaluation(&format!("ev-{i:03}"), Shape::Default, "5m"),
    )
    .await?;
    let within = Duration::from_secs(60 * k as u64);
    if !evaluations.wait(within, |seen| seen.marked(0) >= k).await {
        return Err(Error::Timeout {
            what: format!("{k} queued Evaluations to finish"),
            secs: within.as_secs(),
        });
    }
    let (from_pod, from_evaluation) = {
        let (pods, evaluations) = (pods.seen(), evaluations.seen());
        let mut runs: Vec<_> = pods.objects.values().collect();
        runs.sort_by_key(|p| p.added);
        let by_pod: Vec<(Instant, Option<Instant>)> =
            runs.iter().map(|p| (p.added, p.marks[0])).collect();
        let by_evaluation: Vec<(Instant, Option<Instant>)> = runs
            .iter()
            .map(|p| {
                let end = p.owner.as_deref().and_then(|o| evaluations.mark(o, 0));
                (p.added, end)
            })
            .collect();
        (refill_gaps(&by_pod), refill_gaps(&by_evaluation))
    };
    drop((pods, evaluations, controller));
    s.drop_namespaces(&[ns]).await?;
    let mut out = format!(
        "B5 slot refill: {k} Evaluations behind maxRunning 1; a run ends → the next run's pod \
         ADDED, both seen by watches\n"
    );
    for (end, gaps) in [
        ("previous pod terminal", &from_pod),
        ("previous Evaluation finished", &from_evaluation),
    ] {
        let _ = writeln!(
            out,
            "from the {end}: p50 {}, p99 {}, max {} (n={}{})",
            ms(percentile(&gaps.samples, 50)),
            ms(percentile(&gaps.samples, 99)),
            ms(gaps.samples.iter().max().copied().unwrap_or_default()),
            gaps.samples.len(),
            if gaps.overlaps > 0 {
                format!(
                    ", {} pod(s) ADDED before the previous run ended",
                    gaps.overlaps
                )
            } else {
                String::new()
            }
        );
    }
    Ok(out)
}

/// The refill times of consecutive runs.
#[derive(Debug, PartialEq)]
struct Gaps {
    samples: Vec<Duration>,
    /// Runs whose pod came before the previous run ended (more than one slot in use).
    overlaps: usize,
}

/// From (pod ADDED, previous-run end) pairs in ADDED order: for each run after the first, its
/// pod's arrival minus the previous run's end. Runs whose previous end was never seen count
/// in neither.
fn refill_gaps(runs: &[(Instant, Option<Instant>)]) -> Gaps {
    let mut gaps = Gaps {
        samples: Vec::new(),
        overlaps: 0,
    };
    for pair in runs.windows(2) {
        let (Some(end), added) = (pair[0].1, pair[1].0) else {
            continue;
        };
        match added.checked_duration_since(end) {
            Some(gap) => gaps.samples.push(gap),
            None => gaps.overlaps += 1,
        }
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_pair_each_pod_with_the_previous_end() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        let runs = [
            (at(0), Some(at(1000))),
            (at(1040), Some(at(2000))),
            (at(1900), None), // came before the previous run ended
            (at(4000), Some(at(5000))),
        ];
        assert_eq!(
            refill_gaps(&runs),
            Gaps {
                samples: vec![Duration::from_millis(40)],
                overlaps: 1
            }
        );
        assert!(refill_gaps(&runs[..1]).samples.is_empty());
    }
}
