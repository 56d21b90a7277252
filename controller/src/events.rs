//! Events, shared by both controllers: what a plan asks to publish ([`Note`]), the recorder,
//! and publishing (failures are logged, never fatal: an Event is a notice, the status is the
//! record).

use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use k8s_openapi::api::core::v1::ObjectReference;

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

/// The Event recorder of the controller, reporting as `crucible-controller` from `instance`
/// (this replica's pod name).
pub fn recorder(client: &Client, instance: Option<String>) -> Recorder {
    let reporter = Reporter {
        controller: "crucible-controller".into(),
        instance,
    };
    Recorder::new(client.clone(), reporter)
}

/// Publishes `notes` on the object `reference` names.
pub async fn publish(recorder: &Recorder, reference: &ObjectReference, notes: &[Note]) {
    for note in notes {
        let event = Event {
            type_: match note.severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: note.reason.to_string(),
            note: Some(truncate(&note.message, NOTE_MAX)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, reference).await {
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
