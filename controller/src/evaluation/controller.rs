//! The Evaluation controller's loop: keys from the shared watches ([`crate::watches`]), the
//! admission gate's wakes and the emergency-stop switch arrive on one trigger channel and are
//! reconciled from the fair work queue ([`crate::runner`]).

use std::sync::Arc;

use crate::evaluation::{Context, reconcile};
use crate::runner::{self, Triggers};

/// Runs the Evaluation controller until `shutdown` completes.
pub async fn run(
    ctx: Arc<Context>,
    triggers: Triggers,
    concurrency: u16,
    shutdown: impl Future<Output = ()>,
) {
    runner::reconcile_keys(
        triggers,
        concurrency,
        ctx,
        |ctx, key| ctx.caches.evaluations.get(key),
        reconcile::reconcile,
        reconcile::error_policy,
        shutdown,
    )
    .await;
}
