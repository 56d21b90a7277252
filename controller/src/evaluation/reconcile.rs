//! The thin reconcile shell: observe → admission gate → plan → apply → settle the ledger →
//! report → delete, and the error policy.

use std::sync::Arc;

use kube::{Resource, ResourceExt};

use crate::admission::holds::Holds;
use crate::cache::expectations::EXPECTATION_TTL;
use crate::crd::{Evaluation, EvaluationQuota};
use crate::error::{Error, Result};
use crate::evaluation::{Context, apply, observe, report};
use crate::lifecycle;
use crate::requeue::{self, Requeue};
use crate::run::{state, validate};

/// Reconciles one Evaluation.
///
/// # Errors
/// API errors; see [`error_policy`] for what happens next.
#[tracing::instrument(skip_all, fields(evaluation = %ev.name_any(), namespace = ev.namespace().unwrap_or_default()))]
pub async fn reconcile(ev: Arc<Evaluation>, ctx: Arc<Context>) -> Result<Requeue> {
    let _timer = ctx.metrics.reconcile_timer("Evaluation");
    let forget = || {
        let (ns, uid) = (
            ev.namespace().unwrap_or_default(),
            ev.uid().unwrap_or_default(),
        );
        ctx.metrics.forget_evaluation(&uid, &ns, &ev.name_any());
        // Its queue place goes now; its admissions only once its pods are gone (the sweep).
        ctx.admission.withdraw(&uid);
    };
    if ev.meta().deletion_timestamp.is_some() {
        // Children are owned: the garbage collector removes them.
        forget();
        return Ok(Requeue::AwaitChange);
    }
    if ev.uid().is_some_and(|uid| {
        ctx.caches
            .expected
            .awaited(&uid, tokio::time::Instant::now())
    }) {
        // A pod created for it is not in the cache yet: planning now could take the run for
        // a lost one. The pod's watch event brings it back (the delay is only a safety net).
        return Ok(Requeue::After(EXPECTATION_TTL));
    }
    let Some((ev, mut observed)) = observe::observe(&ev, &ctx).await? else {
        forget(); // deleted meanwhile
        return Ok(Requeue::AwaitChange);
    }; // client required
    let namespace = ev.namespace().unwrap_or_default();
    // The one place a run or a retry is admitted or queued: the gate records the decision as
    // it makes it.
    let quotas = ctx.quotas_of(&namespace);
    let quotas: Vec<&EvaluationQuota> = quotas.iter().map(AsRef::as_ref).collect();
    let holds = Holds {
        stop: observed.stop.as_deref(),
        suite: state::awaits_suite(&ev),
        sandbox: &ctx.sandbox,
        runtime_class: validate::runtime_class(&ev.spec, &ctx.config),
    };
    let answer = ctx.admission.ask(
        &ev,
        observed.head.as_deref(),
        &holds,
        &quotas,
        &ctx.config,
        &ctx.metrics,
    );
    if answer.starts_run {
        // Git is read only once the run may start: a queued run costs no fetch.
        observed.source = observe::source(&ev, &ctx, observed.head.as_deref()).await;
        observed.model_endpoints = observe::model_endpoints(&ev, &ctx).await?;
        observed.daily_budget = observe::daily_budget(&ev, &ctx);
    }
    let decision = answer.decision;
    let mut plan = lifecycle::plan(&ev, &observed, &decision, &ctx.config)?; // no client required
    if let Some(refusal) = apply::create(&ev, &plan, &ctx).await? {
        // client required
        tracing::warn!(reason = refusal.reason, message = %refusal.message, "child refused");
        plan = lifecycle::refused(&ev, plan, refusal, &observed.now); // no client required
    }
    // The ledger learns what the run holds now, before the status write: a finished run's
    // slot goes to the next queued run at once (its pod holds no capacity any more).
    let uid = ev.uid().unwrap_or_default();
    ctx.admission
        .settle(&namespace, &uid, &plan.holds(), plan.in_queue); // no client required
    report::report(&ev, &plan, &ctx).await?; // client required
    if let (Some(notices), Some((run, expires))) = (
        &ctx.notices,
        lifecycle::ended_model_run(&ev, &plan, &ctx.config),
    ) {
        // After the status holds the end; outside the reconcile, tried a few times, and best
        // effort: the token expires at `expires` anyway.
        notices.revoke(&run, expires);
    }
    if let Some(waited) = lifecycle::queue_wait(&ev, &plan, &observed.now) {
        ctx.metrics.admitted_after(waited.as_secs_f64());
    }
    apply::delete(&ev, &plan, &ctx).await?; // client required, after the status holds the logs
    Ok(plan.requeue)
}

/// The error policy of the Evaluation controller.
pub fn error_policy(ev: &Evaluation, error: &Error, ctx: &Context) -> Requeue {
    requeue::on_error("Evaluation", ev, error, &ctx.metrics)
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
