//! Keeps `EvaluationQuota.status` (used, queued, Ready) up to date from the ledger: written
//! when the namespace's usage, queue or quotas change, never on a timer.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::admission::candidate::namespace_limits;
use crate::admission::{Gate, Usage};
use crate::cache::Indexed;
use crate::config::Config;
use crate::crd::EvaluationQuota;
use crate::crd::conditions::{self, Status};
use crate::crd::quota::{EvaluationQuotaStatus, QuotaUsed};
use crate::metrics::Metrics;
use crate::ssa;

/// Least time between two rounds of writes: a burst of admissions in a namespace becomes one
/// status write per quota.
pub const QUOTA_STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// Writes the status of the quotas (and the queue and quota gauges) of every namespace the
/// ledger reports changed, at most once per [`QUOTA_STATUS_INTERVAL`]; writes only what
/// differs from the cached status.
pub async fn publish(
    client: Client,
    quotas: Arc<Indexed<EvaluationQuota>>,
    admission: Arc<Gate>,
    config: Config,
    metrics: Arc<Metrics>,
) {
    loop {
        for ns in admission.touched().await {
            let (usage, queued) = admission.status_of(&ns);
            let in_namespace = quotas.indexed(&ns);
            // Runs finishing change the gauges too, not only admission decisions.
            let refs: Vec<&EvaluationQuota> = in_namespace.iter().map(AsRef::as_ref).collect();
            let limits = namespace_limits(&refs, &config);
            admission.publish_metrics(&ns, &limits, !refs.is_empty(), &metrics);
            for quota in in_namespace {
                let now = Time(jiff::Timestamp::now());
                let status = status_of(&quota, &usage, queued, &config, &now);
                if quota.status.as_ref() == Some(&status) {
                    continue;
                }
                let api: Api<EvaluationQuota> = ssa::scoped(&client, Some(&ns));
                let name = quota.name_any();
                if let Err(error) =
                    ssa::apply_status(&api, ssa::QUOTA_STATUS_MANAGER, &name, &status).await
                {
                    tracing::warn!(%error, quota = %name, namespace = %ns, "cannot write quota status; retrying");
                    admission.touch(&ns);
                }
            }
        }
        tokio::time::sleep(QUOTA_STATUS_INTERVAL).await;
    }
}

/// The status `quota` should have with its namespace's `usage` and `queued` runs.
fn status_of(
    quota: &EvaluationQuota,
    usage: &Usage,
    queued: usize,
    config: &Config,
    now: &Time,
) -> EvaluationQuotaStatus {
    let generation = quota.metadata.generation;
    let used = QuotaUsed {
        running: i32::try_from(usage.running).unwrap_or(i32::MAX),
        cpu: Quantity(format_quantity(usage.cpu, "")),
        memory: Quantity(format_quantity(usage.memory / (1024.0 * 1024.0), "Mi")),
        gpu: usage.gpu.round() as i32,
    };
    let hard = quota.spec.hard.clone().unwrap_or_default();
    // The limit as the user wrote it; `-` where there is none.
    let of =
        |used: &str, hard: Option<String>| format!("{used}/{}", hard.as_deref().unwrap_or("-"));
    let mut status = EvaluationQuotaStatus {
        shown_cpu: Some(of(&used.cpu.0, hard.cpu.map(|q| q.0))),
        shown_memory: Some(of(&used.memory.0, hard.memory.map(|q| q.0))),
        shown_gpu: Some(of(&used.gpu.to_string(), hard.gpu.map(|g| g.to_string()))),
        used: Some(used),
        queued: Some(i32::try_from(queued).unwrap_or(i32::MAX)),
        paused: Some(quota.spec.paused == Some(true)),
        observed_generation: generation,
        conditions: quota
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
    };
    let invalid = namespace_limits(&[quota], config).invalid;
    let (ready, reason, message) = match &invalid {
        Some(why) => (Status::False, "InvalidQuota", why.as_str()),
        None => (Status::True, "Valid", "every figure is understood"),
    };
    conditions::set_condition(
        &mut status.conditions,
        conditions::READY,
        ready,
        reason,
        message,
        generation,
        now,
    );
    status
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

    #[test]
    fn status_shows_used_and_hard_and_paused_as_a_boolean() {
        let mut quota = EvaluationQuota::new(
            "q",
            EvaluationQuotaSpec {
                hard: Some(QuotaHard {
                    cpu: Some(Quantity("4".into())),
                    memory: Some(Quantity("16Gi".into())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let usage = Usage {
            running: 1,
            cpu: 1.5,
            memory: 256.0 * 1024.0 * 1024.0,
            gpu: 0.0,
        };
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let status = status_of(&quota, &usage, 2, &Config::default(), &now);
        assert_eq!(status.shown_cpu.as_deref(), Some("1500m/4"));
        assert_eq!(status.shown_memory.as_deref(), Some("256Mi/16Gi"));
        assert_eq!(status.shown_gpu.as_deref(), Some("0/-"));
        assert_eq!(status.paused, Some(false), "absent spec.paused shows false");
        quota.spec.paused = Some(true);
        let status = status_of(&quota, &usage, 2, &Config::default(), &now);
        assert_eq!(status.paused, Some(true));
    }

    #[test]
    fn quantities_render_for_quota_status() {
        assert_eq!(format_quantity(1.5, ""), "1500m");
        assert_eq!(format_quantity(512.0, "Mi"), "512Mi");
    }
}
