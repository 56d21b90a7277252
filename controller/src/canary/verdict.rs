//! What one canary run proved about a RuntimeClass: the probe's report (or why the probe could
//! not run) judged against what the class promises. Pure: the scheduler gathers the facts, this
//! module decides, naming the first check that failed.

use k8s_openapi::api::core::v1::Pod;

use crate::crd::evaluation::NetworkMode;

use super::report::{Attempt, REPORT_PREFIX, Report};

/// What the controller's listener writes to every connection, followed by the run's nonce.
pub const GREETING: &str = "crucible-canary";
/// gVisor's `/proc/version` build stamp (its `_LINUX_VERSION`); no real kernel carries it.
pub const GVISOR_VERSION: &str = "#1 SMP Sun Jan 10 15:06:54 PST 2016";
/// The unprivileged user every sandbox runs as.
const SANDBOX_ID: i64 = crate::run::pod::SANDBOX_UID;
/// Inconclusive runs in a row (a 429, a registry hiccup, an API server restart) that a verified
/// class stays verified through; after that it is unproven again.
pub const INCONCLUSIVE_TOLERATED: u32 = 3;
/// Longest piece of probe output quoted in a message (the log is the canary's, but a broken
/// sandbox could print anything).
const QUOTE_MAX: usize = 160;

/// One check, in the order the verdict makes them; the first that fails names the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    /// The RuntimeClass object exists.
    RuntimeClass,
    /// The controller could open the listener the canary connects to.
    Listener,
    /// The canary pod was created, scheduled, started and finished in time.
    Pod,
    /// The pod printed a well-formed report.
    Output,
    /// The kernel is gVisor's, not the host's.
    Kernel,
    /// `network: None`: only the loopback interface.
    Interfaces,
    /// `network: None`: the controller's listener is unreachable.
    Egress,
    /// `Allowlist`: the listener port the canary's NetworkPolicy allows is reachable.
    EgressAllowed,
    /// `Allowlist`: a listener port the NetworkPolicy does not allow is unreachable.
    EgressBlocked,
    /// With a model gateway: the gateway is reachable under the NetworkPolicy of runs with
    /// models (the unlisted port staying unreachable meanwhile).
    Gateway,
    /// No service-account token is mounted.
    ServiceAccountToken,
    /// uid and gid 65534.
    Uid,
    /// The root filesystem is mounted read-only.
    ReadOnlyRoot,
    /// No effective capabilities.
    Capabilities,
}

impl Check {
    /// Every check, in order.
    pub const ALL: [Check; 14] = [
        Check::RuntimeClass,
        Check::Listener,
        Check::Pod,
        Check::Output,
        Check::Kernel,
        Check::Interfaces,
        Check::Egress,
        Check::EgressAllowed,
        Check::EgressBlocked,
        Check::Gateway,
        Check::ServiceAccountToken,
        Check::Uid,
        Check::ReadOnlyRoot,
        Check::Capabilities,
    ];

    /// The name in queue reasons and in the metric's `check` label.
    pub fn name(self) -> &'static str {
        match self {
            Check::RuntimeClass => "runtime-class",
            Check::Listener => "listener",
            Check::Pod => "pod",
            Check::Output => "output",
            Check::Kernel => "kernel",
            Check::Interfaces => "interfaces",
            Check::Egress => "egress",
            Check::EgressAllowed => "egress-allowed",
            Check::EgressBlocked => "egress-blocked",
            Check::Gateway => "gateway",
            Check::ServiceAccountToken => "service-account-token",
            Check::Uid => "uid",
            Check::ReadOnlyRoot => "read-only-root",
            Check::Capabilities => "capabilities",
        }
    }

    /// The PascalCase condition reason.
    pub fn reason(self) -> &'static str {
        match self {
            Check::RuntimeClass => "RuntimeClass",
            Check::Listener => "Listener",
            Check::Pod => "Pod",
            Check::Output => "Output",
            Check::Kernel => "Kernel",
            Check::Interfaces => "Interfaces",
            Check::Egress => "Egress",
            Check::EgressAllowed => "EgressAllowed",
            Check::EgressBlocked => "EgressBlocked",
            Check::Gateway => "Gateway",
            Check::ServiceAccountToken => "ServiceAccountToken",
            Check::Uid => "Uid",
            Check::ReadOnlyRoot => "ReadOnlyRoot",
            Check::Capabilities => "Capabilities",
        }
    }
}

