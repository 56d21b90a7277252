//! [`FetchPool`]: git fetches outside the reconciles. A reconcile asks for a source and returns
//! at once; the fetch runs in a bounded pool, and its end sends the waiting Evaluations back
//! to the work queue (an event, not a timer). So a git server that never answers costs a
//! fetch slot for at most the cache's deadlines, never a shared reconcile worker.
//!
//! # Slots
//!
//! At most [`FETCH_SLOTS`] fetches run at once, at most [`NAMESPACE_SHARE`] of them for one
//! namespace; namespaces with waiting fetches take turns. A namespace's share also counts the
//! fetch threads it left behind on a stalled server until they end (libgit2 cannot be
//! interrupted while it waits on a socket, see [`super::cache`]), so one tenant cannot pile up
//! blocked threads; the pool's slot itself is free again at the deadline.
//!
//! # Results
//!
//! A result is kept for the Evaluations that asked for it until they take it, and served to
//! any other request of the same namespace while it is fresher than the follow interval:
//! `(repository, ref) → commit` and the files at it are fetched once per interval, however
//! many Evaluations ask. Results nobody took are dropped after [`KEEP`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::request;
use super::{Fetched, GitCache, GitRequest, SourceError};
use crate::runner::{Key, Trigger};

/// Fetches running at once.
pub const FETCH_SLOTS: usize = 8;
/// Fetches (and fetch threads left on stalled servers) of one namespace at once.
pub const NAMESPACE_SHARE: usize = 2;
/// How long a result waits for the Evaluations that asked for it.
const KEEP: Duration = Duration::from_secs(600);

/// What a reconcile gets when it asks for a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer<T> {
    /// The fetch ended.
    Ready(Result<T, SourceError>),
    /// The fetch is queued or running; the Evaluation is reconciled again when it ends. Says
    /// which, for the status.
    Pending(String),
}

/// One fetch: whose, of what, for which kind of answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct JobKey {
    namespace: String,
    /// Cache key: the repository and credentials ([`request::prepare`]).
    repository: String,
    reference: Option<String>,
    path: Option<String>,
    /// `None`: only resolve the ref; `Some(limit)`: read the files, at most `limit` bytes.
    files: Option<usize>,
}

#[derive(Clone, Debug)]
enum Outcome {
    Files(Fetched),
    Commit(String),
}

enum Job {
    Queued {
        request: GitRequest,
        waiters: HashSet<Key>,
    },
    Running {
        waiters: HashSet<Key>,
    },
    Done {
        result: Result<Outcome, SourceError>,
        at: Instant,
        /// Those that asked and have not taken it yet.
        waiters: HashSet<Key>,
    },
}

/// Which queued fetch runs next: the slot and share accounting of the pool. Pure.
#[derive(Debug, Default)]
struct Slots {
    queued: HashMap<String, VecDeque<JobKey>>,
    /// Namespaces with queued fetches, in turn order.
    turns: VecDeque<String>,
    /// Fetches running (a pool slot each).
    running: usize,
    /// Per namespace: fetches running plus threads left on stalled servers.
    held: HashMap<String, usize>,
}

impl Slots {
    fn push(&mut self, job: JobKey) {
        let queue = self.queued.entry(job.namespace.clone()).or_default();
        if queue.is_empty() {
            self.turns.push_back(job.namespace.clone());
        }
        queue.push_back(job);
    }

    /// The next fetch to start, if a slot is free and a namespace with waiting fetches is
    /// within its share; it then holds a slot and a share.
    fn next(&mut self, slots: usize, share: usize) -> Option<JobKey> {
        if self.running >= slots {
            return None;
        }
        for _ in 0..self.turns.len() {
            let namespace = self.turns.pop_front()?;
            if self.held.get(&namespace).copied().unwrap_or(0) >= share {
                self.turns.push_back(namespace);
                continue;
            }
            let queue = self.queued.get_mut(&namespace)?;
            let job = queue.pop_front()?;
            if queue.is_empty() {
                self.queued.remove(&namespace);
            } else {
                self.turns.push_back(namespace.clone());
            }
            self.running += 1;
            *self.held.entry(namespace).or_default() += 1;
            return Some(job);
        }
        None
    }

