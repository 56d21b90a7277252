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
//!   first, then older. A run is admitted only if it still fits after reserving room for
//!   every admissible run ahead of it, so a small run never overtakes a large one waiting
//!   for room. A run whose request can never fit its namespace's limits does not block the
//!   runs behind it.
//! - Controller-wide limits are shared fairly (dominant resource fairness, as Kueue's fair
//!   sharing): a run is admitted only if the controller-wide limits also leave room for the
//!   head of every waiting namespace whose share of those limits is smaller (equal shares:
//!   the older head first). Priority orders runs within a namespace, not across namespaces.
//! - A held run (the emergency stop, an unverified sandbox) keeps nothing: no room is
//!   reserved for it, in its namespace or controller-wide, until a decision finds it free.
//! - Nothing polls: every change that can admit a queued run (capacity freed, limits
//!   changed) or move its reported position names the runs to look at again
//!   ([`Ledger::take_wakes`]).

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};

use crate::admission::ranked::Ranked;
use crate::config::Limits;
use crate::run::request::Request;

mod fairness;
mod usage;
mod wakes;

pub use usage::Usage;
pub use wakes::{WAKE_BATCH, reported_position};

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
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// Admissions by run id.
    admitted: HashMap<String, Held>,
    /// Run ids holding an admission, by Evaluation uid.
    runs: HashMap<String, BTreeSet<String>>,
    queues: HashMap<String, Ranked<QueueKey>>,
    queued: HashMap<String, (String, QueueKey, Request)>,
    /// Queued Evaluations (uids) whose last decision found them held: they cannot start,
    /// so nothing is reserved for them and they are not woken.
    held: HashSet<String>,
    /// Usage by namespace and in total, kept as admissions come and go.
    used: HashMap<String, Usage>,
    total: Usage,
    /// The limits each namespace was last decided with, and the controller-wide ones.
    limits: HashMap<String, Limits>,
    /// The limits the quota watch last reported for each namespace ([`Ledger::set_limits`]),
    /// what a change is told by. Not `limits`: a reconcile that read the quota cache just
    /// after the watch updated it may decide with the new limits before the watch reports
    /// them, and a change that looked like none would refresh no queued run's reason.
    reported: HashMap<String, Limits>,
    global: Limits,
    /// Queued runs to look at again (namespace, name), collected until taken.
    wakes: Vec<(String, String)>,
    /// Namespaces whose queued runs are being looked at again batch after batch since their
    /// limits changed: the last run of the batch woken, whose decision wakes the next.
    refreshing: HashMap<String, QueueKey>,
    /// Namespaces whose usage, queue or limits changed, collected until taken (their
    /// EvaluationQuota status is written from them).
    touched: BTreeSet<String>,
}

impl Ledger {
    /// Usage of `namespace`, or of everything with `None`.
    pub fn usage(&self, namespace: Option<&str>) -> Usage {
        match namespace {
            None => self.total,
            Some(ns) => self.used.get(ns).copied().unwrap_or_default(),
        }
    }

