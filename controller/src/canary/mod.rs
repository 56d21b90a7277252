//! The sandbox canary: before the controller admits a run, a canary pod under the run's
//! RuntimeClass proves from inside that the sandbox is what the class promises (gVisor's
//! kernel, no network or only the allowlist, no token, uid 65534, read-only root, no
//! capabilities). Until it has, or once it failed, runs of that class wait in the queue with
//! `SandboxUnverified: <class>: <check>: …`.
//!
//! - [`verdict`]: the pure judgement of one canary run.
//! - [`probe`]: the canary pod and NetworkPolicy (the evaluation pod builders).
//! - [`report`]: the probe the pod runs (`crucible canary-probe`) and its report.
//! - [`status`]: the visible record, the ConfigMap `crucible-sandbox`. Pure.
//! - [`scheduler`]: runs the canaries (at start, on a schedule, on RuntimeClass changes).
//! - [`SandboxVerdicts`] (here): the verdicts, shared with every reconcile through the admission hold.

pub mod classes;
mod listeners;
pub mod probe;
pub mod report;
pub mod scheduler;
pub mod status;
pub mod verdict;

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::config::{CanarySettings, Config};
use crate::crd::conditions::{Status, set_condition};
use crate::crd::evaluation::NetworkMode;

pub use verdict::{Check, Verdict};

/// Type of the condition the canary keeps per RuntimeClass.
pub const CONDITION: &str = "SandboxVerified";
/// Prefix of the queue reason of a held run.
pub const HOLD_REASON: &str = "SandboxUnverified";

/// A RuntimeClass the controller uses, and what it is expected to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// RuntimeClass name.
    pub class: String,
    /// The network mode it serves; `None` for a class the canary does not run.
    pub network: Option<NetworkMode>,
}

/// Every RuntimeClass the controller uses, with what the canary makes of it: the class of
/// `network: None` always, the Allowlist class unless `--canary-allowlist=false`, the GPU
/// class never (a canary pod there would need a GPU).
pub fn targets(config: &Config, settings: &CanarySettings) -> Vec<(Target, Verdict)> {
    let disabled = |why: &str| Verdict::Unchecked {
        reason: "Disabled",
        message: why.to_string(),
    };
    let mut out: Vec<(Target, Verdict)> = Vec::new();
    let mut add = |class: &str, network: Option<NetworkMode>, verdict: Verdict| {
        if out.iter().all(|(t, _)| t.class != class) {
            out.push((
                Target {
                    class: class.to_string(),
                    network,
                },
                verdict,
            ));
        }
    };
    let pending = || Verdict::Pending("the sandbox canary has not reported yet".into());
    if !settings.enabled {
        let why = "the sandbox canary is disabled (--sandbox-canary=false): nothing proves this sandbox on this cluster";
        add(&config.runtime_class, None, disabled(why));
        add(&config.allowlist_runtime_class, None, disabled(why));
    } else {
        add(&config.runtime_class, Some(NetworkMode::None), pending());
        if settings.allowlist {
            add(
                &config.allowlist_runtime_class,
                Some(NetworkMode::Allowlist),
                pending(),
            );
        } else {
            add(
                &config.allowlist_runtime_class,
                None,
                disabled(
                    "not proven (--canary-allowlist=false): Allowlist runs are admitted without a canary",
                ),
            );
        }
    }
    add(
        &config.gpu_runtime_class,
        None,
        Verdict::Unchecked {
            reason: "NotChecked",
            message: "the canary does not run on GPU nodes: GPU runs are admitted without a canary"
                .into(),
        },
    );
    out
}

/// One RuntimeClass's verdict and its condition (which keeps the last transition time).
#[derive(Clone, Debug)]
struct Entry {
    verdict: Verdict,
    condition: Vec<Condition>,
}

/// The verdicts of every RuntimeClass the controller uses, shared by the canary scheduler (which
/// records them) and every reconcile (which asks [`SandboxVerdicts::hold`]).
pub struct SandboxVerdicts {
    classes: Mutex<BTreeMap<String, Entry>>,
    allow_unsandboxed: bool,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for SandboxVerdicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxVerdicts")
            .field("classes", &self.entries())
            .finish_non_exhaustive()
    }
}

