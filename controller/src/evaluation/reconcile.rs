//! The thin reconcile shell: observe → plan → apply → report → delete, and the error policy.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::crd::Evaluation;
use crate::error::{Error, Result};
use crate::evaluation::plan::{self, Requeue};
use crate::evaluation::{Context, apply, observe, report};

/// Retry delay after a passing error (API hiccup, conflict).
pub const ERROR_REQUEUE: Duration = Duration::from_secs(5);

/// Reconciles one Evaluation.
///
/// # Errors
/// API errors; see [`error_policy`] for what happens next.
#[tracing::instrument(skip_all, fields(evaluation = %ev.name_any(), namespace = ev.namespace().unwrap_or_default()))]
pub async fn reconcile(ev: Arc<Evaluation>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer("Evaluation");
    let forget = || {
        let (ns, uid) = (
            ev.namespace().unwrap_or_default(),
            ev.uid().unwrap_or_default(),
        );
        ctx.metrics.forget_evaluation(&uid, &ns, &ev.name_any());
        ctx.admission.forget(&uid);
    };
    if ev.meta().deletion_timestamp.is_some() {
        // Children are owned: the garbage collector removes them.
        forget();
        return Ok(Action::await_change());
    }
    let Some((ev, observed)) = observe::observe(&ev, &ctx).await? else {
        forget(); // deleted meanwhile
        return Ok(Action::await_change());
    }; // client required
    let mut plan = plan::plan(&ev, &observed, &ctx.config)?; // no client required
    if let Some(refusal) = apply::create(&ev, &plan, &ctx).await? {
        // client required
        tracing::warn!(reason = refusal.reason, message = %refusal.message, "child refused");
        plan = plan::refused(&ev, plan, refusal, &observed.now); // no client required
    }
    report::report(&ev, &plan, &ctx).await?; // client required
    apply::delete(&ev, &plan, &ctx).await?; // client required, after the status holds the logs
    ctx.admission.settle(&ev, &plan.status, &observed.pods); // no client required
    Ok(requeue(plan.requeue))
}

/// The controller action for a planned requeue.
pub fn requeue(requeue: Requeue) -> Action {
    match requeue {
        Requeue::After(d) => Action::requeue(d),
        Requeue::AwaitChange => Action::await_change(),
    }
}

/// Passing errors retry after [`ERROR_REQUEUE`]; bugs wait for a change of the object.
pub fn error_policy(ev: Arc<Evaluation>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(evaluation = %ev.name_any(), %error, "reconcile failed");
    ctx.metrics.reconcile_failure("Evaluation", error.reason());
    if error.is_transient() {
        Action::requeue(ERROR_REQUEUE)
    } else {
        Action::await_change()
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
