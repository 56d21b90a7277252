//! Writes a suite's children as planned: existing ones applied, new ones created (never
//! applied: an Evaluation of that name that is not the suite's must not be taken over),
//! removed ones deleted, unused shared workspaces pruned.

use kube::ResourceExt;
use kube::api::Api;

use crate::crd::Evaluation;
use crate::error::{Error, Result};
use crate::lifecycle::suite::{SuitePlan, given};
use crate::ssa;
use crate::suite::observe::{Observed, is_child};
use crate::suite::{Context, sources};

/// Applies or creates the planned children; returns the names taken by Evaluations that are
/// not the suite's (name conflicts, for the plan to report).
///
/// # Errors
/// API errors as [`Error::ApplyChild`] / [`Error::GetEvaluation`].
pub async fn children(
    observed: &Observed,
    planned: &SuitePlan,
    ctx: &Context,
) -> Result<Vec<String>> {
    let evaluations: Api<Evaluation> = Api::namespaced(ctx.client.clone(), &observed.namespace);
    let mut conflicts = Vec::new();
    for child in &planned.apply {
        let name = child.name_any();
        let apply_error = |source| Error::ApplyChild {
            kind: "Evaluation",
            name: name.clone(),
            source,
        };
        if observed.children.iter().any(|c| c.name_any() == name) {
            ssa::apply(&evaluations, ssa::SUITE_MANAGER, child)
                .await
                .map_err(apply_error)?;
            // Until the cache shows it, the next plans must count this child as started.
            if let Some((name, value)) = given::go_ahead_of(child) {
                ctx.gave(&observed.uid, name, value);
            }
            continue;
        }
        match ssa::create(&evaluations, ssa::SUITE_MANAGER, child).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours already, created a moment ago and not in the cache yet, or a conflict.
                let existing = evaluations
                    .get_opt(&name)
                    .await
                    .map_err(Error::GetEvaluation)?;
                if !existing
                    .as_ref()
                    .is_some_and(|e| is_child(e, &observed.uid))
                {
                    conflicts.push(name.clone());
                }
            }
            Err(source) => return Err(apply_error(source)),
        }
    }
    Ok(conflicts)
}

/// Deletes the children the plan drops and prunes the shared workspaces it no longer uses.
///
/// # Errors
/// API errors as [`Error::DeleteChild`].
pub async fn delete(observed: &Observed, planned: &SuitePlan, ctx: &Context) -> Result<()> {
    let evaluations: Api<Evaluation> = Api::namespaced(ctx.client.clone(), &observed.namespace);
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
        sources::prune(&ctx.client, &observed.suite, keep).await;
    }
    Ok(())
}
