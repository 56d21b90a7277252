//! The thin suite reconcile shell: read the suite and its children fresh, plan, apply the
//! children, delete orphans, write status at most once per [`STATUS_MIN_INTERVAL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use crate::crd::{Evaluation, EvaluationSuite};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::suite::plan::{self, SUITE_LABEL};

/// Field manager of the children a suite applies and of its status.
const SUITE_MANAGER: &str = "crucible-suite";
/// A suite's status is written at most this often, however many children change: no write
/// storm with 1,000 cases.
pub const STATUS_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Look at a running suite at least this often even without events.
const RUNNING_RESYNC: Duration = Duration::from_secs(60);
/// Retry delay after a passing error.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);

/// What a suite reconcile needs.
pub struct SuiteContext {
    /// API client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// When each suite's status was last written (by uid).
    last_write: Mutex<HashMap<String, Instant>>,
}

impl SuiteContext {
    /// A context with no writes recorded.
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Self {
        SuiteContext {
            client,
            metrics,
            last_write: Mutex::default(),
        }
    }

    /// Time to wait before this suite's status may be written again.
    fn write_delay(&self, uid: &str) -> Duration {
        let writes = self.last_write.lock().unwrap_or_else(|e| e.into_inner());
        writes
            .get(uid)
            .map(|t| STATUS_MIN_INTERVAL.saturating_sub(t.elapsed()))
            .unwrap_or(Duration::ZERO)
    }

    fn wrote(&self, uid: &str) {
        let mut writes = self.last_write.lock().unwrap_or_else(|e| e.into_inner());
        writes.insert(uid.to_string(), Instant::now());
    }
}

/// Reconciles one suite.
///
/// # Errors
/// API errors, retried after [`ERROR_REQUEUE`].
#[tracing::instrument(skip_all, fields(suite = %cached.name_any()))]
pub async fn reconcile(cached: Arc<EvaluationSuite>, ctx: Arc<SuiteContext>) -> Result<Action> {
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
        return Ok(Action::await_change());
    };
    if suite.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change()); // children are owned: GC removes them
    }
    let uid = suite.uid().ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let evaluations: Api<Evaluation> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = ListParams::default().labels(&format!("{SUITE_LABEL}={}", suite.name_any()));
    let children: Vec<Evaluation> = evaluations
        .list(&selector)
        .await
        .map_err(Error::ListEvaluations)?
        .items
        .into_iter()
        .filter(|c| c.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    let planned = plan::plan(&suite, &children, &Time(jiff::Timestamp::now()));
    let params = PatchParams::apply(SUITE_MANAGER).force();
    for child in &planned.apply {
        let name = child.name_any();
        let mut body =
            serde_json::to_value(child).map_err(|e| Error::Serialize("Evaluation", e))?;
        body["apiVersion"] = Evaluation::api_version(&()).into();
        body["kind"] = Evaluation::kind(&()).into();
        evaluations
            .patch(&name, &params, &Patch::Apply(&body))
            .await
            .map_err(|source| Error::ApplyChild {
                kind: "Evaluation",
                name,
                source,
            })?;
    }
    for name in &planned.delete {
        match evaluations.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(Error::DeleteChild {
                    kind: "Evaluation",
                    name: name.clone(),
                    source,
                });
            }
        }
    }
    let status = &planned.status;
    ctx.metrics.set_suite(
        &namespace,
        &suite.name_any(),
        status.mean_score,
        status.pass_rate.unwrap_or(0.0),
    );
    if suite.status.as_ref() != Some(status) {
        let delay = ctx.write_delay(&uid);
        if delay > Duration::ZERO {
            return Ok(Action::requeue(delay));
        }
        let body = serde_json::json!({
            "apiVersion": EvaluationSuite::api_version(&()),
            "kind": EvaluationSuite::kind(&()),
            "status": status,
        });
        suites
            .patch_status(&suite.name_any(), &params, &Patch::Apply(&body))
            .await
            .map_err(Error::PatchStatus)?;
        ctx.wrote(&uid);
    }
    Ok(match status.phase {
        Some(crate::crd::suite::SuitePhase::Running) => Action::requeue(RUNNING_RESYNC),
        _ => Action::await_change(),
    })
}

fn error_policy(suite: Arc<EvaluationSuite>, error: &Error, ctx: Arc<SuiteContext>) -> Action {
    tracing::warn!(suite = %suite.name_any(), %error, "suite reconcile failed");
    ctx.metrics
        .reconcile_failure("EvaluationSuite", error.reason());
    if error.is_transient() {
        Action::requeue(ERROR_REQUEUE)
    } else {
        Action::await_change()
    }
}

/// Runs the suite controller for one namespace (or all) until shutdown.
pub async fn run(ctx: Arc<SuiteContext>, namespace: Option<&str>, concurrency: u16) {
    let (suites, children): (Api<EvaluationSuite>, Api<Evaluation>) = match namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
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
