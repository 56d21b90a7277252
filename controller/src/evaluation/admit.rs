//! Connects the Evaluation controller to the admission ledger: the candidate of a run, the
//! limits that apply to it, the decision, freeing what a finished run held (and waking the
//! queue), rebuilding the ledger from the cluster at start, and publishing
//! `EvaluationQuota.status`. The ledger itself is pure (`crate::admission`); `restore` and
//! `publish_quota_status` talk to the API server.

use std::cmp::Reverse;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};

use crate::admission::{Candidate, Decision, Ledger, Limits, QueueKey, Request};
use crate::config::Config;
use crate::crd::evaluation::{EvaluationSpec, EvaluationStatus, Phase};
use crate::crd::quota::{EvaluationQuotaStatus, QuotaUsed};
use crate::crd::{Evaluation, EvaluationQuota};
use crate::evaluation::identity::{EVALUATION_UID_LABEL, MANAGED_LABEL};
use crate::evaluation::{phase, plan};
use crate::metrics::Metrics;
use crate::quantity;

/// Annotation ordering the queue: higher first (integer, default 0).
pub const PRIORITY_ANNOTATION: &str = "crucible.dev/priority";
/// How often `EvaluationQuota.status` is brought up to date.
pub const QUOTA_STATUS_INTERVAL: Duration = Duration::from_secs(2);
/// Field manager of quota status writes.
const QUOTA_STATUS_MANAGER: &str = "crucible-quota-status";

/// What a run requests: its resources with the controller's defaults.
pub fn request(spec: &EvaluationSpec, config: &Config) -> Request {
    let r = spec.resources.clone().unwrap_or_default();
    let value = |q: Option<Quantity>, default: &Quantity| {
        q.as_ref()
            .and_then(quantity::value)
            .or_else(|| quantity::value(default))
            .unwrap_or(0.0)
    };
    Request {
        cpu: value(r.cpu, &config.default_cpu),
        memory: value(r.memory, &config.default_memory),
        gpu: f64::from(r.gpu.unwrap_or(0).max(0)),
    }
}

