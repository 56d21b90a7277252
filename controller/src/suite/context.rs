//! What every suite reconcile shares: the client, metrics, the status-write throttle and the
//! go-aheads written that the cache may not show yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::events::Recorder;
use kube::Client;

use crate::cache::Caches;
use crate::lifecycle::suite::given::GoAheads;
use crate::metrics::Metrics;

/// A suite's status is written at most this often, however many children change: no write
/// storm with 1,000 cases.
pub const STATUS_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What a suite reconcile needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Event recorder.
    pub recorder: Recorder,
    /// Caches (the children of each suite).
    pub caches: Arc<Caches>,
    /// When suites' statuses were last written.
    last_write: Mutex<Writes>,
    /// Per suite uid: the go-aheads written that its children's cache has not shown yet.
    given: Mutex<HashMap<String, GoAheads>>,
}

/// When each suite's status was last written (by uid). Only writes within the last
/// [`STATUS_MIN_INTERVAL`] delay anything, so older entries (of suites long idle or deleted)
/// are dropped whenever the map has doubled since the last pruning: amortised O(1) a write.
#[derive(Default)]
struct Writes {
    at: HashMap<String, Instant>,
    prune_at: usize,
}

/// The map is never pruned below this size (pruning a tiny map buys nothing).
const PRUNE_FLOOR: usize = 64;

impl Writes {
    fn delay(&self, uid: &str, now: Instant) -> Duration {
        self.at
            .get(uid)
            .map(|t| STATUS_MIN_INTERVAL.saturating_sub(now.saturating_duration_since(*t)))
            .unwrap_or(Duration::ZERO)
    }

    fn wrote(&mut self, uid: &str, now: Instant) {
        self.at.insert(uid.to_string(), now);
        if self.at.len() >= self.prune_at {
            self.at
                .retain(|_, t| now.saturating_duration_since(*t) < STATUS_MIN_INTERVAL);
            self.prune_at = (self.at.len() * 2).max(PRUNE_FLOOR);
        }
    }
}

impl Context {
    /// A context with no writes recorded.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        caches: Arc<Caches>,
    ) -> Self {
        Context {
            client,
            metrics,
            recorder,
            caches,
            last_write: Mutex::default(),
            given: Mutex::default(),
        }
    }

    /// The go-aheads written for suite `uid` that the cache may not show yet.
    pub fn given(&self, uid: &str) -> GoAheads {
        let given = self.given.lock().unwrap_or_else(|e| e.into_inner());
        given.get(uid).cloned().unwrap_or_default()
    }

    /// Records what is still unseen of suite `uid`'s go-aheads (an empty map forgets the suite:
    /// the map holds only suites with go-aheads in flight).
    pub fn set_given(&self, uid: &str, unseen: GoAheads) {
        let mut given = self.given.lock().unwrap_or_else(|e| e.into_inner());
        if unseen.is_empty() {
            given.remove(uid);
        } else {
            given.insert(uid.to_string(), unseen);
        }
    }

    /// Records that suite `uid`'s child `name` was applied with go-ahead `value`.
    pub fn gave(&self, uid: &str, name: String, value: String) {
        let mut given = self.given.lock().unwrap_or_else(|e| e.into_inner());
        given
            .entry(uid.to_string())
            .or_default()
            .insert(name, value);
    }

    /// Time to wait before this suite's status may be written again.
    pub fn write_delay(&self, uid: &str) -> Duration {
        let writes = self.last_write.lock().unwrap_or_else(|e| e.into_inner());
        writes.delay(uid, Instant::now())
    }

    /// Records a status write of suite `uid` now.
    pub fn wrote(&self, uid: &str) {
        let mut writes = self.last_write.lock().unwrap_or_else(|e| e.into_inner());
        writes.wrote(uid, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10,000 suites written once and then deleted (or idle) leave nothing behind once as
    /// many later writes came; a fresh write still delays the next.
    #[test]
    fn write_times_of_gone_or_idle_suites_are_pruned() {
        let (mut writes, t0) = (Writes::default(), Instant::now());
        for i in 0..10_000 {
            writes.wrote(&format!("old-{i}"), t0);
        }
        let later = t0 + STATUS_MIN_INTERVAL * 2;
        for i in 0..10_000 {
            writes.wrote(&format!("new-{i}"), later);
        }
        assert!(!writes.at.keys().any(|k| k.starts_with("old-")));
        assert_eq!(writes.at.len(), 10_000);
        assert_eq!(writes.delay("old-1", later), Duration::ZERO);
        assert_eq!(writes.delay("new-1", later), STATUS_MIN_INTERVAL);
    }
}
