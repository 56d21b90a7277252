//! The controller's caches of the objects it watches, fed by kube-runtime watchers: one
//! [`Indexed`] store per kind, with a secondary index (pods by Evaluation uid, Evaluations by
//! suite), so that no reconcile LISTs from the API server.
//!
//! - [`lean`]: what is kept of each object (no `managedFields`, no last-applied annotation, no
//!   conditions or log tails): the memory of 10,000 Evaluations is their specs, not their
//!   history.
//! - [`expectations`]: pods this controller created that the cache has not shown yet.
//! - [`seen_statuses`]: when a cached (new) Evaluation can stand in for a fresh read.
//! - [`waiters`]: runs waiting for a ModelEndpoint to become Ready.

pub mod caches;
pub mod expectations;
pub mod lean;
pub mod seen_statuses;
pub mod waiters;

pub use caches::Caches;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use kube::ResourceExt;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::runner::Key;

/// What one watch event changed, for the caller to trigger reconciles from.
#[derive(Debug)]
pub enum Change<K> {
    /// An object was added or modified (`old` is the version the cache held before).
    Applied {
        /// The previous version, if any.
        old: Option<Arc<K>>,
        /// The version now in the cache.
        new: Arc<K>,
    },
    /// An object was deleted; also for objects found missing when a watch re-listed.
    Deleted(Arc<K>),
    /// Nothing for the caller (start or end of a re-list).
    None,
}

/// A store of objects by key with one secondary index, fed by one or more watchers (one per
/// watched namespace).
pub struct Indexed<K> {
    inner: RwLock<Inner<K>>,
    index: fn(&K) -> Option<String>,
    /// The scopes whose watcher has listed once: a re-list of one scope must not count for
    /// another that never listed.
    ready: watch::Sender<BTreeSet<Option<String>>>,
    scopes: usize,
}

struct Inner<K> {
    objects: HashMap<Key, Arc<K>>,
    by_index: HashMap<String, BTreeSet<Key>>,
    /// Keys seen during a re-list in progress, per watched scope (`None`: all namespaces).
    relisting: HashMap<Option<String>, BTreeSet<Key>>,
}

