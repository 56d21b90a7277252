//! Events, shared by both controllers: what a plan asks to publish ([`Note`]), the recorder,
//! and publishing (failures are logged, never fatal: an Event is a notice, the status is the
//! record).
//!
//! The recorder creates `events.k8s.io/v1` Events itself rather than through kube-runtime's
//! `Recorder`: that one keeps every Event it published for six minutes and scans them all,
//! under one lock, on every publish — 10,000 queued runs made each `Queued` Event cost a scan
//! of 10,000 and held ~20 MB. Our Events mark transitions (each is published once), so they
//! need no series.

use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

/// Longest Event note the API server keeps.
const NOTE_MAX: usize = 1000;

/// Severity of an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Normal.
    Normal,
    /// Warning.
    Warning,
}

/// An Event to publish on an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Normal or Warning.
    pub severity: Severity,
    /// PascalCase reason.
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

/// Name of the reporting controller.
const CONTROLLER: &str = "crucible-controller";

/// Publishes Events as `crucible-controller` from one replica.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    instance: String,
}

/// The Event recorder of the controller, reporting from `instance` (this replica's pod name).
pub fn recorder(client: &Client, instance: Option<String>) -> Recorder {
    Recorder {
        client: client.clone(),
        instance: instance.unwrap_or_else(|| CONTROLLER.into()),
    }
}

/// Tells Events created in the same nanosecond apart.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Publishes `notes` on the object `reference` names.
pub async fn publish(recorder: &Recorder, reference: &ObjectReference, notes: &[Note]) {
    let namespace = reference
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let api: Api<Event> = Api::namespaced(recorder.client.clone(), &namespace);
    for note in notes {
        let now = jiff::Timestamp::now();
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let name = reference.name.as_deref().unwrap_or(CONTROLLER);
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}{sequence:x}", now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            action: Some("Reconcile".into()),
            reason: Some(note.reason.to_string()),
            note: Some(truncate(&note.message, NOTE_MAX)),
            type_: Some(
                match note.severity {
                    Severity::Normal => "Normal",
                    Severity::Warning => "Warning",
                }
                .into(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(recorder.instance.clone()),
            ..Default::default()
        };
        if let Err(error) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(%error, reason = note.reason, "failed to publish event");
        }
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
