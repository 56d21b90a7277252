//! Runs waiting for a ModelEndpoint to become Ready: the Evaluation controller records a run
//! that found its endpoint not Ready, the ModelEndpoint controller takes the runs of an endpoint
//! when it becomes Ready (or goes away) and sends them back to their work queue. An event, not
//! a timer, brings a waiting run back; and only the runs of that endpoint, found by its key, not
//! by looking at every run.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use crate::runner::Key;

/// Runs (Evaluation keys) by the endpoint (`namespace/name`) they wait for.
#[derive(Default)]
pub struct Waiters {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_endpoint: HashMap<String, BTreeSet<Key>>,
    /// The reverse, so that a deleted run is forgotten without a search.
    by_run: HashMap<Key, BTreeSet<String>>,
}

/// The key of endpoint `name` in `namespace` (a namespace has no `/`).
pub fn endpoint_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves maps that are still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `run` waits for endpoint `endpoint` ([`endpoint_key`]).
    pub fn wait(&self, endpoint: &str, run: &Key) {
        let mut inner = self.lock();
        inner
            .by_endpoint
            .entry(endpoint.to_string())
            .or_default()
            .insert(run.clone());
        inner
            .by_run
            .entry(run.clone())
            .or_default()
            .insert(endpoint.to_string());
    }

    /// The runs waiting for `endpoint`, which wait no more.
    pub fn take(&self, endpoint: &str) -> BTreeSet<Key> {
        let mut inner = self.lock();
        let runs = inner.by_endpoint.remove(endpoint).unwrap_or_default();
        for run in &runs {
            if let Some(endpoints) = inner.by_run.get_mut(run) {
                endpoints.remove(endpoint);
                if endpoints.is_empty() {
                    inner.by_run.remove(run);
                }
            }
        }
        runs
    }

    /// Run `run` is gone: it waits for nothing.
    pub fn forget(&self, run: &Key) {
        let mut inner = self.lock();
        for endpoint in inner.by_run.remove(run).unwrap_or_default() {
            if let Some(runs) = inner.by_endpoint.get_mut(&endpoint) {
                runs.remove(run);
                if runs.is_empty() {
                    inner.by_endpoint.remove(&endpoint);
                }
            }
        }
    }

    /// Number of waiting runs.
    pub fn len(&self) -> usize {
        self.lock().by_run.len()
    }

    /// Whether no run waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_gives_back_its_runs_once_and_a_gone_run_leaves_nothing() {
        let w = Waiters::default();
        let (a, b) = (Key::new("team-a", "a"), Key::new("team-a", "b"));
        let openai = endpoint_key("team-a", "openai");
        let other = endpoint_key("team-a", "other");
        w.wait(&openai, &a);
        w.wait(&openai, &a);
        w.wait(&openai, &b);
        w.wait(&other, &b);
        assert_eq!(w.take(&endpoint_key("team-b", "openai")), BTreeSet::new());
        assert_eq!(w.take(&openai), BTreeSet::from([a.clone(), b.clone()]));
        assert!(w.take(&openai).is_empty(), "taken once");
        assert_eq!(w.len(), 1, "b still waits for the other endpoint");
        w.forget(&b);
        assert!(w.is_empty());
        assert!(w.take(&other).is_empty());
    }
}
