//! What a suite reconcile reads: the suite itself, fresh (its status decides whether to write
//! again), and its children from the cache (indexed by suite), kept only when the suite is
//! their controller, with the go-aheads this controller gave that the cache does not show yet.

use std::sync::Arc;

use kube::api::Api;
use kube::{Resource, ResourceExt};

use crate::crd::{Evaluation, EvaluationSuite};
use crate::error::{Error, Result};
use crate::lifecycle::suite::given;
use crate::ownership;
use crate::suite::Context;

/// A suite as read for one reconcile.
pub struct Observed {
    /// The suite, fresh from the API server.
    pub suite: EvaluationSuite,
    /// Its namespace.
    pub namespace: String,
    /// Its uid.
    pub uid: String,
    /// The Evaluations it controls.
    pub children: Vec<Evaluation>,
}

/// Reads `cached` fresh and its children; `None` when it is gone or being deleted (its
/// children are owned: the garbage collector removes them).
///
/// # Errors
/// The GET as [`Error::GetSuite`]; [`Error::MissingObjectKey`] for an object without
/// namespace or uid.
pub async fn observe(cached: &Arc<EvaluationSuite>, ctx: &Context) -> Result<Option<Observed>> {
    let namespace = cached
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let suites: Api<EvaluationSuite> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(suite) = suites
        .get_opt(&cached.name_any())
        .await
        .map_err(Error::GetSuite)?
    else {
        forget(cached, ctx);
        return Ok(None);
    };
    if suite.meta().deletion_timestamp.is_some() {
        forget(cached, ctx);
        return Ok(None);
    }
    let uid = suite.uid().ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let cached_children: Vec<Evaluation> = ctx
        .caches
        .children_of(&namespace, &suite.name_any())
        .into_iter()
        .filter(|c| is_child(c, &uid))
        .collect();
    // The cache may be behind this controller's own last writes: see `given`.
    let (children, unseen) = given::with_given(cached_children, &ctx.given(&uid));
    ctx.set_given(&uid, unseen);
    Ok(Some(Observed {
        suite,
        namespace,
        uid,
        children,
    }))
}

/// Forgets the go-aheads of a suite gone or being deleted.
fn forget(cached: &EvaluationSuite, ctx: &Context) {
    if let Some(uid) = cached.uid() {
        ctx.set_given(&uid, given::GoAheads::new());
    }
}

/// Whether `child` is a child of the suite with uid `suite_uid`: the suite is its controller
/// (the caller reads it from the suite's namespace), whatever its labels or other owner
/// references say.
pub fn is_child(child: &Evaluation, suite_uid: &str) -> bool {
    ownership::controlled_by::<EvaluationSuite>(child.meta(), suite_uid)
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
