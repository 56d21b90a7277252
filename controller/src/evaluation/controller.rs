//! The Evaluation controller's loop: keys from the shared watches ([`crate::watches`]), the
//! admission gate's wakes and the emergency-stop switch arrive on one trigger channel and are
//! reconciled from the fair work queue ([`crate::runner`]).

use std::sync::Arc;

use crate::evaluation::{Context, reconcile};
use crate::requeue::Requeue;
use crate::runner::{self, Key, Triggers};

/// Runs the Evaluation controller until `shutdown` completes.
pub async fn run(
    ctx: Arc<Context>,
    triggers: Triggers,
    concurrency: u16,
    shutdown: impl Future<Output = ()>,
) {
    let work = move |key: Key| {
        let ctx = ctx.clone();
        async move {
            // Gone from the cache: the watch has forgotten it already.
            let Some(ev) = ctx.caches.evaluations.get(&key) else {
                return Requeue::AwaitChange;
            };
            match reconcile::reconcile(ev.clone(), ctx.clone()).await {
                Ok(requeue) => requeue,
                Err(error) => reconcile::error_policy(&ev, &error, &ctx),
            }
        }
    };
    runner::run(triggers, usize::from(concurrency), work, shutdown).await;
}
