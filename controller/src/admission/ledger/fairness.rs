//! The decision: whether a run may start now, after reserving room for every admissible run
//! ahead of it in its namespace and, controller-wide, for the heads of namespaces with a
//! smaller share (dominant resource fairness).

use super::*;

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

impl Ledger {
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
        // What the quota watch reported wins over a reconcile's snapshot, which may be older.
        if !self.reported.contains_key(&candidate.namespace)
            && self.limits.get(&candidate.namespace) != Some(namespace_limits)
        {
            self.limits
                .insert(candidate.namespace.clone(), namespace_limits.clone());
        }
        if &self.global != global_limits {
            self.global = global_limits.clone();
        }
        // A refresh of reasons whose batch ends with this run goes on.
        self.refresh_reached(&candidate.namespace, &candidate.key);
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
    pub(super) fn admissible_head<'a>(
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
    pub(super) fn first_free(&self, namespace: &str) -> Option<&QueueKey> {
        self.queues
            .get(namespace)?
            .iter()
            .find(|k| !self.held.contains(&k.uid))
    }
}
