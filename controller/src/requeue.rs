//! When a reconcile looks at its object again, shared by both controllers.

use std::time::Duration;

use kube::ResourceExt;

use crate::error::Error;
use crate::metrics::Metrics;

/// Retry delay after a passing error (API hiccup, conflict).
pub const ERROR_REQUEUE: Duration = Duration::from_secs(5);

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

/// The error policy of both controllers: passing errors retry after [`ERROR_REQUEUE`]; bugs
/// and permanent refusals wait for a change of the object.
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
}