impl<K: kube::Resource + Clone> Indexed<K> {
    /// An empty store fed by `scopes` watchers, indexing each object under `index(object)`.
    pub fn new(scopes: usize, index: fn(&K) -> Option<String>) -> Self {
        Indexed {
            inner: RwLock::new(Inner {
                objects: HashMap::new(),
                by_index: HashMap::new(),
                relisting: HashMap::new(),
            }),
            index,
            ready: watch::Sender::new(BTreeSet::new()),
            scopes: scopes.max(1),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner<K>> {
        // A panic elsewhere while holding the lock leaves a map that is still consistent.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner<K>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The object of `key`.
    pub fn get(&self, key: &Key) -> Option<Arc<K>> {
        self.read().objects.get(key).cloned()
    }

    /// The objects indexed under `value`.
    pub fn indexed(&self, value: &str) -> Vec<Arc<K>> {
        let inner = self.read();
        inner
            .by_index
            .get(value)
            .into_iter()
            .flatten()
            .filter_map(|k| inner.objects.get(k).cloned())
            .collect()
    }

    /// Every key.
    pub fn keys(&self) -> Vec<Key> {
        self.read().objects.keys().cloned().collect()
    }

    /// Every object.
    pub fn objects(&self) -> Vec<Arc<K>> {
        self.read().objects.values().cloned().collect()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every watcher has listed once.
    pub fn is_ready(&self) -> bool {
        self.ready.borrow().len() >= self.scopes
    }

    /// Waits until every watcher has listed once.
    pub async fn synced(&self) {
        let mut rx = self.ready.subscribe();
        let scopes = self.scopes;
        // The sender lives as long as `self`: the wait cannot fail while we are borrowed.
        let _ = rx.wait_for(|listed| listed.len() >= scopes).await;
    }

    /// Applies one event of the watcher of `scope`; returns what changed (the last of them
    /// for a re-list's end, which may delete several: see [`Indexed::apply_all`]).
    pub fn apply(&self, scope: Option<&str>, event: watcher::Event<K>) -> Vec<Change<K>> {
        match event {
            watcher::Event::Apply(obj) => vec![self.upsert(obj, None)],
            watcher::Event::InitApply(obj) => vec![self.upsert(obj, Some(scope))],
            watcher::Event::Delete(obj) => self
                .remove(&key_of(&obj))
                .map(Change::Deleted)
                .into_iter()
                .collect(),
            watcher::Event::Init => {
                self.write()
                    .relisting
                    .insert(scope.map(str::to_string), BTreeSet::new());
                vec![Change::None]
            }
            watcher::Event::InitDone => {
                let gone = self.finish_relist(scope);
                self.ready
                    .send_if_modified(|listed| listed.insert(scope.map(str::to_string)));
                gone.into_iter().map(Change::Deleted).collect()
            }
        }
    }

    fn upsert(&self, obj: K, relist: Option<Option<&str>>) -> Change<K> {
        let key = key_of(&obj);
        let value = (self.index)(&obj);
        let new = Arc::new(obj);
        let mut inner = self.write();
        if let Some(scope) = relist
            && let Some(seen) = inner.relisting.get_mut(&scope.map(str::to_string))
        {
            seen.insert(key.clone());
        }
        let old = inner.objects.insert(key.clone(), new.clone());
        if let Some(old_value) = old.as_deref().and_then(self.index)
            && Some(&old_value) != value.as_ref()
        {
            unindex(&mut inner.by_index, &old_value, &key);
        }
        if let Some(value) = value {
            inner.by_index.entry(value).or_default().insert(key);
        }
        Change::Applied { old, new }
    }

    fn remove(&self, key: &Key) -> Option<Arc<K>> {
        let mut inner = self.write();
        let old = inner.objects.remove(key)?;
        if let Some(value) = (self.index)(&old) {
            unindex(&mut inner.by_index, &value, key);
        }
        Some(old)
    }

    /// Ends a re-list of `scope`: objects of that scope the list did not return are gone.
    fn finish_relist(&self, scope: Option<&str>) -> Vec<Arc<K>> {
        let stale: Vec<Key> = {
            let mut inner = self.write();
            let Some(seen) = inner.relisting.remove(&scope.map(str::to_string)) else {
                return Vec::new();
            };
            inner
                .objects
                .keys()
                .filter(|k| scope.is_none_or(|s| s == k.namespace))
                .filter(|k| !seen.contains(k))
                .cloned()
                .collect()
        };
        stale.iter().filter_map(|k| self.remove(k)).collect()
    }
}

fn unindex(by_index: &mut HashMap<String, BTreeSet<Key>>, value: &str, key: &Key) {
    if let Some(keys) = by_index.get_mut(value) {
        keys.remove(key);
        if keys.is_empty() {
            by_index.remove(value);
        }
    }
}

/// The key of an object.
pub fn key_of<K: kube::Resource>(obj: &K) -> Key {
    Key::new(obj.namespace().unwrap_or_default(), obj.name_any())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ObjectMeta;

    use super::*;

    fn pod(ns: &str, name: &str, group: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: Some([("g".to_string(), group.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn group(p: &Pod) -> Option<String> {
        p.labels().get("g").cloned()
    }

    fn names(pods: Vec<Arc<Pod>>) -> Vec<String> {
        let mut n: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        n.sort();
        n
    }

    #[test]
    fn the_index_follows_applies_relabels_and_deletes() {
        let store = Indexed::new(1, group);
        store.apply(None, watcher::Event::Apply(pod("a", "p1", "x")));
        store.apply(None, watcher::Event::Apply(pod("a", "p2", "x")));
        assert_eq!(names(store.indexed("x")), ["p1", "p2"]);
        store.apply(None, watcher::Event::Apply(pod("a", "p2", "y")));
        assert_eq!(names(store.indexed("x")), ["p1"]);
        assert_eq!(names(store.indexed("y")), ["p2"]);
        let changes = store.apply(None, watcher::Event::Delete(pod("a", "p1", "x")));
        assert!(matches!(&changes[..], [Change::Deleted(p)] if p.name_any() == "p1"));
        assert!(store.indexed("x").is_empty());
    }

    #[test]
    fn a_relist_deletes_what_it_did_not_return_in_its_own_scope_only() {
        let store = Indexed::new(2, group);
        store.apply(Some("a"), watcher::Event::Init);
        store.apply(Some("b"), watcher::Event::Init);
        for (scope, name) in [("a", "p1"), ("a", "p2"), ("b", "q1")] {
            store.apply(
                Some(scope),
                watcher::Event::InitApply(pod(scope, name, "x")),
            );
        }
        store.apply(Some("a"), watcher::Event::InitDone);
        assert!(!store.is_ready(), "one of two watchers has listed");
        store.apply(Some("b"), watcher::Event::InitDone);
        assert!(store.is_ready());
        assert_eq!(store.len(), 3);
        // Namespace a re-lists and p2 is missing (deleted while the watch was down).
        store.apply(Some("a"), watcher::Event::Init);
        store.apply(Some("a"), watcher::Event::InitApply(pod("a", "p1", "x")));
        let changes = store.apply(Some("a"), watcher::Event::InitDone);
        assert!(matches!(&changes[..], [Change::Deleted(p)] if p.name_any() == "p2"));
        assert_eq!(names(store.indexed("x")), ["p1", "q1"]);
    }

    /// With two watched namespaces, one that lists twice (a re-list after a watch error) while
    /// the other has not listed yet leaves the store unready: restore and the first
    /// reconciles wait for every scope.
    #[tokio::test]
    async fn readiness_waits_for_every_scope_not_for_as_many_lists() {
        let store = Indexed::new(2, group);
        for _ in 0..2 {
            store.apply(Some("a"), watcher::Event::Init);
            store.apply(Some("a"), watcher::Event::InitDone);
        }
        assert!(!store.is_ready(), "b has not listed");
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), store.synced());
        assert!(early.await.is_err(), "synced waits for b");
        store.apply(Some("b"), watcher::Event::Init);
        store.apply(Some("b"), watcher::Event::InitDone);
        assert!(store.is_ready());
        let synced = tokio::time::timeout(std::time::Duration::from_secs(5), store.synced());
        assert!(synced.await.is_ok());
    }
}