impl SandboxVerdicts {
    /// The verdicts `initial` (see [`targets`]). `wake` is called whenever a class stops
    /// holding admission, so that the runs it held are looked at again. With
    /// `allow_unsandboxed`, a missing RuntimeClass holds nothing: such runs run unsandboxed,
    /// as that flag allows, and say so in their status.
    pub fn new(
        initial: impl IntoIterator<Item = (String, Verdict)>,
        allow_unsandboxed: bool,
        wake: impl Fn() + Send + Sync + 'static,
        now: &Time,
    ) -> Self {
        let classes = initial
            .into_iter()
            .map(|(class, verdict)| {
                let mut condition = Vec::new();
                let (status, reason, message) = condition_of(&verdict);
                set_condition(
                    &mut condition,
                    CONDITION,
                    status,
                    reason,
                    &message,
                    None,
                    now,
                );
                (class, Entry { verdict, condition })
            })
            .collect();
        SandboxVerdicts {
            classes: Mutex::new(classes),
            allow_unsandboxed,
            wake: Box::new(wake),
        }
    }

    /// A sandbox that holds nothing (tests, and tools that never admit).
    pub fn unchecked() -> Self {
        SandboxVerdicts::new([], false, || {}, &Time(jiff::Timestamp::UNIX_EPOCH))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        // The map is replaced entry by entry: a panic elsewhere cannot leave it half-written.
        self.classes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why runs of RuntimeClass `class` may not be admitted now, as their queue reason;
    /// `None` when they may.
    pub fn hold(&self, class: &str) -> Option<String> {
        let classes = self.lock();
        hold_reason(class, &classes.get(class)?.verdict, self.allow_unsandboxed)
    }

    /// The last verdict recorded for `class`.
    pub fn verdict(&self, class: &str) -> Option<Verdict> {
        self.lock().get(class).map(|e| e.verdict.clone())
    }

    /// Records `verdict` for `class`; returns whether this released the class (it held
    /// admission before and does not now). Calls `wake` when what holds the class's runs
    /// changed (released, held, or another check failed), so that their queue reasons follow;
    /// a new message of the same failed check wakes nothing.
    pub fn record(&self, class: &str, verdict: Verdict, now: &Time) -> bool {
        let (released, changed) = {
            let mut classes = self.lock();
            let Some(entry) = classes.get_mut(class) else {
                return false;
            };
            let before = self.holding(&entry.verdict);
            let (status, reason, message) = condition_of(&verdict);
            set_condition(
                &mut entry.condition,
                CONDITION,
                status,
                reason,
                &message,
                None,
                now,
            );
            entry.verdict = verdict;
            let after = self.holding(&entry.verdict);
            (before.is_some() && after.is_none(), before != after)
        };
        if changed {
            (self.wake)();
        }
        released
    }

    /// What holds runs under `verdict`, without its message: `None`, `pending`, or the check.
    fn holding(&self, verdict: &Verdict) -> Option<&'static str> {
        hold_reason("", verdict, self.allow_unsandboxed)?;
        Some(match verdict {
            Verdict::Failed { check, .. } => check.name(),
            _ => "pending",
        })
    }

    /// Every class with its verdict and condition, by name.
    pub fn entries(&self) -> Vec<(String, Verdict, Condition)> {
        self.lock()
            .iter()
            .filter_map(|(class, e)| {
                let condition = e.condition.first()?.clone();
                Some((class.clone(), e.verdict.clone(), condition))
            })
            .collect()
    }
}

/// The queue reason of a run of `class` under `verdict`, if it must wait.
fn hold_reason(class: &str, verdict: &Verdict, allow_unsandboxed: bool) -> Option<String> {
    match verdict {
        Verdict::Verified(_) | Verdict::Unchecked { .. } => None,
        Verdict::Failed {
            check: Check::RuntimeClass,
            ..
        } if allow_unsandboxed => None,
        Verdict::Pending(why) => Some(format!("{HOLD_REASON}: {class}: pending: {why}")),
        Verdict::Failed { check, message } => Some(format!(
            "{HOLD_REASON}: {class}: {}: {message}",
            check.name()
        )),
    }
}

