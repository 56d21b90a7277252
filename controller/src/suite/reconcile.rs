//! The thin suite reconcile shell, shaped as the Evaluation's: observe (the suite fresh, its
//! children from the cache) → plan (pure) → apply (children) → report (metrics, Events,
//! throttled status).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::crd::EvaluationSuite;
use crate::error::{Error, Result};
use crate::lifecycle::suite as plan;
use crate::requeue::{self, Requeue};
use crate::suite::{Context, apply, observe, report};

/// Reconciles one suite.
///
/// # Errors
/// API errors; see [`error_policy`].
#[tracing::instrument(skip_all, fields(suite = %cached.name_any()))]
pub async fn reconcile(cached: Arc<EvaluationSuite>, ctx: Arc<Context>) -> Result<Requeue> {
    let _timer = ctx.metrics.reconcile_timer("EvaluationSuite");
    let Some(observed) = observe::observe(&cached, &ctx).await? else {
        return Ok(Requeue::AwaitChange);
    };
    let planned = plan::plan(
        &observed.suite,
        &observed.children,
        &Time(jiff::Timestamp::now()),
    );
    let conflicts = apply::children(&observed, &planned, &ctx).await?;
    let planned = plan::with_name_conflicts(&observed.suite, planned, &conflicts);
    apply::delete(&observed, &planned, &ctx).await?;
    report::report(&observed, &planned, &ctx).await
}

/// The error policy of the suite controller.
pub fn error_policy(suite: &EvaluationSuite, error: &Error, ctx: &Context) -> Requeue {
    requeue::on_error("EvaluationSuite", suite, error, &ctx.metrics)
}
