//! The ledger of admitted runs and the per-namespace queues, and the decision whether a run
//! may start. Pure; [`super::Gate`] holds it behind a mutex for the controller.
//!
//! # Guarantees
//! - Every decision is made against the ledger, which records an admission at the moment it
//!   is decided. Two reconciles can therefore never both take the last slot, and a lagging
//!   cache cannot hide an admission the controller itself made.
//! - A run is admitted only if, with it, its namespace's usage stays within the namespace's
//!   limits and the total stays within the controller-wide limits.
//! - Admission is per run, not per Evaluation: a new run of an Evaluation that already holds
//!   an admission (spec change, rerun, a followed branch that moved) is checked like any
//!   other, and the old run keeps holding its share until its pod is gone.
//! - Within a namespace, runs are admitted in queue order: higher `crucible.dev/priority`
//!   first, then older. A run whose request can never fit its namespace's limits does not
//!   block the runs behind it.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

/// Resources one run requests (requests equal limits).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Request {
    /// Cores.
    pub cpu: f64,
    /// Bytes.
    pub memory: f64,
    /// Devices.
    pub gpu: f64,
}

/// Limits of a namespace or of the whole controller; `None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Most runs admitted at once.
    pub max_running: Option<u32>,
    /// Most cores.
    pub cpu: Option<f64>,
    /// Most bytes of memory.
    pub memory: Option<f64>,
    /// Most GPUs.
    pub gpu: Option<f64>,
    /// Admit nothing new.
    pub paused: bool,
    /// Why a figure of the quota could not be understood: admit nothing new (fail closed).
    pub invalid: Option<String>,
}

/// What is admitted now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// Runs.
    pub running: u32,
    /// Cores.
    pub cpu: f64,
    /// Bytes.
    pub memory: f64,
    /// GPUs.
    pub gpu: f64,
}

impl Usage {
    fn add(&mut self, r: &Request) {
        self.running += 1;
        self.cpu += r.cpu;
        self.memory += r.memory;
        self.gpu += r.gpu;
    }

    /// The first limit that `self + request` would exceed, as a reason.
    fn exceeds(&self, request: &Request, limits: &Limits) -> Option<String> {
        // A small tolerance: quantities are parsed into floats.
        const EPSILON: f64 = 1e-9;
        if let Some(max) = limits.max_running
            && self.running + 1 > max
        {
            return Some(format!("maxRunning {max} reached"));
        }
        let checks = [
            ("cpu", self.cpu + request.cpu, limits.cpu),
            ("memory", self.memory + request.memory, limits.memory),
            ("gpu", self.gpu + request.gpu, limits.gpu),
        ];
        checks.into_iter().find_map(|(name, total, limit)| {
            let limit = limit?;
            (total > limit * (1.0 + EPSILON) + EPSILON).then(|| {
                format!(
                    "{name} {} of {} in use",
                    round(total - request_of(name, request)),
                    round(limit)
                )
            })
        })
    }
}

fn request_of(name: &str, r: &Request) -> f64 {
    match name {
        "cpu" => r.cpu,
        "memory" => r.memory,
        _ => r.gpu,
    }
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Queue order within a namespace: priority (high first), then creation time, then name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey {
    /// `crucible.dev/priority`, negated so that higher comes first.
    pub priority: Reverse<i64>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Evaluation name.
    pub name: String,
    /// Evaluation uid.
    pub uid: String,
}

/// A run asking for admission.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Namespace.
    pub namespace: String,
    /// Queue position key (holds the Evaluation's uid: one queue place per Evaluation).
    pub key: QueueKey,
    /// The run's id (the pod label `crucible.dev/run-id`): what an admission is held by.
    pub run: String,
    /// What it requests.
    pub request: Request,
}

/// The answer to a candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start now; the ledger holds the run's resources until [`Ledger::release`].
    Admit,
    /// Never: the request alone exceeds a controller-wide limit, which no quota edit can
    /// change. The run is not queued.
    Refuse {
        /// Which limit, e.g. `cpu 64 of 32`.
        reason: String,
    },
    /// Wait in the queue.
    Wait {
        /// 1-based position in the namespace's queue.
        position: usize,
        /// Which figure is full, e.g. `QuotaExceeded: maxRunning 5 reached`.
        reason: String,
    },
}

