//! Watch wiring of the suite controller: EvaluationSuites and the child Evaluations they own.

use std::sync::Arc;

use futures::StreamExt;
use kube::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::watcher;

use crate::crd::{Evaluation, EvaluationSuite};
use crate::labels::SUITE_LABEL;
use crate::ssa;
use crate::suite::Context;
use crate::suite::reconcile::{error_policy, reconcile};

/// Runs the suite controller for one namespace (or all) until shutdown.
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>, concurrency: u16) {
    let suites: Api<EvaluationSuite> = ssa::scoped(&ctx.client, namespace);
    let children: Api<Evaluation> = ssa::scoped(&ctx.client, namespace);
    Controller::new(suites, watcher::Config::default())
        .owns(children, watcher::Config::default().labels(SUITE_LABEL))
        .with_config(controller::Config::default().concurrency(concurrency))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "suite controller stream error");
            }
        })
        .await;
}