    /// The namespaces whose usage, queue length or limits changed since the last call.
    pub fn take_touched(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.touched)
    }

    /// Whether a namespace was touched since the last [`Ledger::take_touched`].
    pub fn is_touched(&self) -> bool {
        !self.touched.is_empty()
    }

    /// Marks `namespace` as touched (its quota status is to be written again).
    pub fn touch(&mut self, namespace: &str) {
        if !self.touched.contains(namespace) {
            self.touched.insert(namespace.to_string());
        }
    }

    /// The limits of `namespace` changed (a quota edit or deletion): wakes what they may admit
    /// now and, when they differ, its whole queue batch by batch, since every reason may name
    /// them ([`Ledger::refresh_reasons`]).
    pub fn set_limits(&mut self, namespace: &str, limits: Limits) {
        let changed = self.reported.get(namespace) != Some(&limits);
        self.reported.insert(namespace.to_string(), limits.clone());
        self.limits.insert(namespace.to_string(), limits);
        self.touch(namespace);
        if changed {
            self.refresh_reasons(namespace);
        }
        self.wake_admissible();
    }

    /// Number of runs queued in `namespace`.
    pub fn queued(&self, namespace: &str) -> usize {
        self.queues.get(namespace).map_or(0, Ranked::len)
    }

    /// Whether run `run` holds an admission.
    pub fn is_admitted(&self, run: &str) -> bool {
        self.admitted.contains_key(run)
    }

    /// The runs of Evaluation `uid` that hold an admission.
    pub fn runs_of(&self, uid: &str) -> impl Iterator<Item = &str> {
        self.runs.get(uid).into_iter().flatten().map(String::as_str)
    }

    /// The namespace of Evaluation `uid`, when it holds an admission or waits in a queue.
    pub fn namespace_of(&self, uid: &str) -> Option<&str> {
        let held = self
            .runs_of(uid)
            .find_map(|run| self.admitted.get(run))
            .map(|h| h.namespace.as_str());
        held.or_else(|| self.queued.get(uid).map(|(ns, _, _)| ns.as_str()))
    }

    /// Records an admission found in the cluster (a live pod at controller start): no
    /// checks, no queue.
    pub fn restore(&mut self, run: &str, uid: &str, namespace: &str, request: Request) {
        self.dequeue(uid);
        self.hold(run, uid, namespace, request);
    }

    fn hold(&mut self, run: &str, uid: &str, namespace: &str, request: Request) {
        if let Some(previous) = self.admitted.get(run).cloned() {
            self.unuse(&previous);
        }
        self.used
            .entry(namespace.to_string())
            .or_default()
            .add(&request);
        self.total.add(&request);
        self.touch(namespace);
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

    fn unuse(&mut self, held: &Held) {
        self.touch(&held.namespace);
        if let Some(used) = self.used.get_mut(&held.namespace) {
            used.sub(&held.request);
            if used.running == 0 {
                self.used.remove(&held.namespace);
            }
        }
        self.total.sub(&held.request);
    }

    /// Frees the admission of run `run` (and wakes the runs that may take its place);
    /// returns its namespace if it held one.
    pub fn release_run(&mut self, run: &str) -> Option<String> {
        let held = self.admitted.remove(run)?;
        self.unuse(&held);
        self.wake_admissible();
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
        self.held.remove(uid);
        self.touch(&ns);
        let Some(queue) = self.queues.get_mut(&ns) else {
            return Some(ns);
        };
        let at = queue.rank(&key) + 1;
        queue.remove(&key);
        let left = queue.len();
        if left == 0 {
            self.queues.remove(&ns);
        }
        // A refresh whose batch ended with this run goes on without it.
        self.refresh_reached(&ns, &key);
        if left > 0 {
            // Everyone behind moved up by one.
            self.wake_moved(&ns, at, |p| {
                reported_position(p + 1) != reported_position(p)
            });
        }
        if at == 1 {
            self.head_changed();
        }
        Some(ns)
    }

    /// The first `n` queued runs of `namespace` (name, uid).
    #[cfg(test)]
    pub fn heads(&self, namespace: &str, n: usize) -> Vec<(String, String)> {
        self.queues
            .get(namespace)
            .into_iter()
            .flat_map(Ranked::iter)
            .take(n)
            .map(|k| (k.name.clone(), k.uid.clone()))
            .collect()
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
        self.touch(&c.namespace);
        let queue = self.queues.entry(c.namespace.clone()).or_default();
        queue.insert(c.key.clone());
        let at = queue.rank(&c.key) + 1;
        self.queued.insert(
            c.key.uid.clone(),
            (c.namespace.clone(), c.key.clone(), c.request),
        );
        // Everyone behind moved back by one.
        self.wake_moved(&c.namespace, at + 1, |p| {
            reported_position(p - 1) != reported_position(p)
        });
        if at == 1 {
            self.head_changed();
        }
    }
}

#[cfg(test)]
mod tests;
