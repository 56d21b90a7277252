//! Pods this controller created that its pod cache has not shown yet (the Job controller's
//! "expectations"). Until the watch delivers such a pod, the cache cannot be trusted for its
//! Evaluation: planning from it would take a just-created run for a lost one and free its
//! admission.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long an expectation is trusted: a pod created and deleted again before the watch saw
/// it would otherwise hold its Evaluation back forever.
pub const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// Expected pods by Evaluation uid: pod name and when it was created.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, (String, Instant)>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pod `pod` of Evaluation `uid` was created at `now`.
    pub fn expect(&self, uid: &str, pod: &str, now: Instant) {
        self.lock().insert(uid.to_string(), (pod.to_string(), now));
    }

    /// The cache now holds pod `pod` of Evaluation `uid`.
    pub fn observed(&self, uid: &str, pod: &str) {
        let mut pending = self.lock();
        if pending.get(uid).is_some_and(|(name, _)| name == pod) {
            pending.remove(uid);
        }
    }

    /// Whether the cache still lacks a pod created for `uid` (within [`EXPECTATION_TTL`]).
    pub fn awaited(&self, uid: &str, now: Instant) -> bool {
        let mut pending = self.lock();
        match pending.get(uid) {
            Some((_, at)) if now.duration_since(*at) < EXPECTATION_TTL => true,
            Some(_) => {
                pending.remove(uid);
                false
            }
            None => false,
        }
    }

    /// Evaluation `uid` is gone.
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expected_pod_is_awaited_until_seen_or_expired() {
        let e = Expectations::default();
        let now = Instant::now();
        e.expect("u", "pod-1", now);
        assert!(e.awaited("u", now));
        e.observed("u", "other");
        assert!(e.awaited("u", now), "another pod does not satisfy it");
        e.observed("u", "pod-1");
        assert!(!e.awaited("u", now));
        e.expect("u", "pod-2", now);
        assert!(!e.awaited("u", now + EXPECTATION_TTL));
    }
}
