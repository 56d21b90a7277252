//! Who looks again after a change: queued runs woken in batches of [`WAKE_BATCH`] (the
//! runs a change may admit; after a change of limits, the whole queue batch after batch), and
//! the positions reported to users (exact near the head, in steps further back).

use super::*;

/// Most runs woken by one change; each woken run that is admitted wakes the next ones.
pub const WAKE_BATCH: usize = 32;

/// The positions in `from..=len` next to which [`reported_position`] changes (the first 12,
/// and the neighbours of each multiple of its step): a queue that moves by one changes the
/// reported position of no run elsewhere.
pub(super) fn step_positions(from: usize, len: usize) -> Vec<usize> {
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

impl Ledger {
    /// The queued runs (namespace, name) that changes since the last call may have made
    /// admissible or moved to another reported position.
    pub fn take_wakes(&mut self) -> Vec<(String, String)> {
        let mut wakes = std::mem::take(&mut self.wakes);
        wakes.sort();
        wakes.dedup();
        wakes
    }

    /// Looks again at every queued run of `namespace`, whose reasons may name limits that
    /// just changed (a pause, an invalid quota, a quota deleted): the first [`WAKE_BATCH`]
    /// now, and each next batch once the last run of the one before was decided or left the
    /// queue ([`Ledger::refresh_reached`]). So reasons follow the change through the whole
    /// queue at the pace the controller decides, never the whole queue at once; a newer
    /// change starts again from the front.
    pub(super) fn refresh_reasons(&mut self, namespace: &str) {
        self.wake_batch_from(namespace, 0);
    }

    /// Run `key` of `namespace` was decided or left the queue: when it ends the batch of a
    /// refresh, the next batch (the runs now after it) is woken.
    pub(super) fn refresh_reached(&mut self, namespace: &str, key: &QueueKey) {
        if self.refreshing.get(namespace) != Some(key) {
            return;
        }
        let next = self.queues.get(namespace).map_or(0, |queue| {
            queue.rank(key) + usize::from(queue.contains(key))
        });
        self.wake_batch_from(namespace, next);
    }

    /// Wakes the [`WAKE_BATCH`] queued runs of `namespace` from 0-based position `start` (each
    /// found in O(log n)), and remembers the last of them while more follow.
    fn wake_batch_from(&mut self, namespace: &str, start: usize) {
        let queue = self.queues.get(namespace);
        let batch: Vec<&QueueKey> = (start..start.saturating_add(WAKE_BATCH))
            .map_while(|i| queue?.select(i))
            .collect();
        let more = queue.is_some_and(|q| start + batch.len() < q.len());
        self.wakes.extend(
            batch
                .iter()
                .map(|k| (namespace.to_string(), k.name.clone())),
        );
        match batch.last() {
            Some(last) if more => {
                let last = (*last).clone();
                self.refreshing.insert(namespace.to_string(), last);
            }
            _ => {
                self.refreshing.remove(namespace);
            }
        }
    }

    /// Wakes the queued runs of every namespace that would be admitted now, as far as
    /// [`WAKE_BATCH`] (a hold lifted: stop switch cleared, sandbox verified).
    pub fn wake_all(&mut self) {
        self.wake_admissible();
    }

    /// Wakes the runs of `namespace` now at positions `from`, `from + 1`, … (those behind a
    /// run that joined or left) whose reported position changed, as `changed(new position)`
    /// says. Only the positions around a step of [`reported_position`] are looked at: about
    /// 40 for a queue of 10,000, each found in O(log n).
    pub(super) fn wake_moved(
        &mut self,
        namespace: &str,
        from: usize,
        changed: impl Fn(usize) -> bool,
    ) {
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

    /// Wakes, up to [`WAKE_BATCH`], the queued runs that would be admitted now: namespaces
    /// in the order the fair share serves them (smaller share first, then the older head, as
    /// [`Ledger::reserved_for_smaller_shares`]), each walked from its head.
    pub(super) fn wake_admissible(&mut self) {
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

    /// A namespace's head changed (joined at the front, left, or was admitted): what the fair
    /// share keeps for that namespace changed, and with it what other namespaces may admit.
    pub(super) fn head_changed(&mut self) {
        self.wake_admissible();
    }

    pub(super) fn position(&self, c: &Candidate) -> usize {
        self.queues
            .get(&c.namespace)
            .map_or(1, |q| q.rank(&c.key) + 1)
    }
}
