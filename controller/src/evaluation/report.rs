//! Writes the planned status (server-side apply on `/status`, bounded in time) and publishes the
//! plan's Events.

use std::time::Duration;

use kube::api::Api;
use kube::{Resource, ResourceExt};

use crate::crd::Evaluation;
use crate::error::{Error, Result};
use crate::evaluation::Context;
use crate::events;
use crate::lifecycle::Plan;
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

/// Updates the phase gauge and, when this reconcile finished the run, its duration and score.
fn record_metrics(ev: &Evaluation, plan: &Plan, ctx: &Context) {
    let (namespace, uid) = (
        ev.namespace().unwrap_or_default(),
        ev.uid().unwrap_or_default(),
    );
    let phase = plan.status.phase;
    ctx.metrics
        .set_phase(&uid, &namespace, phase.map(|p| p.as_str()));
    let was_finished = ev
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_finished());
    let same_run = ev
        .status
        .as_ref()
        .and_then(|s| s.provenance.as_ref())
        .map(|p| &p.spec_hash)
        == plan.status.provenance.as_ref().map(|p| &p.spec_hash)
        && ev.status.as_ref().map(|s| &s.rerun) == Some(&plan.status.rerun);
    if let Some(phase) = phase.filter(|p| p.is_finished() && !(was_finished && same_run)) {
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
    }
}
