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

/// Most runs woken by one change; each woken run that is admitted wakes the next ones.
pub const WAKE_BATCH: usize = 32;

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

    fn sub(&mut self, r: &Request) {
        self.running = self.running.saturating_sub(1);
        self.cpu = (self.cpu - r.cpu).max(0.0);
        self.memory = (self.memory - r.memory).max(0.0);
        self.gpu = (self.gpu - r.gpu).max(0.0);
    }

    /// The largest fraction of any limit in `limits` that this usage takes (0 without limits).
    fn dominant_share(&self, limits: &Limits) -> f64 {
        let share = |used: f64, limit: Option<f64>| match limit {
            Some(l) if l > 0.0 => used / l,
            Some(_) => f64::INFINITY,
            None => 0.0,
        };
        [
            share(f64::from(self.running), limits.max_running.map(f64::from)),
            share(self.cpu, limits.cpu),
            share(self.memory, limits.memory),
            share(self.gpu, limits.gpu),
        ]
        .into_iter()
        .fold(0.0, f64::max)
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
                let requested = request_of(name, request);
                let shown = |v: f64| kube_units(name, v);
                format!(
                    "{name}: requests {}, {} of {} in use",
                    shown(requested),
                    shown(total - requested),
                    shown(limit)
                )
            })
        })
    }
}

