//! When a reconcile looks at its object again, shared by both controllers.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use kube::ResourceExt;

use crate::error::Error;
use crate::metrics::Metrics;

/// Retry delay after a first passing error (API hiccup, conflict); it doubles with every
/// further failure of the same object ([`Backoff`]).
pub const ERROR_REQUEUE: Duration = Duration::from_secs(5);
/// Longest retry delay of an object that keeps failing.
pub const MAX_ERROR_REQUEUE: Duration = Duration::from_secs(300);

/// Retry delays of failing objects, per object: `base` doubling from the first failure in a
/// row up to [`MAX_ERROR_REQUEUE`], each cut by a random part of up to a half, so that 10,000
/// objects failing together (an API server outage) neither retry in lockstep nor every 5 s.
/// Generic over the object's key, so that this module needs nothing of the work queue's.
#[derive(Debug)]
pub struct Backoff<K> {
    /// Failures in a row, by object.
    failures: HashMap<K, u32>,
    jitter: std::collections::hash_map::RandomState,
}

impl<K> Default for Backoff<K> {
    fn default() -> Self {
        Backoff {
            failures: HashMap::new(),
            jitter: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Backoff<K> {
    /// `key`'s reconcile failed and asked to retry after `base`: the delay to use.
    pub fn failed(&mut self, key: &K, base: Duration) -> Duration {
        let failures = self.failures.entry(key.clone()).or_default();
        *failures = failures.saturating_add(1);
        let random = self
            .jitter
            .hash_one((key, *failures, std::time::Instant::now()));
        #[allow(clippy::cast_precision_loss)] // a fraction: precision does not matter
        let fraction = random as f64 / u64::MAX as f64;
        backoff_delay(base, *failures, fraction)
    }

    /// `key`'s reconcile succeeded (or its object is gone): the next failure starts over.
    pub fn succeeded(&mut self, key: &K) {
        self.failures.remove(key);
    }
}

/// The delay after `failures` failures in a row (1 for the first): `base · 2^(failures-1)`,
/// at most [`MAX_ERROR_REQUEUE`], less `jitter` (0 to 1) times half of it.
pub fn backoff_delay(base: Duration, failures: u32, jitter: f64) -> Duration {
    let doubled = base.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let delay = doubled.min(MAX_ERROR_REQUEUE.max(base));
    delay.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0)
}

/// When to look at an object again, as a plan says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// After this long.
    After(Duration),
    /// Only when something changes.
    AwaitChange,
}

impl Requeue {
    /// This requeue, but no later than `limit` from now.
    pub fn within(self, limit: Duration) -> Requeue {
        match self {
            Requeue::After(d) => Requeue::After(d.min(limit)),
            Requeue::AwaitChange => Requeue::After(limit),
        }
    }
}

/// The error policy of both controllers: passing errors retry after [`ERROR_REQUEUE`] (the
/// runner backs off from there, [`Backoff`]); bugs and permanent refusals wait for a change of
/// the object.
pub fn on_error(
    kind: &'static str,
    object: &impl ResourceExt,
    error: &Error,
    metrics: &Metrics,
) -> Requeue {
    tracing::warn!(kind, name = %object.name_any(), %error, "reconcile failed");
    metrics.reconcile_failure(kind, error.reason());
    if error.is_transient() {
        Requeue::After(ERROR_REQUEUE)
    } else {
        Requeue::AwaitChange
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_caps_a_delay_and_bounds_waiting_for_a_change() {
        let s = Duration::from_secs;
        assert_eq!(Requeue::After(s(30)).within(s(5)), Requeue::After(s(5)));
        assert_eq!(Requeue::After(s(3)).within(s(5)), Requeue::After(s(3)));
        assert_eq!(Requeue::AwaitChange.within(s(5)), Requeue::After(s(5)));
    }

    #[test]
    fn retries_of_a_failing_object_double_up_to_a_cap_less_their_jitter() {
        let s = Duration::from_secs;
        let delays: Vec<Duration> = (1..=8)
            .map(|n| backoff_delay(ERROR_REQUEUE, n, 0.0))
            .collect();
        assert_eq!(
            delays,
            [s(5), s(10), s(20), s(40), s(80), s(160), s(300), s(300)]
        );
        assert_eq!(backoff_delay(ERROR_REQUEUE, 3, 1.0), s(10));
        assert_eq!(backoff_delay(ERROR_REQUEUE, u32::MAX, 0.0), s(300));
        let mut backoff = Backoff::default();
        let key = ("a", "x");
        let first = backoff.failed(&key, ERROR_REQUEUE);
        let second = backoff.failed(&key, ERROR_REQUEUE);
        assert!(first <= s(5) && second >= s(5), "{first:?} {second:?}");
        backoff.succeeded(&key);
        assert!(backoff.failed(&key, ERROR_REQUEUE) <= s(5));
    }
}