/// Status, reason and message of the `SandboxVerified` condition for `verdict`.
fn condition_of(verdict: &Verdict) -> (Status, &'static str, String) {
    match verdict {
        Verdict::Pending(why) => (Status::Unknown, "Pending", why.clone()),
        Verdict::Verified(what) => (Status::True, "Verified", what.clone()),
        Verdict::Failed { check, message } => (
            Status::False,
            check.reason(),
            format!("{}: {message}", check.name()),
        ),
        Verdict::Unchecked { reason, message } => (Status::Unknown, reason, message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn settings(enabled: bool, allowlist: bool) -> CanarySettings {
        CanarySettings {
            enabled,
            allowlist,
            interval: Duration::from_secs(600),
            timeout: Duration::from_secs(120),
            schedule_grace: Duration::from_secs(300),
            image: "localhost/crucible/controller:dev".into(),
            listen: "10.88.0.1".parse().expect("ip"),
        }
    }

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).expect("timestamp"))
    }

    fn sandbox(settings: &CanarySettings, wakes: &Arc<AtomicUsize>) -> SandboxVerdicts {
        let wakes = wakes.clone();
        let initial = targets(&Config::default(), settings)
            .into_iter()
            .map(|(t, v)| (t.class, v));
        SandboxVerdicts::new(
            initial,
            false,
            move || {
                wakes.fetch_add(1, Ordering::SeqCst);
            },
            &at(0),
        )
    }

    #[test]
    fn the_classes_in_use_and_what_is_proven_of_each() {
        let classes = |s: &CanarySettings| -> Vec<(String, Option<NetworkMode>)> {
            targets(&Config::default(), s)
                .into_iter()
                .map(|(t, _)| (t.class, t.network))
                .collect()
        };
        assert_eq!(
            classes(&settings(true, true)),
            [
                ("gvisor".to_string(), Some(NetworkMode::None)),
                ("gvisor-net".to_string(), Some(NetworkMode::Allowlist)),
                ("gvisor-nvproxy".to_string(), None),
            ]
        );
        assert_eq!(classes(&settings(true, false))[1].1, None);
        assert!(
            classes(&settings(false, true))
                .iter()
                .all(|(_, n)| n.is_none())
        );
    }

    #[test]
    fn runs_wait_until_their_class_is_verified_and_the_release_wakes_them() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let s = sandbox(&settings(true, true), &wakes);
        let pending = s.hold("gvisor").expect("held before the first canary");
        assert!(
            pending.starts_with("SandboxUnverified: gvisor: pending: "),
            "{pending}"
        );
        assert_eq!(
            s.hold("gvisor-nvproxy"),
            None,
            "the GPU class is not checked"
        );
        let failed = Verdict::Failed {
            check: Check::Kernel,
            message: "the sandbox runs kernel \"Linux version 6.1\", not gVisor's".into(),
        };
        assert!(!s.record("gvisor", failed, &at(10)));
        assert_eq!(
            s.hold("gvisor").as_deref(),
            Some(
                "SandboxUnverified: gvisor: kernel: the sandbox runs kernel \"Linux version 6.1\", not gVisor's"
            )
        );
        assert!(
            s.hold("gvisor-net").is_some(),
            "each class on its own verdict"
        );
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            1,
            "held runs learn the failed check"
        );
        let again = Verdict::Failed {
            check: Check::Kernel,
            message: "another message".into(),
        };
        assert!(!s.record("gvisor", again, &at(15)));
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            1,
            "the same check again wakes nothing"
        );
        assert!(s.record("gvisor", Verdict::Verified("all".into()), &at(20)));
        assert_eq!(s.hold("gvisor"), None);
        assert_eq!(wakes.load(Ordering::SeqCst), 2, "the release wakes");
        assert!(!s.record("gvisor", Verdict::Verified("again".into()), &at(30)));
        assert_eq!(wakes.load(Ordering::SeqCst), 2);
        let entries = s.entries();
        let (_, _, condition) = entries
            .iter()
            .find(|(c, _, _)| c == "gvisor")
            .expect("gvisor");
        assert_eq!(
            (
                condition.status.as_str(),
                condition.reason.as_str(),
                condition.message.as_str()
            ),
            ("True", "Verified", "again")
        );
        assert_eq!(condition.last_transition_time, at(20));
    }

    #[test]
    fn a_disabled_canary_holds_nothing_and_says_so() {
        let s = sandbox(&settings(false, true), &Arc::default());
        assert_eq!(s.hold("gvisor"), None);
        assert_eq!(s.hold("gvisor-net"), None);
        let entries = s.entries();
        assert!(entries.iter().all(|(_, _, c)| c.status == "Unknown"));
        assert_eq!(entries[0].2.reason, "Disabled");
        assert!(entries[0].2.message.contains("--sandbox-canary=false"));
    }

    #[test]
    fn allow_unsandboxed_lets_a_missing_runtime_class_through_but_nothing_else() {
        let s = SandboxVerdicts::new(
            [("gvisor".to_string(), Verdict::Pending("first".into()))],
            true,
            || {},
            &at(0),
        );
        let missing = Verdict::Failed {
            check: Check::RuntimeClass,
            message: "the RuntimeClass gvisor does not exist".into(),
        };
        assert!(s.record("gvisor", missing, &at(1)));
        assert_eq!(s.hold("gvisor"), None);
        let runc = Verdict::Failed {
            check: Check::Kernel,
            message: "host kernel".into(),
        };
        s.record("gvisor", runc, &at(2));
        assert!(s.hold("gvisor").is_some());
    }
}
