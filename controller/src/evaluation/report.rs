//! Writes the planned status (server-side apply on `/status`, bounded in time) and publishes the
//! plan's Events.

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use crate::crd::Evaluation;
use crate::error::{Error, Result};
use crate::evaluation::Context;
use crate::evaluation::identity::STATUS_MANAGER;
use crate::evaluation::plan::{Plan, Severity};

/// Longest a status write may take before the reconcile gives up and retries.
const STATUS_PATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes `plan.status` (when it changed) and the plan's Events.
///
/// # Errors
/// The status write failed or timed out. Event failures are logged, never fatal: an Event is
/// a notice, the status is the record.
pub async fn report(ev: &Evaluation, plan: &Plan, ctx: &Context) -> Result<()> {
    if ev.status.as_ref() != Some(&plan.status) {
        let namespace = ev
            .namespace()
            .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
        let api: Api<Evaluation> = Api::namespaced(ctx.client.clone(), &namespace);
        let body = serde_json::json!({
            "apiVersion": Evaluation::api_version(&()),
            "kind": Evaluation::kind(&()),
            "status": plan.status,
        });
        let params = PatchParams::apply(STATUS_MANAGER).force();
        let name = ev.name_any();
        let apply = Patch::Apply(&body);
        let patch = api.patch_status(&name, &params, &apply);
        tokio::time::timeout(STATUS_PATCH_TIMEOUT, patch)
            .await
            .map_err(|_| Error::PatchStatusTimeout)?
            .map_err(Error::PatchStatus)?;
    }
    let reference = ev.object_ref(&());
    for note in &plan.notes {
        let event = Event {
            type_: match note.severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: note.reason.to_string(),
            note: Some(truncate(&note.message, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, reason = note.reason, "failed to publish event");
        }
    }
    Ok(())
}

/// Cuts `text` to at most `max` bytes on a character boundary (Event notes are capped at 1 kB).
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
