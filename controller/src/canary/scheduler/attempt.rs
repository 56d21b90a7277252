//! One canary run's pod, from creation to removal: its NetworkPolicy and pod created, the pod
//! followed until it has finished or never will (bounded by `--canary-timeout` and the
//! scheduling grace), its log and Warning Events read, and both objects deleted whatever
//! happened. Talks to the API server.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams, LogParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::watch_object;

use super::super::probe::Run;
use super::super::verdict::{
    Observation, PodProblem, Stage, describe, exit_code, pod_finished, pod_problem,
};
use super::{API_SLACK, Scheduler};
use crate::run::pod::EVALUATION_CONTAINER;
use crate::ssa;

/// Most bytes of the probe's log read (its report is one short line).
const LOG_LIMIT: i64 = 16 * 1024;
/// Most Warning Events of a stuck canary pod quoted in its verdict.
const EVENTS_QUOTED: usize = 3;

impl Scheduler {
    /// Creates the canary's NetworkPolicy and pod, waits for the pod, reads its log, and
    /// deletes both whatever happened; `Err` when the run proved nothing.
    pub(super) async fn execute(&self, run: &Run<'_>) -> Result<Observation, String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let policies: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), &self.namespace);
        // The pod's own wait is bounded by --canary-timeout; this bounds the API calls around
        // it too (a create or a log read the API server or kubelet never answers).
        let bound = self.settings.timeout + self.settings.schedule_grace + API_SLACK;
        let outcome = tokio::time::timeout(bound, self.observe(&pods, &policies, run))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the canary run did not complete within {bound:?}: the API server or the kubelet did not answer"
                ))
            });
        remove(&pods, run.name).await;
        remove(&policies, run.name).await;
        if run.gateway.is_some() {
            remove(&policies, &run.gateway_policy_name()).await;
        }
        outcome
    }

    async fn observe(
        &self,
        pods: &Api<Pod>,
        policies: &Api<NetworkPolicy>,
        run: &Run<'_>,
    ) -> Result<Observation, String> {
        let failed = |message: String| {
            Ok(Observation::NotRun {
                step: Stage::Pod,
                message,
            })
        };
        // A busy or failing API server (or webhook) proves nothing; a refusal of the canary
        // for what it is (PodSecurity, an invalid object) does.
        let refused = |what: &str, error: kube::Error| {
            let message = format!("the API server refused {what}: {error}");
            match error {
                kube::Error::Api(status) if status.code != 429 && status.code < 500 => {
                    failed(message)
                }
                _ => Err(message),
            }
        };
        if let Err(error) = ssa::create(policies, ssa::CANARY_MANAGER, &run.network_policy()).await
        {
            return refused("the canary's NetworkPolicy", error);
        }
        if let Some(policy) = run.gateway_policy()
            && let Err(error) = ssa::create(policies, ssa::CANARY_MANAGER, &policy).await
        {
            return refused("the canary's NetworkPolicy to the model gateway", error);
        }
        if let Err(error) = ssa::create(pods, ssa::CANARY_MANAGER, &run.pod(&self.config)).await {
            return refused("the canary pod", error);
        }
        let grace = self.settings.schedule_grace;
        let waited = tokio::time::timeout(
            self.settings.timeout + grace,
            until_over(pods, run.name, grace),
        )
        .await;
        let pod = match waited {
            Ok(Some(pod)) => pod,
            Ok(None) => return Err("the canary pod was deleted before it finished".into()),
            Err(_) => {
                let state = match pods.get_opt(run.name).await {
                    Ok(Some(pod)) => describe(&pod),
                    Ok(None) => "gone".into(),
                    Err(error) => format!("unreadable: {error}"),
                };
                let warnings = self.warnings(run.name).await;
                return failed(format!(
                    "the canary pod did not finish within {:?} ({state}){warnings}",
                    self.settings.timeout
                ));
            }
        };
        if let Some(why) = crate::run::phase::gate_failure(&pod) {
            return failed(why);
        }
        match pod_problem(&pod, true) {
            Some(PodProblem::Fatal(problem)) => return failed(problem),
            Some(PodProblem::Transient(problem)) => return Err(problem),
            None => {}
        }
        let params = LogParams {
            container: Some(EVALUATION_CONTAINER.into()),
            limit_bytes: Some(LOG_LIMIT),
            ..Default::default()
        };
        match pods.logs(run.name, &params).await {
            Ok(log) => Ok(Observation::Ran {
                log,
                exit_code: exit_code(&pod),
            }),
            Err(error) => Err(format!("cannot read the canary's log: {error}")),
        }
    }

    /// The last Warning Events of pod `name` (e.g. a runtime handler missing on the node), as
    /// `; events: …`, or nothing.
    async fn warnings(&self, name: &str) -> String {
        let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = ListParams::default().fields(&format!("involvedObject.name={name}"));
        let Ok(list) = api.list(&params).await else {
            return String::new();
        };
        let notes: Vec<String> = list
            .items
            .iter()
            .rev()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .take(EVENTS_QUOTED)
            .map(|e| {
                let message = e.message.as_deref().unwrap_or_default();
                let end = (0..=message.len().min(300))
                    .rev()
                    .find(|i| message.is_char_boundary(*i))
                    .unwrap_or(0);
                format!(
                    "{}: {}",
                    e.reason.as_deref().unwrap_or("Warning"),
                    &message[..end]
                )
            })
            .collect();
        if notes.is_empty() {
            String::new()
        } else {
            format!("; events: {}", notes.join("; "))
        }
    }
}

/// Deletes the canary object `name`, within [`API_SLACK`]; one left behind goes at the next
/// start (and with the controller's pod).
async fn remove<K: ssa::Object>(api: &Api<K>, name: &str) {
    let kind = K::kind(&());
    match tokio::time::timeout(API_SLACK, ssa::delete(api, name)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, %kind, name, "cannot delete a sandbox canary object")
        }
        Err(_) => tracing::warn!(%kind, name, "deleting a sandbox canary object timed out"),
    }
}

/// The pod `name` once it has finished or never will (see [`pod_problem`]; an unschedulable
/// pod only after `grace`); `None` once it is gone. A failing watch is retried with backoff:
/// the caller bounds the wait.
async fn until_over(pods: &Api<Pod>, name: &str, grace: Duration) -> Option<Pod> {
    let over =
        |pod: &Pod, patience_over| pod_finished(pod) || pod_problem(pod, patience_over).is_some();
    let patience_ends = tokio::time::Instant::now() + grace;
    let mut patient = true;
    let mut last: Option<Pod> = None;
    let mut updates = watch_object(pods.clone(), name).default_backoff().boxed();
    loop {
        tokio::select! {
            update = updates.next() => match update? {
                Ok(Some(pod)) if !over(&pod, !patient) => last = Some(pod),
                Ok(pod) => return pod,
                Err(error) => tracing::debug!(%error, pod = name, "canary pod watch failed; retrying"),
            },
            // The grace ending is the event: the pod as last seen is judged again.
            () = tokio::time::sleep_until(patience_ends), if patient => {
                patient = false;
                if last.as_ref().is_some_and(|pod| over(pod, true)) {
                    return last;
                }
            }
        }
    }
}