/// The candidate of `ev`'s run; `None` for objects without namespace or uid.
pub fn candidate(ev: &Evaluation, config: &Config) -> Option<Candidate> {
    let priority = ev
        .annotations()
        .get(PRIORITY_ANNOTATION)
        .and_then(|p| p.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let created = ev
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    Some(Candidate {
        namespace: ev.namespace()?,
        key: QueueKey {
            priority: Reverse(priority),
            created,
            name: ev.name_any(),
            uid: ev.uid()?,
        },
        request: request(&ev.spec, config),
    })
}

/// The limits of a namespace: its EvaluationQuotas (the strictest of each figure when there
/// are several), or the controller default.
pub fn namespace_limits(quotas: &[&EvaluationQuota], config: &Config) -> Limits {
    if quotas.is_empty() {
        return Limits {
            max_running: Some(config.namespace_max_running),
            ..Default::default()
        };
    }
    let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    quotas.iter().fold(Limits::default(), |acc, q| {
        let hard = q.spec.hard.clone().unwrap_or_default();
        Limits {
            max_running: match (acc.max_running, q.spec.max_running) {
                (Some(a), Some(b)) => Some(a.min(u32::try_from(b).unwrap_or(0))),
                (a, b) => a.or(b.map(|b| u32::try_from(b).unwrap_or(0))),
            },
            cpu: min(acc.cpu, hard.cpu.as_ref().and_then(quantity::value)),
            memory: min(acc.memory, hard.memory.as_ref().and_then(quantity::value)),
            gpu: min(acc.gpu, hard.gpu.map(f64::from)),
            paused: acc.paused || q.spec.paused == Some(true),
        }
    })
}

/// The admission ledger of the controller. Queued runs ask again every
/// `plan::QUEUE_RECHECK`, so freed capacity is taken within that time.
#[derive(Default)]
pub struct Admission {
    ledger: Mutex<Ledger>,
}

impl Admission {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A panic while holding the lock cannot leave the ledger half-updated in a way that
        // matters more than stopping admission altogether would.
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides whether `ev`'s run may start now.
    pub fn decide(
        &self,
        ev: &Evaluation,
        quotas: &[&EvaluationQuota],
        config: &Config,
        hold: Option<&str>,
        metrics: &Metrics,
    ) -> plan::Admission {
        let Some(c) = candidate(ev, config) else {
            return plan::Admission::Admitted;
        };
        let limits = namespace_limits(quotas, config);
        let decision = self
            .ledger()
            .decide(&c, &limits, &config.global_limits, hold);
        self.publish_metrics(&c.namespace, &limits, metrics);
        match decision {
            Decision::Admit => plan::Admission::Admitted,
            Decision::Wait { position, reason } => plan::Admission::Wait {
                position: i32::try_from(position).unwrap_or(i32::MAX),
                reason,
            },
        }
    }

    /// After a reconcile: a run that finished and has no live pod left frees its admission
    /// (and its queue place).
    pub fn settle(&self, ev: &Evaluation, status: &EvaluationStatus, pods: &[Pod]) {
        let finished = status.phase.is_some_and(Phase::is_finished);
        let alive = pods.iter().any(|p| !phase::is_terminal(p));
        if finished && !alive {
            self.forget(&ev.uid().unwrap_or_default());
        }
    }

    /// Frees everything `uid` holds.
    pub fn forget(&self, uid: &str) {
        self.ledger().release(uid);
    }

    /// Forgets runs of Evaluations of `scope` (a namespace, or all) that no longer exist.
    pub fn retain(&self, scope: Option<&str>, live: &HashSet<String>) {
        self.ledger()
            .retain(|uid, ns| live.contains(uid) || scope.is_some_and(|s| s != ns));
    }

    /// Usage figures and queue length of a namespace.
    pub fn status_of(&self, namespace: &str) -> (crate::admission::Usage, usize) {
        let ledger = self.ledger();
        (ledger.usage(Some(namespace)), ledger.queued(namespace))
    }

    fn publish_metrics(&self, namespace: &str, limits: &Limits, metrics: &Metrics) {
        let (usage, queued) = self.status_of(namespace);
        metrics.set_queue_depth(namespace, queued);
        metrics.set_quota(
            namespace,
            "running",
            f64::from(usage.running),
            limits.max_running.map(f64::from),
        );
        metrics.set_quota(namespace, "cpu", usage.cpu, limits.cpu);
        metrics.set_quota(namespace, "memory", usage.memory, limits.memory);
        metrics.set_quota(namespace, "gpu", usage.gpu, limits.gpu);
    }

    /// Rebuilds the ledger from the cluster before any reconcile runs: runs whose status says
    /// Pending or Running, and runs with a live pod (a crash between creating the pod and
    /// writing status), hold their admission; queued runs take their queue places.
    ///
    /// # Errors
    /// Listing Evaluations or pods failed.
    pub async fn restore(
        &self,
        client: &Client,
        namespace: Option<&str>,
        config: &Config,
    ) -> Result<usize, kube::Error> {
        let (evaluations, pods): (Api<Evaluation>, Api<Pod>) = match namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let evaluations = evaluations.list(&ListParams::default()).await?.items;
        let managed = ListParams::default().labels(&format!("{MANAGED_LABEL}=true"));
        let live_pods: HashSet<String> = pods
            .list(&managed)
            .await?
            .items
            .iter()
            .filter(|p| !phase::is_terminal(p))
            .filter_map(|p| p.labels().get(EVALUATION_UID_LABEL).cloned())
            .collect();
        let mut ledger = self.ledger();
        let mut restored = 0;
        for ev in &evaluations {
            let (Some(c), Some(uid)) = (candidate(ev, config), ev.uid()) else {
                continue;
            };
            let phase = ev.status.as_ref().and_then(|s| s.phase);
            if matches!(phase, Some(Phase::Pending | Phase::Running)) || live_pods.contains(&uid) {
                ledger.restore(&uid, &c.namespace, c.request);
                restored += 1;
            } else if matches!(phase, None | Some(Phase::Queued)) {
                // Take the queue place now, so that priorities hold from the first decision.
                ledger.queue(&c);
            }
        }
        Ok(restored)
    }
}

/// Keeps `EvaluationQuota.status` (used, queued) up to date from the ledger, every
/// [`QUOTA_STATUS_INTERVAL`]; writes only what changed.
pub async fn publish_quota_status(
    client: Client,
    quotas: Store<EvaluationQuota>,
    admission: std::sync::Arc<Admission>,
) {
    let mut tick = tokio::time::interval(QUOTA_STATUS_INTERVAL);
    loop {
        tick.tick().await;
        for quota in quotas.state() {
            let Some(ns) = quota.namespace() else {
                continue;
            };
            let (usage, queued) = admission.status_of(&ns);
            let status = EvaluationQuotaStatus {
                used: Some(QuotaUsed {
                    running: i32::try_from(usage.running).unwrap_or(i32::MAX),
                    cpu: Quantity(format_quantity(usage.cpu, "")),
                    memory: Quantity(format_quantity(usage.memory / (1024.0 * 1024.0), "Mi")),
                    gpu: usage.gpu.round() as i32,
                }),
                queued: Some(i32::try_from(queued).unwrap_or(i32::MAX)),
                observed_generation: quota.metadata.generation,
            };
            if quota.status.as_ref() == Some(&status) {
                continue;
            }
            let api: Api<EvaluationQuota> = Api::namespaced(client.clone(), &ns);
            let body = serde_json::json!({
                "apiVersion": "crucible.dev/v1alpha1", "kind": "EvaluationQuota", "status": status,
            });
            let params = PatchParams::apply(QUOTA_STATUS_MANAGER).force();
            if let Err(error) = api
                .patch_status(&quota.name_any(), &params, &Patch::Apply(&body))
                .await
            {
                tracing::warn!(%error, quota = %quota.name_any(), namespace = %ns, "cannot write quota status");
            }
        }
    }
}

/// `1.5` cores → `1500m`; `512` Mi → `512Mi`.
fn format_quantity(value: f64, unit: &str) -> String {
    if unit.is_empty() {
        format!("{}m", (value * 1000.0).round() as i64)
    } else {
        format!("{}{unit}", value.round() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::quota::{EvaluationQuotaSpec, QuotaHard};

    fn quota(max_running: Option<i32>, cpu: Option<&str>, paused: bool) -> EvaluationQuota {
        EvaluationQuota::new(
            "q",
            EvaluationQuotaSpec {
                max_running,
                hard: Some(QuotaHard {
                    cpu: cpu.map(|c| Quantity(c.into())),
                    ..Default::default()
                }),
                paused: Some(paused),
            },
        )
    }

    #[test]
    fn namespaces_without_a_quota_get_the_controller_default() {
        let limits = namespace_limits(&[], &Config::default());
        assert_eq!(limits.max_running, Some(10));
        assert_eq!(limits.cpu, None);
    }

    #[test]
    fn several_quotas_combine_to_the_strictest() {
        let a = quota(Some(5), Some("8"), false);
        let b = quota(Some(3), None, true);
        let limits = namespace_limits(&[&a, &b], &Config::default());
        assert_eq!(limits.max_running, Some(3));
        assert_eq!(limits.cpu, Some(8.0));
        assert!(limits.paused);
    }

    #[test]
    fn requests_use_the_controller_defaults() {
        let ev = Evaluation::test();
        let r = request(&ev.spec, &Config::default());
        assert_eq!(
            (r.cpu, r.memory, r.gpu),
            (1.0, 512.0 * 1024.0 * 1024.0, 0.0)
        );
        let ev = ev.annotated(PRIORITY_ANNOTATION, "7");
        assert_eq!(
            candidate(&ev, &Config::default()).map(|c| c.key.priority),
            Some(Reverse(7))
        );
    }

    #[test]
    fn quantities_render_for_quota_status() {
        assert_eq!(format_quantity(1.5, ""), "1500m");
        assert_eq!(format_quantity(512.0, "Mi"), "512Mi");
    }
}
