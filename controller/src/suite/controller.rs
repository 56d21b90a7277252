//! The suite controller's loop: keys of suites (their own changes and every change of a
//! child, from the shared watches in [`crate::watches`]) reconciled from the fair work queue.

use std::sync::Arc;

use crate::requeue::Requeue;
use crate::runner::{self, Key, Triggers};
use crate::suite::Context;
use crate::suite::reconcile::{error_policy, reconcile};

/// Runs the suite controller until `shutdown` completes.
pub async fn run(
    ctx: Arc<Context>,
    triggers: Triggers,
    concurrency: u16,
    shutdown: impl Future<Output = ()>,
) {
    let work = move |key: Key| {
        let ctx = ctx.clone();
        async move {
            let Some(suite) = ctx.caches.suites.get(&key) else {
                return Requeue::AwaitChange;
            };
            match reconcile(suite.clone(), ctx.clone()).await {
                Ok(requeue) => requeue,
                Err(error) => error_policy(&suite, &error, &ctx),
            }
        }
    };
    runner::run(triggers, usize::from(concurrency), work, shutdown).await;
}