    /// A fetch ended or was given up on: its slot is free.
    fn finished(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    /// The thread of a fetch of `namespace` ended: its share is free.
    fn released(&mut self, namespace: &str) {
        if let Some(held) = self.held.get_mut(namespace) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.held.remove(namespace);
            }
        }
    }
}

#[derive(Default)]
struct State {
    jobs: HashMap<JobKey, Job>,
    slots: Slots,
    /// Finished fetches by end time, to drop results nobody took.
    done: VecDeque<(Instant, JobKey)>,
}

/// The pool. Cheap to share behind an `Arc`.
pub struct FetchPool {
    cache: GitCache,
    slots: usize,
    share: usize,
    /// How long a result serves requests that did not ask for it.
    fresh: Duration,
    state: Mutex<State>,
    wake: Mutex<Option<Trigger>>,
}

/// Held by a fetch's blocking thread: frees its namespace's share when the thread ends.
struct Share {
    pool: Arc<FetchPool>,
    namespace: String,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.pool.lock().slots.released(&self.namespace);
        // Dropped on the fetch's blocking thread, inside the runtime; not at shutdown.
        if tokio::runtime::Handle::try_current().is_ok() {
            self.pool.pump();
        }
    }
}

impl FetchPool {
    /// A pool fetching through `cache`, [`FETCH_SLOTS`] at once, [`NAMESPACE_SHARE`] per
    /// namespace, serving results for `fresh`.
    pub fn new(cache: GitCache, fresh: Duration) -> Self {
        FetchPool::with_slots(cache, fresh, FETCH_SLOTS, NAMESPACE_SHARE)
    }

    /// A pool with other slot counts (tests).
    pub fn with_slots(cache: GitCache, fresh: Duration, slots: usize, share: usize) -> Self {
        FetchPool {
            cache,
            slots: slots.max(1),
            share: share.max(1),
            fresh,
            state: Mutex::default(),
            wake: Mutex::default(),
        }
    }

    /// Sends the Evaluations waiting on a fetch to `trigger` when it ends.
    pub fn connect(&self, trigger: Trigger) {
        *self.wake.lock().unwrap_or_else(PoisonError::into_inner) = Some(trigger);
    }

    /// The files of `request` (at most `max_bytes`), for the Evaluation `waiter`.
    pub fn files(
        self: &Arc<Self>,
        waiter: &Key,
        request: GitRequest,
        max_bytes: usize,
    ) -> Answer<Fetched> {
        match self.ask(waiter, request, Some(max_bytes)) {
            Answer::Ready(Ok(Outcome::Files(files))) => Answer::Ready(Ok(files)),
            Answer::Ready(Ok(Outcome::Commit(_))) => unreachable_outcome(),
            Answer::Ready(Err(e)) => Answer::Ready(Err(e)),
            Answer::Pending(why) => Answer::Pending(why),
        }
    }

    /// The commit `request`'s ref points to, for the Evaluation `waiter`.
    pub fn commit(self: &Arc<Self>, waiter: &Key, request: GitRequest) -> Answer<String> {
        match self.ask(waiter, request, None) {
            Answer::Ready(Ok(Outcome::Commit(commit))) => Answer::Ready(Ok(commit)),
            Answer::Ready(Ok(Outcome::Files(files))) => Answer::Ready(Ok(files.commit)),
            Answer::Ready(Err(e)) => Answer::Ready(Err(e)),
            Answer::Pending(why) => Answer::Pending(why),
        }
    }

