//! The suite controller's loop: keys of suites (their own changes and every change of a
//! child, from the shared watches in [`crate::watches`]) reconciled from the fair work queue.

use std::sync::Arc;

use crate::runner::{self, Triggers};
use crate::suite::Context;
use crate::suite::reconcile::{error_policy, reconcile};

/// Runs the suite controller until `shutdown` completes.
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
        |ctx, key| ctx.caches.suites.get(key),
        reconcile,
        error_policy,
        shutdown,
    )
    .await;
}
