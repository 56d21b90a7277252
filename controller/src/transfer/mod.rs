//! Samples out of a finished pod (docs/samples.md, "Transport"), without credentials or network
//! in the sandbox and without node agents: the pod's trusted `samples` container prints the
//! samples file on its log when the pod's steps have ended ([`emit`]), and the controller reads
//! that log through the API server into the results store ([`carry`]), outside the reconciles
//! ([`Transfers`]).
//!
//! Idempotent per run id: the pod is kept until the run's status records the outcome, a
//! transfer cut off (controller restart, failover, timeout) is simply done again from the log,
//! and the store keeps one bundle per run id (a second transfer of a stored run validates the
//! stored bundle and stores nothing).

pub mod carry;
pub mod emit;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::crd::samples::BaselineRef;
use crate::reading::Bundle;
use crate::runner::{Key, Trigger};
use crate::samples::Collected;
use crate::store::Store;

/// Transfers running at once; more wait for a slot (each holds one log stream and one upload).
pub const TRANSFER_SLOTS: usize = 4;
/// Longest one transfer may take, from the log's first byte to the stored bundle.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// How long an outcome waits for the run that asked for it (a run deleted meanwhile never
/// takes it).
const KEEP: Duration = Duration::from_secs(600);

/// A transfer's outcome: what the samples gave (`None`: the step wrote none), or why they
/// could not be had, for the run's status.
pub type Outcome = Result<Option<Box<Collected>>, String>;

/// The baseline run of `spec.compareTo`, resolved from the cluster before the transfer.
#[derive(Clone, Debug)]
pub struct Baseline {
    /// What `status.comparison.baseline` says.
    pub reference: BaselineRef,
    /// Its bundle in this controller's store.
    pub bundle: Bundle,
}

/// What a reconcile gets when it asks for a run's samples.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The transfer ended.
    Ready(Outcome),
    /// Queued or running; the Evaluation is reconciled again when it ends.
    Pending,
}

enum Entry {
    Running,
    Done { outcome: Outcome, at: Instant },
}

/// The transfers of one controller, into its results store.
pub struct Transfers {
    /// The results store.
    pub store: Arc<Store>,
    slots: Arc<Semaphore>,
    entries: Mutex<HashMap<String, Entry>>,
    wake: Trigger,
}

impl Transfers {
    /// A pool into `store` whose ended transfers reconcile their Evaluation through `wake`.
    pub fn new(store: Arc<Store>, wake: Trigger) -> Arc<Self> {
        Arc::new(Transfers {
            store,
            slots: Arc::new(Semaphore::new(TRANSFER_SLOTS)),
            entries: Mutex::default(),
            wake,
        })
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The outcome of run `run_id`'s transfer (taken: asked again, it starts anew), or
    /// [`Answer::Pending`] after starting `transfer` when none is under way. Its end
    /// reconciles `waiter`.
    pub fn poll<F>(self: &Arc<Self>, waiter: Key, run_id: &str, transfer: F) -> Answer
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        let mut entries = self.entries();
        match entries.remove(run_id) {
            Some(Entry::Done { outcome, .. }) => return Answer::Ready(outcome),
            Some(Entry::Running) => {
                entries.insert(run_id.to_string(), Entry::Running);
                return Answer::Pending;
            }
            None => {}
        }
        entries.insert(run_id.to_string(), Entry::Running);
        drop(entries);
        let pool = self.clone();
        let run_id = run_id.to_string();
        tokio::spawn(async move {
            let outcome = match pool.slots.clone().acquire_owned().await {
                Ok(_permit) => tokio::time::timeout(TRANSFER_TIMEOUT, transfer)
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "the samples were not stored within {}s",
                            TRANSFER_TIMEOUT.as_secs()
                        ))
                    }),
                Err(_) => Err("the controller is shutting down".into()),
            };
            pool.done(run_id, outcome);
            // The receiver is gone only when the controller stops.
            let _ = pool.wake.send(waiter);
        });
        Answer::Pending
    }

    /// Records an outcome; drops those nobody took within [`KEEP`].
    fn done(&self, run_id: String, outcome: Outcome) {
        let now = Instant::now();
        let mut entries = self.entries();
        entries.retain(|_, e| match e {
            Entry::Running => true,
            Entry::Done { at, .. } => now.saturating_duration_since(*at) < KEEP,
        });
        entries.insert(run_id, Entry::Done { outcome, at: now });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transfer runs once however often its run asks meanwhile, its end wakes the run, and
    /// its outcome is handed over once.
    #[tokio::test]
    async fn a_transfer_runs_once_wakes_its_run_and_hands_its_outcome_over_once() {
        let (wake, mut woken) = crate::runner::channel();
        let dir = tempfile::tempdir().expect("temp dir");
        let url = url::Url::from_directory_path(dir.path()).expect("absolute");
        let store = Arc::new(Store::open(url.as_str()).expect("store"));
        let pool = Transfers::new(store, wake);
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let key = Key::new("team-a", "arith");
        let first = pool.poll(key.clone(), "run-1", async move {
            let _ = released.await;
            Ok(None)
        });
        assert_eq!(first, Answer::Pending);
        let again = pool.poll(key.clone(), "run-1", async { Err("started twice".into()) });
        assert_eq!(again, Answer::Pending, "still the first transfer");
        release.send(()).expect("the transfer waits");
        assert_eq!(woken.recv().await, Some(key.clone()));
        assert_eq!(
            pool.poll(key.clone(), "run-1", async { Err("started again".into()) }),
            Answer::Ready(Ok(None))
        );
        let restarted = pool.poll(key, "run-1", async { Err("done again".into()) });
        assert_eq!(
            restarted,
            Answer::Pending,
            "taken: asked again, it starts anew"
        );
    }
}