/// `value` of resource `name` in the units a quota is written in: cpu in cores or millicores
/// (`2`, `1500m`), memory with the largest binary suffix that keeps it whole (`256Mi`, `2Gi`,
/// else bytes), GPUs as a count.
fn kube_units(name: &str, value: f64) -> String {
    match name {
        "cpu" => {
            let milli = (value * 1000.0).round() as i64;
            if milli % 1000 == 0 {
                (milli / 1000).to_string()
            } else {
                format!("{milli}m")
            }
        }
        "memory" => {
            let bytes = value.round() as i64;
            ["Ei", "Pi", "Ti", "Gi", "Mi", "Ki"]
                .iter()
                .zip((1..=6).rev())
                .find_map(|(suffix, power)| {
                    let unit = 1i64 << (10 * power);
                    (bytes != 0 && bytes % unit == 0).then(|| format!("{}{suffix}", bytes / unit))
                })
                .unwrap_or_else(|| bytes.to_string())
        }
        _ => round(value).to_string(),
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
    global: Limits,
    /// Queued runs to look at again (namespace, name), collected until taken.
    wakes: Vec<(String, String)>,
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

    /// The queued runs (namespace, name) that changes since the last call may have made
    /// admissible or moved to another reported position.
    pub fn take_wakes(&mut self) -> Vec<(String, String)> {
        let mut wakes = std::mem::take(&mut self.wakes);
        wakes.sort();
        wakes.dedup();
        wakes
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
    /// now and, when they differ, the front of its queue, whose reasons name them.
    pub fn set_limits(&mut self, namespace: &str, limits: Limits) {
        let changed = self.limits.get(namespace) != Some(&limits);
        self.limits.insert(namespace.to_string(), limits);
        self.touch(namespace);
        if changed {
            self.wake_front(namespace);
        }
        self.wake_admissible();
    }

    /// Wakes the first [`WAKE_BATCH`] queued runs of `namespace` to be decided again, so their
    /// reasons follow a pause, an invalid quota or a removed limit. Coarsely, as positions: the
    /// runs further back keep their reason until they move up, so a change never rewrites a
    /// long queue.
    fn wake_front(&mut self, namespace: &str) {
        let front = self
            .queues
            .get(namespace)
            .into_iter()
            .flat_map(Ranked::iter);
        let wakes: Vec<_> = front
            .take(WAKE_BATCH)
            .map(|k| (namespace.to_string(), k.name.clone()))
            .collect();
        self.wakes.extend(wakes);
    }

    /// Wakes the queued runs of every namespace that would be admitted now, as far as
    /// [`WAKE_BATCH`] (a hold lifted: stop switch cleared, sandbox verified).
    pub fn wake_all(&mut self) {
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
        if self.limits.get(&candidate.namespace) != Some(namespace_limits) {
            self.limits
                .insert(candidate.namespace.clone(), namespace_limits.clone());
        }
        if &self.global != global_limits {
            self.global = global_limits.clone();
        }
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
            if self.held.insert(uid) {
                // What was reserved for it (and the wake-up it may have used) goes to others.
                self.wake_admissible();
            }
            return wait(why.to_string());
        }
        self.held.remove(&uid);
        if namespace_limits.paused {
            return wait("Paused: the namespace's EvaluationQuota is paused".into());
        }
        if let Some(why) = &namespace_limits.invalid {
            return wait(format!("QuotaInvalid: {why}"));
        }
        if let Some(why) = empty.exceeds(&candidate.request, namespace_limits) {
            return wait(format!(
                "QuotaExceeded: cannot fit under the current quota, even with nothing else running ({why})"
            ));
        }
        let ahead = self.reserved_ahead(candidate, namespace_limits);
        let namespace_usage = self.usage(Some(&candidate.namespace));
        if let Some(why) = ahead
            .reserved(namespace_usage)
            .exceeds(&candidate.request, namespace_limits)
        {
            return wait(if ahead.runs > 0 {
                "Queued: waiting behind evaluations of higher priority or older".into()
            } else {
                format!("QuotaExceeded: {why}")
            });
        }
        let (fair, heads) = self.reserved_for_smaller_shares(&candidate.namespace, global_limits);
        let total = ahead.reserved(fair.reserved(self.total));
        if let Some(why) = total.exceeds(&candidate.request, global_limits) {
            let for_others = fair.runs > 0
                && self
                    .total
                    .exceeds(&candidate.request, global_limits)
                    .is_none();
            if for_others {
                // The room is kept for those heads: they must get to use it (a wake-up that
                // counted on this run starting would otherwise leave them waiting).
                self.wakes.extend(heads);
            }
            return wait(if for_others {
                format!(
                    "ControllerLimit: fair share: the controller-wide limit is kept for namespaces with a smaller share ({why})"
                )
            } else {
                format!("ControllerLimit: {why}")
            });
        }
        // Held first: a new head's wake-up (in dequeue) sees the room this run takes.
        self.hold(
            &candidate.run,
            &uid,
            &candidate.namespace,
            candidate.request,
        );
        self.dequeue(&uid);
        Decision::Admit
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
        if let Some(queue) = self.queues.get_mut(&ns) {
            let at = queue.rank(&key) + 1;
            queue.remove(&key);
            if queue.is_empty() {
                self.queues.remove(&ns);
            } else {
                // Everyone behind moved up by one.
                self.wake_moved(&ns, at, |p| {
                    reported_position(p + 1) != reported_position(p)
                });
            }
            if at == 1 {
                self.head_changed();
            }
        }
        Some(ns)
    }

    /// Wakes the runs of `namespace` now at positions `from`, `from + 1`, … (those behind a
    /// run that joined or left) whose reported position changed, as `changed(new position)`
    /// says. Only the positions around a step of [`reported_position`] are looked at: about
    /// 40 for a queue of 10,000, each found in O(log n).
    fn wake_moved(&mut self, namespace: &str, from: usize, changed: impl Fn(usize) -> bool) {
        let Some(queue) = self.queues.get(namespace) else {
            return;
        };
        let moved = step_positions(from, queue.len())
            .into_iter()
            .filter(|p| changed(*p))
            .filter_map(|p| queue.select(p - 1))
            .map(|k| (namespace.to_string(), k.name.clone()));
        self.wakes.extend(moved);
    }

    /// The admissible runs ahead of `c` in its namespace's queue, as far as they fit at all.
    fn reserved_ahead(&self, c: &Candidate, limits: &Limits) -> Reservation {
        let empty = Usage::default();
        let mut out = Reservation::default();
        let Some(queue) = self.queues.get(&c.namespace) else {
            return out;
        };
        let base = self.usage(Some(&c.namespace));
        for k in queue.before(&c.key) {
            let Some((_, _, r)) = self.queued.get(&k.uid) else {
                continue;
            };
            if empty.exceeds(r, limits).is_some() || self.held.contains(&k.uid) {
                continue; // can never fit, or cannot start now: blocks no one
            }
            out.add(r);
            // Enough reserved to know the candidate waits: stop walking (bounded by the
            // capacity, not the queue).
            if out
                .reserved(base)
                .exceeds(&Request::default(), limits)
                .is_some()
                || out.usage.running > WAKE_BATCH as u32 * 32
            {
                break;
            }
        }
        out
    }

    /// What the controller-wide limits keep for the heads of waiting namespaces with a
    /// smaller dominant share than `namespace` (equal: an older head), each only if it fits
    /// its own namespace now; and those heads (namespace, name).
    fn reserved_for_smaller_shares(
        &self,
        namespace: &str,
        global: &Limits,
    ) -> (Reservation, Vec<(String, String)>) {
        let mut out = Reservation::default();
        let mut heads = Vec::new();
        if *global == Limits::default() {
            return (out, heads);
        }
        let mine = self.usage(Some(namespace)).dominant_share(global);
        let my_head = self.first_free(namespace);
        for (ns, queue) in &self.queues {
            if ns == namespace {
                continue;
            }
            let share = self.usage(Some(ns)).dominant_share(global);
            let Some(head) = self.admissible_head(ns, queue) else {
                continue;
            };
            let before = share < mine
                || (share == mine
                    && my_head
                        .is_none_or(|m| (head.0.created, &head.0.name) < (m.created, &m.name)));
            if before {
                out.add(&head.1);
                heads.push((ns.clone(), head.0.name.clone()));
            }
        }
        (out, heads)
    }

    /// The first queued run of `namespace` that fits its namespace's limits now.
    fn admissible_head<'a>(
        &self,
        namespace: &str,
        queue: &'a Ranked<QueueKey>,
    ) -> Option<(&'a QueueKey, Request)> {
        let limits = self.limits.get(namespace)?;
        if limits.paused || limits.invalid.is_some() {
            return None;
        }
        let empty = Usage::default();
        let (key, request) = queue.iter().find_map(|k| {
            let (_, _, r) = self.queued.get(&k.uid)?;
            (empty.exceeds(r, limits).is_none() && !self.held.contains(&k.uid)).then_some((k, *r))
        })?;
        self.usage(Some(namespace))
            .exceeds(&request, limits)
            .is_none()
            .then_some((key, request))
    }

    /// The first queued run of `namespace` that is not held.
    fn first_free(&self, namespace: &str) -> Option<&QueueKey> {
        self.queues
            .get(namespace)?
            .iter()
            .find(|k| !self.held.contains(&k.uid))
    }

    /// Wakes, up to [`WAKE_BATCH`], the queued runs that would be admitted now: namespaces
    /// in the order the fair share serves them (smaller share first, then the older head, as
    /// [`Ledger::reserved_for_smaller_shares`]), each walked from its head.
    fn wake_admissible(&mut self) {
        let global = self.global.clone();
        // Share, head (creation, name), namespace.
        type Turn<'a> = (f64, Option<(i64, &'a str)>, &'a String);
        let mut order: Vec<Turn<'_>> = self
            .queues
            .keys()
            .map(|ns| {
                let head = self.first_free(ns).map(|k| (k.created, k.name.as_str()));
                (self.usage(Some(ns)).dominant_share(&global), head, ns)
            })
            .collect();
        order.sort_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then_with(|| a.1.cmp(&b.1))
                .then_with(|| a.2.cmp(b.2))
        });
        let mut total = self.total;
        let mut wakes = Vec::new();
        let empty = Usage::default();
        for (_, _, ns) in order {
            let Some(limits) = self.limits.get(ns) else {
                continue;
            };
            if limits.paused || limits.invalid.is_some() {
                continue;
            }
            let mut used = self.usage(Some(ns));
            for k in self.queues.get(ns).into_iter().flat_map(Ranked::iter) {
                let Some((_, _, r)) = self.queued.get(&k.uid) else {
                    continue;
                };
                if empty.exceeds(r, limits).is_some() || self.held.contains(&k.uid) {
                    continue;
                }
                if used.exceeds(r, limits).is_some() || total.exceeds(r, &global).is_some() {
                    break;
                }
                used.add(r);
                total.add(r);
                wakes.push((ns.clone(), k.name.clone()));
                if wakes.len() >= WAKE_BATCH {
                    break;
                }
            }
            if wakes.len() >= WAKE_BATCH {
                break;
            }
        }
        self.wakes.extend(wakes);
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

    /// A namespace's head changed (joined at the front, left, or was admitted): what the fair
    /// share keeps for that namespace changed, and with it what other namespaces may admit.
    fn head_changed(&mut self) {
        self.wake_admissible();
    }

    fn position(&self, c: &Candidate) -> usize {
        self.queues
            .get(&c.namespace)
            .map_or(1, |q| q.rank(&c.key) + 1)
    }
}