/// What is known about one RuntimeClass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not proven yet (first run, or the RuntimeClass changed since): admission waits.
    Pending(String),
    /// Every check passed; what was proven.
    Verified(String),
    /// The first check that failed, and what was seen.
    Failed {
        /// The check.
        check: Check,
        /// What was seen.
        message: String,
    },
    /// Deliberately not checked (canary disabled, or a class the canary cannot run): admission
    /// does not wait for it.
    Unchecked {
        /// PascalCase condition reason, e.g. `Disabled`.
        reason: &'static str,
        /// Why.
        message: String,
    },
}

impl Verdict {
    fn failed(check: Check, message: impl Into<String>) -> Self {
        Verdict::Failed {
            check,
            message: message.into(),
        }
    }
}

/// Steps before the probe reports anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Reading the RuntimeClass.
    RuntimeClass,
    /// Opening the listener.
    Listener,
    /// Creating, scheduling, running the pod, reading its log.
    Pod,
}

/// What the runner saw of one canary run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The pod ran to completion.
    Ran {
        /// The (bounded) log of the probe container.
        log: String,
        /// Its exit code, when the pod status gives one.
        exit_code: Option<i32>,
    },
    /// A step failed before the probe could report.
    NotRun {
        /// Which step.
        step: Stage,
        /// Why, for people.
        message: String,
    },
}

/// What the RuntimeClass promises, and what this run was set up with.
#[derive(Clone, Debug)]
pub struct Expectation<'a> {
    /// The network mode the class serves.
    pub network: NetworkMode,
    /// `host:port` of the controller's listener; the only port the canary's NetworkPolicy
    /// allows with `Allowlist`, and unreachable with `None`.
    pub listener: &'a str,
    /// `host:port` of a second listener port that no NetworkPolicy rule allows (`Allowlist`).
    pub unlisted: &'a str,
    /// `host:port` of the model gateway (`Allowlist`, with a gateway): the canary's pod has the
    /// NetworkPolicy of runs with models too, so it must reach it.
    pub gateway: Option<&'a str>,
    /// The nonce the listener greets with in this run.
    pub nonce: &'a str,
    /// The controller's own `/proc/version`, if readable: a sandbox must not show it.
    pub host_kernel: Option<&'a str>,
}

/// Judges one canary run: `Verified` only when every check passed, else the first failure.
pub fn judge(expect: &Expectation<'_>, outcome: &Observation) -> Verdict {
    let (log, exit_code) = match outcome {
        Observation::NotRun { step, message } => {
            let check = match step {
                Stage::RuntimeClass => Check::RuntimeClass,
                Stage::Listener => Check::Listener,
                Stage::Pod => Check::Pod,
            };
            return Verdict::failed(check, message.clone());
        }
        Observation::Ran { log, exit_code } => (log, exit_code),
    };
    let report = match parse(log) {
        Ok(report) => report,
        Err(why) => {
            let exit = exit_code.map_or(String::new(), |c| format!(" (exit code {c})"));
            return Verdict::failed(Check::Output, format!("{why}{exit}"));
        }
    };
    match check_report(expect, &report) {
        Err(verdict) => verdict,
        Ok(proven) => Verdict::Verified(proven),
    }
}

/// The report from the last report line of `log`.
fn parse(log: &str) -> Result<Report, String> {
    let Some(line) = log
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(REPORT_PREFIX))
    else {
        let tail = log.trim();
        let start = tail.len().saturating_sub(QUOTE_MAX);
        let start = (start..=tail.len())
            .find(|i| tail.is_char_boundary(*i))
            .unwrap_or(tail.len());
        return Err(format!(
            "the canary printed no `{}` line; its log ends with {:?}",
            REPORT_PREFIX.trim(),
            &tail[start..]
        ));
    };
    serde_json::from_str(line).map_err(|e| format!("the canary's report is not valid: {e}"))
}