/// An admission held by a run.
#[derive(Clone, Debug, PartialEq)]
struct Held {
    uid: String,
    namespace: String,
    request: Request,
}

/// Admitted runs and queues.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Admissions by run id.
    admitted: HashMap<String, Held>,
    /// Run ids holding an admission, by Evaluation uid.
    runs: HashMap<String, BTreeSet<String>>,
    queues: HashMap<String, BTreeSet<QueueKey>>,
    queued: HashMap<String, (String, QueueKey, Request)>,
}

impl Ledger {
    /// Usage of `namespace`, or of everything with `None`.
    pub fn usage(&self, namespace: Option<&str>) -> Usage {
        let mut usage = Usage::default();
        self.admitted
            .values()
            .filter(|h| namespace.is_none_or(|n| n == h.namespace))
            .for_each(|h| usage.add(&h.request));
        usage
    }

    /// Number of runs queued in `namespace`.
    pub fn queued(&self, namespace: &str) -> usize {
        self.queues.get(namespace).map_or(0, BTreeSet::len)
    }

    /// Whether run `run` holds an admission.
    pub fn is_admitted(&self, run: &str) -> bool {
        self.admitted.contains_key(run)
    }

    /// The runs of Evaluation `uid` that hold an admission.
    pub fn runs_of(&self, uid: &str) -> impl Iterator<Item = &str> {
        self.runs.get(uid).into_iter().flatten().map(String::as_str)
    }

    /// Records an admission found in the cluster (a live pod at controller start): no
    /// checks, no queue.
    pub fn restore(&mut self, run: &str, uid: &str, namespace: &str, request: Request) {
        self.dequeue(uid);
        self.hold(run, uid, namespace, request);
    }

    fn hold(&mut self, run: &str, uid: &str, namespace: &str, request: Request) {
        let held = Held {
            uid: uid.to_string(),
            namespace: namespace.to_string(),
            request,
        };
        self.admitted.insert(run.to_string(), held);
        self.runs
            .entry(uid.to_string())
            .or_default()
            .insert(run.to_string());
    }

    /// Decides for `candidate`: admits it (recording the admission) or queues it. Deciding
    /// again for a run already admitted admits it again without counting it twice; any other
    /// run, even of an Evaluation holding an admission, passes every check. `hold` (the
    /// emergency stop, an unverified sandbox: the whole queue reason) queues everything new.
    pub fn decide(
        &mut self,
        candidate: &Candidate,
        namespace_limits: &Limits,
        global_limits: &Limits,
        hold: Option<&str>,
    ) -> Decision {
        let uid = candidate.key.uid.clone();
        // The same run of the same Evaluation, decided again (a reconcile retried after an
        // error): admitted without counting it twice.
        if self
            .admitted
            .get(&candidate.run)
            .is_some_and(|h| h.uid == uid)
        {
            self.dequeue(&uid);
            return Decision::Admit;
        }
        let empty = Usage::default();
        if let Some(why) = empty.exceeds(&candidate.request, global_limits) {
            self.dequeue(&uid);
            return Decision::Refuse {
                reason: format!("the request alone exceeds the controller-wide limit ({why})"),
            };
        }
        self.queue(candidate);
        let position = self.position(candidate);
        let wait = |reason: String| Decision::Wait { position, reason };
        if let Some(why) = hold {
            return wait(why.to_string());
        }
        if namespace_limits.paused {
            return wait("Paused: the namespace's EvaluationQuota is paused".into());
        }
        if let Some(why) = &namespace_limits.invalid {
            return wait(format!("QuotaInvalid: {why}"));
        }
        if let Some(why) = empty.exceeds(&candidate.request, namespace_limits) {
            return wait(format!(
                "QuotaExceeded: the request alone exceeds the namespace quota ({why})"
            ));
        }
        let head = self.first_admissible(&candidate.namespace, namespace_limits);
        if head.as_ref() != Some(&candidate.key) {
            return wait("Queued: waiting behind evaluations of higher priority or older".into());
        }
        if let Some(why) = self
            .usage(Some(&candidate.namespace))
            .exceeds(&candidate.request, namespace_limits)
        {
            return wait(format!("QuotaExceeded: {why}"));
        }
        if let Some(why) = self.usage(None).exceeds(&candidate.request, global_limits) {
            return wait(format!("ControllerLimit: {why}"));
        }
        self.dequeue(&uid);
        self.hold(
            &candidate.run,
            &uid,
            &candidate.namespace,
            candidate.request,
        );
        Decision::Admit
    }

