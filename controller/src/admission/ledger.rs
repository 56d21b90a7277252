//! The ledger of admitted runs and the per-namespace queues, and the decision whether a run
//! may start. Pure; [`super::Gate`] holds it behind a mutex for the controller.
//!
//! # Guarantees
//! - Every decision is made against the ledger, which records an admission at the moment it
//!   is decided. Two reconciles can therefore never both take the last slot, and a lagging
//!   cache cannot hide an admission the controller itself made.
//! - A run is admitted only if, with it, its namespace's usage stays within the namespace's
//!   limits and the total stays within the controller-wide limits.
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
    /// Queue position key (holds the uid).
    pub key: QueueKey,
    /// What it requests.
    pub request: Request,
}

/// The answer to a candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start now; the ledger holds the run's resources until [`Ledger::release`].
    Admit,
    /// Wait in the queue.
    Wait {
        /// 1-based position in the namespace's queue.
        position: usize,
        /// Which figure is full, e.g. `QuotaExceeded: maxRunning 5 reached`.
        reason: String,
    },
}

/// Admitted runs and queues.
#[derive(Debug, Default)]
pub struct Ledger {
    admitted: HashMap<String, (String, Request)>,
    queues: HashMap<String, BTreeSet<QueueKey>>,
    queued: HashMap<String, (String, QueueKey, Request)>,
}

impl Ledger {
    /// Usage of `namespace`, or of everything with `None`.
    pub fn usage(&self, namespace: Option<&str>) -> Usage {
        let mut usage = Usage::default();
        self.admitted
            .values()
            .filter(|(ns, _)| namespace.is_none_or(|n| n == ns))
            .for_each(|(_, r)| usage.add(r));
        usage
    }

    /// Number of runs queued in `namespace`.
    pub fn queued(&self, namespace: &str) -> usize {
        self.queues.get(namespace).map_or(0, BTreeSet::len)
    }

    /// Whether `uid` holds an admission.
    pub fn is_admitted(&self, uid: &str) -> bool {
        self.admitted.contains_key(uid)
    }

    /// Records an admission found in the cluster (controller start): no checks, no queue.
    pub fn restore(&mut self, uid: &str, namespace: &str, request: Request) {
        self.dequeue(uid);
        self.admitted
            .insert(uid.to_string(), (namespace.to_string(), request));
    }

    /// Decides for `candidate`: admits it (recording the admission) or queues it. Already
    /// admitted runs are admitted again with their new request. `hold` (an emergency stop)
    /// queues everything.
    pub fn decide(
        &mut self,
        candidate: &Candidate,
        namespace_limits: &Limits,
        global_limits: &Limits,
        hold: Option<&str>,
    ) -> Decision {
        let uid = candidate.key.uid.clone();
        if let Some(entry) = self.admitted.get_mut(&uid) {
            entry.1 = candidate.request;
            return Decision::Admit;
        }
        self.queue(candidate);
        let position = self.position(candidate);
        let wait = |reason: String| Decision::Wait { position, reason };
        if let Some(why) = hold {
            return wait(format!("EmergencyStop: {why}"));
        }
        if namespace_limits.paused {
            return wait("Paused: the namespace's EvaluationQuota is paused".into());
        }
        let empty = Usage::default();
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
        self.admitted
            .insert(uid, (candidate.namespace.clone(), candidate.request));
        Decision::Admit
    }

    /// Frees the run's admission and queue place; returns its namespace if it held either.
    pub fn release(&mut self, uid: &str) -> Option<String> {
        let queued = self.dequeue(uid);
        self.admitted.remove(uid).map(|(ns, _)| ns).or(queued)
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

    /// Forgets every run that `keep(uid, namespace)` rejects (Evaluations deleted without a
    /// reconcile).
    pub fn retain(&mut self, keep: impl Fn(&str, &str) -> bool) {
        let gone: Vec<String> = self
            .admitted
            .iter()
            .map(|(uid, (ns, _))| (uid, ns))
            .chain(self.queued.iter().map(|(uid, (ns, _, _))| (uid, ns)))
            .filter(|(uid, ns)| !keep(uid, ns))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            self.release(&uid);
        }
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
