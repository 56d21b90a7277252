//! Events, shared by both controllers: what a plan asks to publish ([`Note`]), the recorder,
//! and publishing (failures are logged, never fatal: an Event is a notice, the status is the
//! record). The controller's recorder hands Events to a background sender (a bounded queue,
//! as many at once as reconciles run): a reconcile does not wait for a notice to be stored,
//! nor for room in the queue: when the API server is too slow to take Events, the ones that
//! do not fit are dropped and counted (the status still says everything).
//!
//! The recorder creates `events.k8s.io/v1` Events itself rather than through kube-runtime's
//! `Recorder`: that one keeps every Event it published for six minutes and scans them all,
//! under one lock, on every publish — 10,000 queued runs made each `Queued` Event cost a scan
//! of 10,000 and held ~20 MB. Our Events mark transitions (each is published once), so they
//! need no series.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use tokio::sync::mpsc::{self, error::TrySendError};

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

/// Events waiting for the background sender, at most; beyond, Events are dropped.
const BACKLOG: usize = 1024;

/// Publishes Events as `crucible-controller` from one replica.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    instance: String,
    /// The background sender's queue; without one, Events are created in the publishing
    /// reconcile, in order (tests).
    queue: Option<mpsc::Sender<Event>>,
    /// Events dropped because the queue was full.
    dropped: Arc<AtomicU64>,
}

/// A recorder that creates Events in the publishing reconcile, reporting from `instance`.
pub fn recorder(client: &Client, instance: Option<String>) -> Recorder {
    Recorder {
        client: client.clone(),
        instance: instance.unwrap_or_else(|| CONTROLLER.into()),
        queue: None,
        dropped: Arc::default(),
    }
}

/// The controller's recorder: Events are handed to a background sender, so a reconcile (and
/// the run behind it in the queue) does not wait for a notice to be stored. It creates up to
/// `in_flight` at once: as many as reconciles run, so that it keeps up with them.
pub fn background(client: &Client, instance: Option<String>, in_flight: usize) -> Recorder {
    let (queue, pending) = mpsc::channel(BACKLOG);
    tokio::spawn(send_all(client.clone(), pending, in_flight.max(1)));
    Recorder {
        queue: Some(queue),
        ..recorder(client, instance)
    }
}

async fn send_all(client: Client, mut pending: mpsc::Receiver<Event>, in_flight: usize) {
    futures::stream::poll_fn(|cx| pending.poll_recv(cx))
        .for_each_concurrent(in_flight, |event| create(&client, event))
        .await;
}

async fn create(client: &Client, event: Event) {
    let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    if let Err(error) = api.create(&PostParams::default(), &event).await {
        let reason = event.reason.as_deref().unwrap_or_default();
        tracing::warn!(%error, reason, "failed to publish event");
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
        match &recorder.queue {
            Some(queue) => match queue.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    let dropped = recorder.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    // One line per thousand: a flood of drops must not become a flood of logs.
                    if dropped % 1000 == 1 {
                        tracing::warn!(
                            reason = note.reason,
                            dropped,
                            "event queue full (the API server is slow to take Events); \
                             events dropped"
                        );
                    }
                }
                Err(TrySendError::Closed(_)) => {
                    tracing::warn!(reason = note.reason, "event sender stopped; event dropped");
                }
            },
            None => create(&recorder.client, event).await,
        }
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_event_queue_drops_events_instead_of_holding_the_reconcile() {
        let (client, _api) = crate::fixtures::ApiServerVerifier::client();
        let (queue, _pending) = mpsc::channel(1);
        let recorder = Recorder {
            queue: Some(queue),
            ..recorder(&client, None)
        };
        let note = Note {
            severity: Severity::Normal,
            reason: "Queued",
            message: "waiting".into(),
        };
        let reference = ObjectReference {
            namespace: Some("tenant".into()),
            name: Some("ev".into()),
            ..Default::default()
        };
        // Nothing drains the queue (an API server that takes no Events): the second and
        // third do not fit.
        let published = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            publish(&recorder, &reference, &[note.clone(), note.clone(), note]),
        )
        .await;
        assert!(published.is_ok(), "publishing waited for room in the queue");
        assert_eq!(recorder.dropped.load(Ordering::Relaxed), 2);
    }
}
