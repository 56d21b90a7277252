//! What may hold a run that its quota would admit, and in which order: the emergency stop
//! first (it covers every class), then a suite's child re-run by hand that its suite has not
//! let start yet (`parallelism`), then a sandbox the canary has not verified. A paused quota
//! is a limit ([`crate::config::Limits::paused`]), decided by the ledger like the others.

use crate::canary::SandboxVerdicts;

/// The holds that may apply to one run.
pub struct Holds<'a> {
    /// Why an emergency stop covers the run's namespace, if one does.
    pub stop: Option<&'a str>,
    /// The suite whose go-ahead the run waits for ([`crate::run::state::awaits_suite`]).
    pub suite: Option<&'a str>,
    /// The canary's verdicts.
    pub sandbox: &'a SandboxVerdicts,
    /// The RuntimeClass the run would use.
    pub runtime_class: &'a str,
}

impl Holds<'_> {
    /// The first hold that applies, as the run's queue reason; `None` when none does.
    pub fn reason(&self) -> Option<String> {
        match (self.stop, self.suite) {
            (Some(why), _) => Some(format!("EmergencyStop: {why}")),
            (None, Some(suite)) => Some(format!(
                "SuiteParallelism: re-run by hand; suite {suite} starts it when one of its \
                 spec.parallelism slots is free"
            )),
            (None, None) => self.sandbox.hold(self.runtime_class),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::canary::Verdict;

    #[test]
    fn the_emergency_stop_comes_before_a_suite_and_an_unverified_sandbox() {
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let pending = Verdict::Pending("first run".into());
        let sandbox = SandboxVerdicts::new([("gvisor".to_string(), pending)], false, || {}, &now);
        let canary = Holds {
            stop: None,
            suite: None,
            sandbox: &sandbox,
            runtime_class: "gvisor",
        };
        let held = canary.reason().expect("an unverified class holds");
        assert!(held.contains("gvisor: pending: first run"), "{held}");
        let suite = Holds {
            suite: Some("wide"),
            ..canary
        };
        let waits = suite
            .reason()
            .expect("a child re-run by hand waits for its suite");
        assert!(waits.starts_with("SuiteParallelism: "), "{waits}");
        assert!(waits.contains("suite wide"), "{waits}");
        let all = Holds {
            stop: Some("incident 7"),
            ..suite
        };
        assert_eq!(all.reason().as_deref(), Some("EmergencyStop: incident 7"));
        let unknown = Holds {
            stop: None,
            suite: None,
            sandbox: &sandbox,
            runtime_class: "a-class-the-canary-does-not-run",
        };
        assert_eq!(unknown.reason(), None);
    }
}
