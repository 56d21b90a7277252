//! The thin suite reconcile shell: read the suite fresh and its children from the cache
//! (indexed by suite), plan, apply the children, delete orphans, write status at most once per
//! [`STATUS_MIN_INTERVAL`](crate::suite::context::STATUS_MIN_INTERVAL).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::{Resource, ResourceExt};

use crate::crd::{Evaluation, EvaluationSuite};
use crate::error::{Error, Result};
use crate::events;
use crate::ownership;
use crate::requeue::{self, Requeue};
use crate::ssa;
use crate::suite::{Context, plan, sources};

/// Reconciles one suite.
///
/// # Errors
/// API errors; see [`error_policy`].
#[tracing::instrument(skip_all, fields(suite = %cached.name_any()))]
pub async fn reconcile(cached: Arc<EvaluationSuite>, ctx: Arc<Context>) -> Result<Requeue> {
    let _timer = ctx.metrics.reconcile_timer("EvaluationSuite");
    let namespace = cached
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let suites: Api<EvaluationSuite> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(suite) = suites
        .get_opt(&cached.name_any())
        .await
        .map_err(Error::GetSuite)?
    else {
        return Ok(Requeue::AwaitChange);
    };
    if suite.meta().deletion_timestamp.is_some() {
        return Ok(Requeue::AwaitChange); // children are owned: GC removes them
    }
    let uid = suite.uid().ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let evaluations: Api<Evaluation> = Api::namespaced(ctx.client.clone(), &namespace);
    let ours = |c: &Evaluation| is_child(c, &uid);
    let children: Vec<Evaluation> = ctx
        .caches
        .children_of(&namespace, &suite.name_any())
        .into_iter()
        .filter(ours)
        .collect();
    let planned = plan::plan(&suite, &children, &Time(jiff::Timestamp::now()));
    let mut conflicts = Vec::new();
    for child in &planned.apply {
        let name = child.name_any();
        let apply_error = |source| Error::ApplyChild {
            kind: "Evaluation",
            name: name.clone(),
            source,
        };
        if children.iter().any(|c| c.name_any() == name) {
            ssa::apply(&evaluations, ssa::SUITE_MANAGER, child)
                .await
                .map_err(apply_error)?;
            continue;
        }
        // A new child is created, never applied: an Evaluation of that name that is not
        // the suite's (one that lives in Git, say) must not be taken over.
        match ssa::create(&evaluations, ssa::SUITE_MANAGER, child).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours already, created a moment ago and not in the cache yet, or a conflict.
                let existing = evaluations
                    .get_opt(&name)
                    .await
                    .map_err(Error::GetEvaluation)?;
                if !existing.as_ref().is_some_and(ours) {
                    conflicts.push(name.clone());
                }
            }
            Err(source) => return Err(apply_error(source)),
        }
    }
    let planned = plan::with_name_conflicts(&suite, planned, &conflicts);
    for name in &planned.delete {
        ssa::delete(&evaluations, name)
            .await
            .map_err(|source| Error::DeleteChild {
                kind: "Evaluation",
                name: name.clone(),
                source,
            })?;
    }
    if let Some(keep) = &planned.keep_sources {
        sources::prune(&ctx.client, &suite, keep).await;
    }
    let status = &planned.status;
    ctx.metrics.set_suite(
        &namespace,
        &suite.name_any(),
        status.mean_score,
        status.pass_rate.unwrap_or(0.0),
    );
    events::publish(&ctx.recorder, &suite.object_ref(&()), &planned.notes).await;
    if suite.status.as_ref() != Some(status) {
        let delay = ctx.write_delay(&uid);
        if delay > Duration::ZERO {
            return Ok(Requeue::After(delay));
        }
        ssa::apply_status(&suites, ssa::SUITE_MANAGER, &suite.name_any(), status)
            .await
            .map_err(Error::PatchStatus)?;
        ctx.wrote(&uid);
    }
    // Every change of a child comes back here through the watch.
    Ok(Requeue::AwaitChange)
}

/// Whether `child` is a child of the suite with uid `suite_uid`: the suite is its controller
/// (the caller reads it from the suite's namespace), whatever its labels or other owner
/// references say.
fn is_child(child: &Evaluation, suite_uid: &str) -> bool {
    ownership::controlled_by::<EvaluationSuite>(child.meta(), suite_uid)
}

/// The error policy of the suite controller.
pub fn error_policy(suite: &EvaluationSuite, error: &Error, ctx: &Context) -> Requeue {
    requeue::on_error("EvaluationSuite", suite, error, &ctx.metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child is the suite's only by its controller reference: an Evaluation someone gave the
    /// suite's label and a plain (non-controller) owner reference to the suite is not.
    #[test]
    fn only_evaluations_the_suite_controls_are_its_children() {
        let child = Evaluation::test().child_of("s", "a", "uid-a");
        assert!(is_child(&child, "s-uid"));
        assert!(!is_child(&child, "other-uid"));
        let mut impostor = child.clone();
        if let Some(r) = impostor
            .metadata
            .owner_references
            .as_mut()
            .and_then(|refs| refs.first_mut())
        {
            r.controller = None;
        }
        assert!(!is_child(&impostor, "s-uid"));
    }
}
