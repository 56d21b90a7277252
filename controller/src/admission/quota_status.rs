//! Keeps `EvaluationQuota.status` (used, queued) up to date from the ledger.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};

use crate::admission::Gate;
use crate::admission::candidate::namespace_limits;
use crate::config::Config;
use crate::crd::EvaluationQuota;
use crate::crd::conditions::{self, Status};
use crate::crd::quota::{EvaluationQuotaStatus, QuotaUsed};
use crate::ssa;

/// How often `EvaluationQuota.status` is brought up to date.
pub const QUOTA_STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// Keeps `EvaluationQuota.status` (used, queued) up to date from the ledger, every
/// [`QUOTA_STATUS_INTERVAL`]; writes only what changed.
pub async fn publish(
    client: Client,
    quotas: Store<EvaluationQuota>,
    admission: Arc<Gate>,
    config: Config,
) {
    let mut tick = tokio::time::interval(QUOTA_STATUS_INTERVAL);
    loop {
        tick.tick().await;
        for quota in quotas.state() {
            let Some(ns) = quota.namespace() else {
                continue;
            };
            let (usage, queued) = admission.status_of(&ns);
            let mut status = EvaluationQuotaStatus {
                used: Some(QuotaUsed {
                    running: i32::try_from(usage.running).unwrap_or(i32::MAX),
                    cpu: Quantity(format_quantity(usage.cpu, "")),
                    memory: Quantity(format_quantity(usage.memory / (1024.0 * 1024.0), "Mi")),
                    gpu: usage.gpu.round() as i32,
                }),
                queued: Some(i32::try_from(queued).unwrap_or(i32::MAX)),
                observed_generation: quota.metadata.generation,
                conditions: quota
                    .status
                    .as_ref()
                    .map(|s| s.conditions.clone())
                    .unwrap_or_default(),
            };
            let invalid = namespace_limits(&[quota.as_ref()], &config).invalid;
            let (ready, reason, message) = match &invalid {
                Some(why) => (Status::False, "InvalidQuota", why.as_str()),
                None => (Status::True, "Valid", "every figure is understood"),
            };
            let now = Time(jiff::Timestamp::now());
            let generation = quota.metadata.generation;
            let c = &mut status.conditions;
            conditions::set_condition(
                c,
                conditions::READY,
                ready,
                reason,
                message,
                generation,
                &now,
            );
            if quota.status.as_ref() == Some(&status) {
                continue;
            }
            let api: Api<EvaluationQuota> = ssa::scoped(&client, Some(&ns));
            if let Err(error) =
                ssa::apply_status(&api, ssa::QUOTA_STATUS_MANAGER, &quota.name_any(), &status).await
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

    #[test]
    fn quantities_render_for_quota_status() {
        assert_eq!(format_quantity(1.5, ""), "1500m");
        assert_eq!(format_quantity(512.0, "Mi"), "512Mi");
    }
}
