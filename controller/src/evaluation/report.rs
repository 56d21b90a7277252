//! Writes the planned status (server-side apply on `/status`, bounded in time) and publishes the
//! plan's Events.

use std::time::Duration;

use kube::api::Api;
use kube::{Resource, ResourceExt};

use crate::crd::Evaluation;
use crate::crd::evaluation::{EvaluationStatus, Phase};
use crate::error::{Error, Result};
use crate::evaluation::Context;
use crate::events;
use crate::lifecycle::Plan;
use crate::lifecycle::usage::BUDGET_EXCEEDED;
use crate::ssa;

/// Longest a status write may take before the reconcile gives up and retries.
const STATUS_PATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes `plan.status` (when it changed) and the plan's Events.
///
/// # Errors
/// The status write failed or timed out. Event failures are logged, never fatal: an Event is
/// a notice, the status is the record.
pub async fn report(ev: &Evaluation, plan: &Plan, ctx: &Context) -> Result<()> {
    if ev.status.as_ref() != Some(&plan.status) {
        let namespace = ev
            .namespace()
            .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
        let api: Api<Evaluation> = ssa::scoped(&ctx.client, Some(&namespace));
        let name = ev.name_any();
        let write = ssa::apply_status(&api, ssa::STATUS_MANAGER, &name, &plan.status);
        tokio::time::timeout(STATUS_PATCH_TIMEOUT, write)
            .await
            .map_err(|_| Error::PatchStatusTimeout)?
            .map_err(Error::PatchStatus)?;
        ctx.caches.statuses.saw(&ev.uid().unwrap_or_default());
    }
    record_metrics(ev, plan, ctx);
    events::publish(&ctx.recorder, &ev.object_ref(&()), &plan.notes).await;
    Ok(())
}

/// Updates the phase gauge and, when this reconcile finished the run, its duration, score and
/// whether its budget stopped it.
fn record_metrics(ev: &Evaluation, plan: &Plan, ctx: &Context) {
    let (namespace, uid) = (
        ev.namespace().unwrap_or_default(),
        ev.uid().unwrap_or_default(),
    );
    ctx.metrics
        .set_phase(&uid, &namespace, plan.status.phase.map(|p| p.as_str()));
    if ev.spec.models.as_ref().is_some_and(|m| !m.is_empty()) {
        ctx.metrics.models_used_in(&namespace);
    }
    let Some(phase) = newly_finished(ev.status.as_ref(), &plan.status) else {
        return;
    };
    let seconds = match (&plan.status.start_time, &plan.status.completion_time) {
        (Some(start), Some(end)) => end.0.duration_since(start.0).as_secs_f64().max(0.0),
        _ => 0.0,
    };
    let score = plan.status.result.as_ref().map(|r| r.score);
    let ci95 = plan
        .status
        .samples
        .as_ref()
        .and_then(|s| s.ci95)
        .map(|i| (i.low, i.high));
    ctx.metrics.finished(
        &namespace,
        &ev.name_any(),
        phase.as_str(),
        seconds,
        score,
        ci95,
    );
    if plan.status.reason.as_deref() == Some(BUDGET_EXCEEDED) {
        ctx.metrics.budget_exceeded(&namespace);
    }
}

/// The final phase of a run that `planned` ends and `observed` (the status read fresh before
/// planning) did not: `None` when the run goes on, or was already over for the same run (same
/// spec hash and rerun request). So each run is counted once, by the reconcile that ends it,
/// and a restarted controller, which reads the finished status, does not count it again.
fn newly_finished(
    observed: Option<&EvaluationStatus>,
    planned: &EvaluationStatus,
) -> Option<Phase> {
    let phase = planned.phase.filter(|p| p.is_finished())?;
    let Some(observed) = observed.filter(|s| s.phase.is_some_and(|p| p.is_finished())) else {
        return Some(phase);
    };
    let same_run = observed.provenance.as_ref().map(|p| &p.spec_hash)
        == planned.provenance.as_ref().map(|p| &p.spec_hash)
        && observed.rerun == planned.rerun;
    (!same_run).then_some(phase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::evaluation::Provenance;

    fn status(phase: Phase, spec_hash: &str, rerun: Option<&str>) -> EvaluationStatus {
        EvaluationStatus {
            phase: Some(phase),
            provenance: Some(Provenance {
                spec_hash: Some(spec_hash.to_string()),
                ..Provenance::default()
            }),
            rerun: rerun.map(str::to_string),
            ..EvaluationStatus::default()
        }
    }

    #[test]
    fn a_run_is_counted_by_the_reconcile_that_ends_it_only() {
        let running = status(Phase::Running, "h1", None);
        let failed = status(Phase::Failed, "h1", None);
        // The reconcile that ends the run counts it, from a status never written too.
        assert_eq!(newly_finished(Some(&running), &failed), Some(Phase::Failed));
        assert_eq!(newly_finished(None, &failed), Some(Phase::Failed));
        // Every later look, a restarted controller's included, reads it finished: not again.
        assert_eq!(newly_finished(Some(&failed), &failed), None);
        let succeeded = status(Phase::Succeeded, "h1", None);
        assert_eq!(newly_finished(Some(&failed), &succeeded), None);
        // A run that goes on is not counted.
        assert_eq!(newly_finished(Some(&running), &running), None);
        // A new run of the same Evaluation (spec changed, or a rerun asked for) is counted.
        let next_spec = status(Phase::Succeeded, "h2", None);
        assert_eq!(
            newly_finished(Some(&failed), &next_spec),
            Some(Phase::Succeeded)
        );
        let rerun = status(Phase::Failed, "h1", Some("1"));
        assert_eq!(newly_finished(Some(&failed), &rerun), Some(Phase::Failed));
    }
}
