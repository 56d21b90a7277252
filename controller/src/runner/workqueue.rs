//! The work queue of a controller: which object to reconcile next. Pure (time is passed in).
//!
//! Semantics of client-go's workqueue, plus fairness between namespaces:
//! - an object is queued at most once, however many events name it;
//! - an object is never reconciled twice at once: one queued while its reconcile runs is
//!   queued again when that reconcile ends;
//! - a delayed requeue is dropped when an earlier one (or an immediate add) comes first;
//! - namespaces take turns: the next object comes from the next namespace with work, so a
//!   backlog of 10,000 objects in one namespace delays an object of another by at most one
//!   reconcile per waiting namespace, not by the backlog.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use tokio::time::Instant;

/// An object to reconcile: namespace (empty for cluster-scoped objects) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl Key {
    /// The key of `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Key {
        Key {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// The queue.
#[derive(Debug, Default)]
pub struct WorkQueue {
    /// Ready objects by namespace, in arrival order.
    ready: HashMap<String, VecDeque<String>>,
    /// Namespaces with ready objects, in turn order.
    turns: VecDeque<String>,
    /// Every ready object (one entry each).
    queued: HashSet<Key>,
    /// Objects being reconciled.
    active: HashSet<Key>,
    /// Active objects added again meanwhile.
    again: HashSet<Key>,
    /// Delayed adds, by time.
    delayed: BTreeSet<(Instant, Key)>,
    /// The time of each delayed add.
    due: HashMap<Key, Instant>,
}

impl WorkQueue {
    /// Queues `key` now.
    pub fn add(&mut self, key: Key) {
        if self.active.contains(&key) {
            self.again.insert(key);
            return;
        }
        if let Some(at) = self.due.remove(&key) {
            self.delayed.remove(&(at, key.clone()));
        }
        if !self.queued.insert(key.clone()) {
            return;
        }
        let namespace = self.ready.entry(key.namespace.clone()).or_default();
        if namespace.is_empty() {
            self.turns.push_back(key.namespace.clone());
        }
        namespace.push_back(key.name);
    }

    /// Queues `key` at `at`, unless it is queued sooner already.
    pub fn add_at(&mut self, key: Key, at: Instant) {
        if self.queued.contains(&key) || self.again.contains(&key) {
            return;
        }
        match self.due.get(&key) {
            Some(due) if *due <= at => return,
            Some(due) => {
                self.delayed.remove(&(*due, key.clone()));
            }
            None => {}
        }
        self.due.insert(key.clone(), at);
        self.delayed.insert((at, key));
    }

    /// The next object to reconcile at `now`, marked active until [`WorkQueue::done`].
    pub fn pop(&mut self, now: Instant) -> Option<Key> {
        self.promote(now);
        let namespace = self.turns.pop_front()?;
        let names = self.ready.get_mut(&namespace)?;
        let name = names.pop_front()?;
        if names.is_empty() {
            self.ready.remove(&namespace);
        } else {
            self.turns.push_back(namespace.clone());
        }
        let key = Key { namespace, name };
        self.queued.remove(&key);
        self.active.insert(key.clone());
        Some(key)
    }

    /// The reconcile of `key` ended; `again_at` is when it asked to be looked at again.
    pub fn done(&mut self, key: &Key, again_at: Option<Instant>) {
        self.active.remove(key);
        if self.again.remove(key) {
            self.add(key.clone());
        } else if let Some(at) = again_at {
            self.add_at(key.clone(), at);
        }
    }

    /// Drops a delayed add of `key` (its object is gone).
    pub fn forget(&mut self, key: &Key) {
        if let Some(at) = self.due.remove(key) {
            self.delayed.remove(&(at, key.clone()));
        }
    }

    /// When the earliest delayed add is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.delayed.first().map(|(at, _)| *at)
    }

    /// Objects ready now (not counting delayed or active ones).
    pub fn ready_len(&self) -> usize {
        self.queued.len()
    }

    fn promote(&mut self, now: Instant) {
        while let Some((at, _)) = self.delayed.first()
            && *at <= now
        {
            if let Some((_, key)) = self.delayed.pop_first() {
                self.due.remove(&key);
                self.add(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(ns: &str, name: &str) -> Key {
        Key::new(ns, name)
    }

    fn drain(q: &mut WorkQueue, now: Instant) -> Vec<Key> {
        let mut out = Vec::new();
        while let Some(k) = q.pop(now) {
            q.done(&k, None);
            out.push(k);
        }
        out
    }

    #[test]
    fn an_object_is_queued_once_however_many_events_name_it() {
        let mut q = WorkQueue::default();
        let now = Instant::now();
        for _ in 0..5 {
            q.add(key("a", "x"));
        }
        assert_eq!(q.ready_len(), 1);
        assert_eq!(drain(&mut q, now), vec![key("a", "x")]);
    }

    #[test]
    fn a_backlog_in_one_namespace_does_not_delay_another() {
        let mut q = WorkQueue::default();
        let now = Instant::now();
        for i in 0..10_000 {
            q.add(key("a", &format!("e{i}")));
        }
        if let Some(k) = q.pop(now) {
            q.done(&k, None);
        }
        q.add(key("b", "new"));
        // One turn for namespace a's current head at most, then b.
        let next: Vec<Key> = (0..2).filter_map(|_| q.pop(now)).collect();
        assert!(next.contains(&key("b", "new")), "{next:?}");
    }

    #[test]
    fn namespaces_take_turns_in_order_within_each() {
        let mut q = WorkQueue::default();
        let now = Instant::now();
        for name in ["1", "2", "3"] {
            q.add(key("a", name));
        }
        q.add(key("b", "1"));
        let order: Vec<String> = drain(&mut q, now)
            .into_iter()
            .map(|k| format!("{}/{}", k.namespace, k.name))
            .collect();
        assert_eq!(order, ["a/1", "b/1", "a/2", "a/3"]);
    }

    #[test]
    fn an_object_added_while_active_runs_again_after_and_never_twice_at_once() {
        let mut q = WorkQueue::default();
        let now = Instant::now();
        q.add(key("a", "x"));
        let k = q.pop(now).expect("queued");
        q.add(key("a", "x"));
        assert_eq!(q.pop(now), None, "must not run while active");
        q.done(&k, None);
        assert_eq!(q.pop(now), Some(key("a", "x")));
    }

    #[test]
    fn delayed_adds_wait_and_the_earliest_wins() {
        let mut q = WorkQueue::default();
        let now = Instant::now();
        let s = Duration::from_secs;
        q.add_at(key("a", "x"), now + s(10));
        q.add_at(key("a", "x"), now + s(5));
        q.add_at(key("a", "x"), now + s(20));
        assert_eq!(q.next_due(), Some(now + s(5)));
        assert_eq!(q.pop(now + s(4)), None);
        assert_eq!(q.pop(now + s(5)), Some(key("a", "x")));
        assert_eq!(q.next_due(), None);
    }

    #[test]
    fn an_immediate_add_supersedes_a_delayed_one_and_forget_drops_it() {
        let mut q = WorkQueue::default();
        let now = Instant::now();
        q.add_at(key("a", "x"), now + Duration::from_secs(60));
        q.add(key("a", "x"));
        assert_eq!(q.next_due(), None);
        assert_eq!(drain(&mut q, now), vec![key("a", "x")]);
        q.add_at(key("a", "y"), now + Duration::from_secs(1));
        q.forget(&key("a", "y"));
        assert_eq!(q.pop(now + Duration::from_secs(2)), None);
    }

    #[test]
    fn a_requeue_asked_by_the_reconcile_is_kept() {
        let mut q = WorkQueue::default();
        let now = Instant::now();
        q.add(key("a", "x"));
        let k = q.pop(now).expect("queued");
        q.done(&k, Some(now + Duration::from_secs(3)));
        assert_eq!(q.pop(now), None);
        assert_eq!(q.pop(now + Duration::from_secs(3)), Some(key("a", "x")));
    }
}
