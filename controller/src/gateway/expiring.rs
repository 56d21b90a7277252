//! A map of per-run entries that each carry their run's token expiry, pruned in expiry order:
//! an entry is useless once its run's tokens have expired, so memory follows the runs that can
//! still call, and pruning costs O(log n) per entry, never a scan. Pure.

use std::collections::{BTreeSet, HashMap};

/// Entries keyed by run id, each with the Unix second its tokens expire.
#[derive(Debug)]
pub struct ExpiringMap<V> {
    entries: HashMap<String, (i64, V)>,
    by_expiry: BTreeSet<(i64, String)>,
}

impl<V> Default for ExpiringMap<V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }
}

impl<V> ExpiringMap<V> {
    /// The entry of `run` (created with `make` if absent, expiring at `expires`), after
    /// dropping every entry expired by `now`.
    pub fn entry(&mut self, run: &str, expires: i64, now: i64, make: impl FnOnce() -> V) -> &mut V {
        self.prune(now);
        if !self.entries.contains_key(run) {
            self.by_expiry.insert((expires, run.to_string()));
        }
        &mut self
            .entries
            .entry(run.to_string())
            .or_insert_with(|| (expires, make()))
            .1
    }

    /// The entry of `run`, if any.
    pub fn get_mut(&mut self, run: &str) -> Option<&mut V> {
        self.entries.get_mut(run).map(|(_, v)| v)
    }

    /// Whether `run` has an entry.
    pub fn contains(&self, run: &str) -> bool {
        self.entries.contains_key(run)
    }

    /// Removes the entry of `run`.
    pub fn remove(&mut self, run: &str) -> Option<V> {
        let (expires, value) = self.entries.remove(run)?;
        self.by_expiry.remove(&(expires, run.to_string()));
        Some(value)
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops every entry expired by `now`.
    pub fn prune(&mut self, now: i64) {
        while let Some((until, _)) = self.by_expiry.first()
            && *until <= now
        {
            if let Some((_, gone)) = self.by_expiry.pop_first() {
                self.entries.remove(&gone);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_entries_go_when_another_arrives() {
        let mut map = ExpiringMap::default();
        *map.entry("a", 10, 0, || 0) += 1;
        *map.entry("a", 10, 5, || 0) += 1;
        map.entry("b", 30, 5, || 0);
        assert_eq!(map.get_mut("a").copied(), Some(2));
        map.entry("c", 40, 10, || 0);
        assert!(!map.contains("a"));
        assert_eq!(map.len(), 2);
        assert_eq!(map.remove("b"), Some(0));
        assert_eq!(map.len(), 1);
    }
}
