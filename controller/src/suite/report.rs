//! Reports a suite's plan: metrics, Events, and its status, written at most once per
//! [`STATUS_MIN_INTERVAL`](crate::suite::context::STATUS_MIN_INTERVAL).

use std::time::Duration;

use kube::api::Api;
use kube::{Resource, ResourceExt};

use crate::crd::EvaluationSuite;
use crate::error::{Error, Result};
use crate::events;
use crate::lifecycle::suite::SuitePlan;
use crate::requeue::Requeue;
use crate::ssa;
use crate::suite::Context;
use crate::suite::observe::Observed;

/// Publishes the plan's metrics and Events and writes its status when it changed; every
/// change of a child comes back through the watch.
///
/// # Errors
/// The status write as [`Error::PatchStatus`].
pub async fn report(observed: &Observed, planned: &SuitePlan, ctx: &Context) -> Result<Requeue> {
    let suite = &observed.suite;
    let status = &planned.status;
    ctx.metrics.set_suite(
        &observed.namespace,
        &suite.name_any(),
        status.mean_score,
        status.pass_rate.unwrap_or(0.0),
    );
    events::publish(&ctx.recorder, &suite.object_ref(&()), &planned.notes).await;
    if suite.status.as_ref() != Some(status) {
        let delay = ctx.write_delay(&observed.uid);
        if delay > Duration::ZERO {
            return Ok(Requeue::After(delay));
        }
        let suites: Api<EvaluationSuite> = Api::namespaced(ctx.client.clone(), &observed.namespace);
        ssa::apply_status(&suites, ssa::SUITE_MANAGER, &suite.name_any(), status)
            .await
            .map_err(Error::PatchStatus)?;
        ctx.wrote(&observed.uid);
    }
    Ok(Requeue::AwaitChange)
}