fn check_report(expect: &Expectation<'_>, r: &Report) -> Result<String, Verdict> {
    let mut proven = Vec::new();
    let kernel = r.kernel.trim();
    if !kernel.contains(GVISOR_VERSION) {
        return Err(Verdict::failed(
            Check::Kernel,
            format!("the sandbox runs kernel {:?}, not gVisor's", quote(kernel)),
        ));
    }
    if expect.host_kernel.is_some_and(|host| host.trim() == kernel) {
        return Err(Verdict::failed(
            Check::Kernel,
            format!(
                "the sandbox shows the controller's own kernel {:?}",
                quote(kernel)
            ),
        ));
    }
    proven.push("gVisor's kernel".to_string());
    match expect.network {
        NetworkMode::None => {
            if r.interfaces != ["lo"] {
                let shown: Vec<&str> = r.interfaces.iter().take(8).map(|i| quote(i)).collect();
                return Err(Verdict::failed(
                    Check::Interfaces,
                    format!("network interfaces {shown:?}; a sandbox without network has only lo"),
                ));
            }
            proven.push("only lo".into());
            let attempt = attempt(r, expect.listener)?;
            if attempt.connected {
                return Err(Verdict::failed(
                    Check::Egress,
                    format!(
                        "connected to the controller's listener {}: a sandbox without network reached it",
                        expect.listener
                    ),
                ));
            }
            proven.push(format!("no connection to {}", expect.listener));
        }
        NetworkMode::Allowlist => {
            let allowed = attempt(r, expect.listener)?;
            let greeting = format!("{GREETING} {}", expect.nonce);
            if !allowed.connected {
                let why = allowed.error.as_deref().unwrap_or("no error given");
                return Err(Verdict::failed(
                    Check::EgressAllowed,
                    format!(
                        "cannot connect to {}, which the canary's NetworkPolicy allows: {}",
                        expect.listener,
                        quote(why)
                    ),
                ));
            }
            if allowed.read.trim() != greeting {
                return Err(Verdict::failed(
                    Check::EgressAllowed,
                    format!(
                        "connected to {} but read {:?}, not this controller's greeting",
                        expect.listener,
                        quote(allowed.read.trim())
                    ),
                ));
            }
            let blocked = attempt(r, expect.unlisted)?;
            if blocked.connected {
                return Err(Verdict::failed(
                    Check::EgressBlocked,
                    format!(
                        "connected to {}, which the canary's NetworkPolicy does not allow: egress rules are not enforced (no NetworkPolicy engine?)",
                        expect.unlisted
                    ),
                ));
            }
            proven.push(format!(
                "egress to {} (allowed) but not to {}",
                expect.listener, expect.unlisted
            ));
            if let Some(gateway) = expect.gateway {
                let reached = attempt(r, gateway)?;
                if !reached.connected {
                    let why = reached.error.as_deref().unwrap_or("no error given");
                    return Err(Verdict::failed(
                        Check::Gateway,
                        format!(
                            "cannot connect to the model gateway at {gateway}, which the NetworkPolicy of runs with models allows: {}",
                            quote(why)
                        ),
                    ));
                }
                proven.push(format!("the model gateway at {gateway} answers"));
            }
        }
    }
    if r.token {
        return Err(Verdict::failed(
            Check::ServiceAccountToken,
            "a service-account token is mounted in the sandbox",
        ));
    }
    proven.push("no service-account token".into());
    if (r.uid, r.gid) != (SANDBOX_ID, SANDBOX_ID) {
        return Err(Verdict::failed(
            Check::Uid,
            format!(
                "runs as uid {} gid {}, not {SANDBOX_ID}:{SANDBOX_ID}",
                r.uid, r.gid
            ),
        ));
    }
    proven.push(format!("uid {SANDBOX_ID}"));
    if !r.root_read_only {
        return Err(Verdict::failed(
            Check::ReadOnlyRoot,
            "the root filesystem is mounted read-write",
        ));
    }
    proven.push("read-only root".into());
    if u64::from_str_radix(r.cap_eff.trim(), 16) != Ok(0) {
        return Err(Verdict::failed(
            Check::Capabilities,
            format!(
                "effective capabilities {:?}, expected none",
                quote(r.cap_eff.trim())
            ),
        ));
    }
    proven.push("no capabilities".into());
    Ok(proven.join(", "))
}