    /// Frees the admission of run `run`; returns its namespace if it held one.
    pub fn release_run(&mut self, run: &str) -> Option<String> {
        let held = self.admitted.remove(run)?;
        if let Some(runs) = self.runs.get_mut(&held.uid) {
            runs.remove(run);
            if runs.is_empty() {
                self.runs.remove(&held.uid);
            }
        }
        Some(held.namespace)
    }

    /// Frees the runs of Evaluation `uid` that `keep` rejects; returns how many were freed.
    pub fn settle(&mut self, uid: &str, keep: impl Fn(&str) -> bool) -> usize {
        let gone: Vec<String> = self
            .runs_of(uid)
            .filter(|run| !keep(run))
            .map(str::to_string)
            .collect();
        gone.iter().filter_map(|run| self.release_run(run)).count()
    }

    /// Frees every admission and the queue place of Evaluation `uid`; returns its namespace
    /// if it held either.
    pub fn release(&mut self, uid: &str) -> Option<String> {
        let queued = self.dequeue(uid);
        let runs: Vec<String> = self.runs_of(uid).map(str::to_string).collect();
        let mut namespace = None;
        for run in runs {
            namespace = self.release_run(&run).or(namespace);
        }
        namespace.or(queued)
    }

    /// Removes the run from its queue; returns its namespace if it was queued.
    pub fn dequeue(&mut self, uid: &str) -> Option<String> {
        let (ns, key, _) = self.queued.remove(uid)?;
        if let Some(queue) = self.queues.get_mut(&ns) {
            queue.remove(&key);
            if queue.is_empty() {
                self.queues.remove(&ns);
            }
        }
        Some(ns)
    }

    /// The first `n` queued runs of `namespace` (name, uid), to wake when capacity frees.
    pub fn heads(&self, namespace: &str, n: usize) -> Vec<(String, String)> {
        self.queues
            .get(namespace)
            .into_iter()
            .flatten()
            .take(n)
            .map(|k| (k.name.clone(), k.uid.clone()))
            .collect()
    }

    /// Drops the queue places of Evaluations that `keep(uid, namespace)` rejects (deleted
    /// without a reconcile). Admissions stay: they are freed when their pods are gone.
    pub fn retain_queued(&mut self, keep: impl Fn(&str, &str) -> bool) {
        let gone: Vec<String> = self
            .queued
            .iter()
            .filter(|(uid, (ns, _, _))| !keep(uid, ns))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            self.dequeue(&uid);
        }
    }

    /// Evaluation uids (with their namespace) holding an admission that `keep(uid, ns)`
    /// rejects: the ones whose pods must be looked at before their admission can be freed.
    pub fn holders_not(&self, keep: impl Fn(&str, &str) -> bool) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .admitted
            .values()
            .filter(|h| !keep(&h.uid, &h.namespace))
            .map(|h| (h.uid.clone(), h.namespace.clone()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Puts a run in its namespace's queue without deciding (used at controller start).
    pub fn queue(&mut self, c: &Candidate) {
        if let Some((ns, key, _)) = self.queued.get(&c.key.uid)
            && ns == &c.namespace
            && key == &c.key
        {
            self.queued
                .insert(c.key.uid.clone(), (ns.clone(), key.clone(), c.request));
            return;
        }
        self.dequeue(&c.key.uid);
        self.queues
            .entry(c.namespace.clone())
            .or_default()
            .insert(c.key.clone());
        self.queued.insert(
            c.key.uid.clone(),
            (c.namespace.clone(), c.key.clone(), c.request),
        );
    }

    fn position(&self, c: &Candidate) -> usize {
        self.queues
            .get(&c.namespace)
            .map_or(1, |q| q.range(..&c.key).count() + 1)
    }

    /// The first queued run of `namespace` whose request could fit its limits at all.
    fn first_admissible(&self, namespace: &str, limits: &Limits) -> Option<QueueKey> {
        let empty = Usage::default();
        self.queues
            .get(namespace)?
            .iter()
            .find(|k| {
                self.queued
                    .get(&k.uid)
                    .is_some_and(|(_, _, r)| empty.exceeds(r, limits).is_none())
            })
            .cloned()
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