    fn ask(
        self: &Arc<Self>,
        waiter: &Key,
        request: GitRequest,
        files: Option<usize>,
    ) -> Answer<Outcome> {
        // Invalid URLs, refused schemes, bad paths: answered here, without a slot.
        let prepared = match request::prepare(&request, self.cache.allows_file_urls()) {
            Ok(prepared) => prepared,
            Err(e) => return Answer::Ready(Err(e)),
        };
        let key = JobKey {
            namespace: waiter.namespace.clone(),
            repository: prepared.key,
            reference: prepared.reference,
            path: prepared.path,
            files,
        };
        let now = Instant::now();
        {
            let mut state = self.lock();
            state.expire(now);
            let fresh = self.fresh;
            match state.jobs.get_mut(&key) {
                Some(Job::Done {
                    result,
                    at,
                    waiters,
                }) => {
                    let asked = waiters.remove(waiter);
                    if asked || now.duration_since(*at) < fresh {
                        return Answer::Ready(result.clone());
                    }
                    state.queue(key.clone(), request, waiter);
                }
                Some(Job::Queued { waiters, .. } | Job::Running { waiters }) => {
                    waiters.insert(waiter.clone());
                }
                None => state.queue(key.clone(), request, waiter),
            }
        }
        self.pump();
        let waiting = matches!(self.lock().jobs.get(&key), Some(Job::Queued { .. }));
        Answer::Pending(if waiting {
            format!(
                "waiting for a git fetch slot (at most {} fetches of a namespace run at once)",
                self.share
            )
        } else {
            format!("fetching {}", prepared.redacted)
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts queued fetches while slots and shares allow.
    fn pump(self: &Arc<Self>) {
        loop {
            let started = {
                let mut state = self.lock();
                let Some(key) = state.slots.next(self.slots, self.share) else {
                    return;
                };
                match state.jobs.remove(&key) {
                    Some(Job::Queued { request, waiters }) => {
                        state.jobs.insert(key.clone(), Job::Running { waiters });
                        Some((key, request))
                    }
                    other => {
                        // Cannot happen: a queued key always has a queued job. Free what
                        // `next` took rather than leak it.
                        if let Some(job) = other {
                            state.jobs.insert(key.clone(), job);
                        }
                        state.slots.finished();
                        state.slots.released(&key.namespace);
                        None
                    }
                }
            };
            if let Some((key, request)) = started {
                tokio::spawn(self.clone().run(key, request));
            }
        }
    }

    async fn run(self: Arc<Self>, key: JobKey, request: GitRequest) {
        let share = Share {
            pool: self.clone(),
            namespace: key.namespace.clone(),
        };
        let result = match key.files {
            Some(limit) => self
                .cache
                .fetch_holding(request, limit, share)
                .await
                .map(Outcome::Files),
            None => self
                .cache
                .resolve_holding(request, share)
                .await
                .map(Outcome::Commit),
        };
        let now = Instant::now();
        let waiters = {
            let mut state = self.lock();
            state.slots.finished();
            let waiters = match state.jobs.remove(&key) {
                Some(Job::Running { waiters } | Job::Queued { waiters, .. }) => waiters,
                _ => HashSet::new(),
            };
            state.jobs.insert(
                key.clone(),
                Job::Done {
                    result,
                    at: now,
                    waiters: waiters.clone(),
                },
            );
            state.done.push_back((now, key));
            waiters
        };
        if let Some(trigger) = self
            .wake
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            for waiter in waiters {
                // The receiver is gone only at shutdown.
                let _ = trigger.send(waiter);
            }
        }
        self.pump();
    }
}

impl State {
    /// Queues a fetch of `key` for `waiter`, replacing a stale result.
    fn queue(&mut self, key: JobKey, request: GitRequest, waiter: &Key) {
        let waiters = HashSet::from([waiter.clone()]);
        self.jobs
            .insert(key.clone(), Job::Queued { request, waiters });
        self.slots.push(key);
    }

    /// Drops results older than [`KEEP`] (oldest first: amortized constant time).
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.done.front() {
            if now.duration_since(*at) < KEEP {
                return;
            }
            let Some((at, key)) = self.done.pop_front() else {
                return;
            };
            if matches!(self.jobs.get(&key), Some(Job::Done { at: done, .. }) if *done == at) {
                self.jobs.remove(&key);
            }
        }
    }
}

/// A files job answers with files: the key says which kind of job it was.
fn unreachable_outcome<T>() -> Answer<T> {
    Answer::Pending("internal error: a git fetch answered with the wrong kind of result".into())
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