/// The probe's attempt to connect to `target`; a report without it is malformed.
fn attempt<'r>(r: &'r Report, target: &str) -> Result<&'r Attempt, Verdict> {
    r.connect.get(target).ok_or_else(|| {
        Verdict::failed(
            Check::Output,
            format!("the canary did not report a connection attempt to {target}"),
        )
    })
}

/// At most [`QUOTE_MAX`] bytes of `text`, cut on a character boundary.
fn quote(text: &str) -> &str {
    let mut end = text.len().min(QUOTE_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What stops a canary pod that has not finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodProblem {
    /// It never will run here: no node takes it (past the scheduling grace), or its
    /// container cannot be created. The sandbox is not usable.
    Fatal(String),
    /// Its image could not be pulled: a registry hiccup proves nothing about the sandbox.
    Transient(String),
}

/// Why a pod that has not finished never will (see [`PodProblem`]); `None` while it may
/// still run. An unschedulable pod counts only once `patience_over` (a node pool that scales
/// from zero gets the scheduling grace to bring a node).
pub fn pod_problem(pod: &Pod, patience_over: bool) -> Option<PodProblem> {
    /// Waiting reasons that do not resolve by waiting and are the node's or the spec's.
    const STUCK: [&str; 5] = [
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    ];
    /// Waiting reasons of a registry that did not serve the image this time.
    const PULL: [&str; 2] = ["ErrImagePull", "ImagePullBackOff"];
    let status = pod.status.as_ref()?;
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(c) = unschedulable.filter(|_| patience_over) {
        return Some(PodProblem::Fatal(format!(
            "the canary pod cannot be scheduled: {}",
            c.message.as_deref().unwrap_or("no message")
        )));
    }
    status.container_statuses.iter().flatten().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        let message = || {
            format!(
                "the canary container cannot start: {reason}: {}",
                waiting.message.as_deref().unwrap_or("no message")
            )
        };
        if STUCK.contains(&reason) {
            Some(PodProblem::Fatal(message()))
        } else if PULL.contains(&reason) {
            Some(PodProblem::Transient(message()))
        } else {
            None
        }
    })
}

/// What to record after a run: a conclusive verdict as it is. An inconclusive run (`Err`:
/// the API server or the registry failed, nothing about the sandbox was seen) keeps the last
/// verdict: a failed class stays held, a class known missing stays missing, a verified class
/// stays verified through [`INCONCLUSIVE_TOLERATED`] of them in a row and is pending (held,
/// never "missing") after that; a pending class learns why it is still unproven. `streak`
/// counts the inconclusive runs in a row, this one included; `None` records nothing.
pub fn settle(
    last: Option<&Verdict>,
    run: Result<Verdict, String>,
    streak: u32,
) -> Option<Verdict> {
    let why = match run {
        Ok(verdict) => return Some(verdict),
        Err(why) => why,
    };
    match last {
        Some(Verdict::Verified(_)) if streak <= INCONCLUSIVE_TOLERATED => None,
        Some(Verdict::Verified(_) | Verdict::Pending(_)) => Some(Verdict::Pending(format!(
            "the canary could not prove the sandbox ({streak} run(s) in a row): {why}"
        ))),
        _ => None,
    }
}

/// Whether the pod has run to its end.
pub fn pod_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// A one-line account of a pod that did not finish, for a timeout message.
pub fn describe(pod: &Pod) -> String {
    let Some(status) = pod.status.as_ref() else {
        return "no status yet".into();
    };
    let mut parts = vec![format!(
        "phase {}",
        status.phase.as_deref().unwrap_or("unknown")
    )];
    for c in status.container_statuses.iter().flatten() {
        if let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            parts.push(format!(
                "container {} waiting ({})",
                c.name,
                waiting.reason.as_deref().unwrap_or("no reason")
            ));
        }
    }
    parts.join(", ")
}

/// The exit code of the pod's first terminated container.
pub fn exit_code(pod: &Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
mod tests;
