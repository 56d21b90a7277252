//! What every suite reconcile shares: the client, metrics, and the status-write throttle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::events::Recorder;
use kube::Client;

use crate::metrics::Metrics;
use crate::watches::Caches;

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
    /// When each suite's status was last written (by uid).
    last_write: Mutex<HashMap<String, Instant>>,
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
        }
    }

    /// Time to wait before this suite's status may be written again.
    pub fn write_delay(&self, uid: &str) -> Duration {
        let writes = self.last_write.lock().unwrap_or_else(|e| e.into_inner());
        writes
            .get(uid)
            .map(|t| STATUS_MIN_INTERVAL.saturating_sub(t.elapsed()))
            .unwrap_or(Duration::ZERO)
    }

    /// Records a status write of suite `uid` now.
    pub fn wrote(&self, uid: &str) {
        let mut writes = self.last_write.lock().unwrap_or_else(|e| e.into_inner());
        writes.insert(uid.to_string(), Instant::now());
    }
}