/// Requests set aside for runs that come first.
#[derive(Clone, Copy, Debug, Default)]
struct Reservation {
    usage: Usage,
    runs: usize,
}

impl Reservation {
    fn add(&mut self, r: &Request) {
        self.usage.add(r);
        self.runs += 1;
    }

    /// `base` plus what is reserved.
    fn reserved(&self, base: Usage) -> Usage {
        Usage {
            running: base.running + self.usage.running,
            cpu: base.cpu + self.usage.cpu,
            memory: base.memory + self.usage.memory,
            gpu: base.gpu + self.usage.gpu,
        }
    }
}

/// The positions in `from..=len` next to which [`reported_position`] changes (the first 12,
/// and the neighbours of each multiple of its step): a queue that moves by one changes the
/// reported position of no run elsewhere.
fn step_positions(from: usize, len: usize) -> Vec<usize> {
    let mut marks: Vec<usize> = (1..=12).collect();
    let mut m = 10;
    while m <= len.saturating_add(1) {
        marks.extend([m - 1, m, m + 1]);
        m += match m {
            ..100 => 10,
            100..1000 => 100,
            _ => 1000,
        };
    }
    marks.retain(|p| (from..=len).contains(p));
    marks.sort_unstable();
    marks.dedup();
    marks
}

/// The queue position written to status: exact for the first 10, then rounded up to the next
/// 10 (to 100), the next 100 (to 1,000) and the next 1,000 beyond. Every admission moves
/// everyone behind it up by one; coarse positions far back mean an admission rewrites the
/// status of about 40 queued runs, however long the queue, not of every one.
pub fn reported_position(position: usize) -> usize {
    let round_up = |step: usize| position.div_ceil(step).saturating_mul(step);
    match position {
        ..=10 => position,
        11..=100 => round_up(10),
        101..=1000 => round_up(100),
        _ => round_up(1000),
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
