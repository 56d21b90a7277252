//! [`GitCache`]: the async entry point. Serializes work per cached repository, runs libgit2 on
//! tokio's blocking pool under a deadline, and keeps the cache within its size budget. Does
//! I/O: the cache directory and, through `git`, the network.
//!
//! # Layout
//!
//! ```text
//! <root>/repos/<key>/                     bare mirror (refs/heads/*, refs/tags/*, HEAD)
//! <root>/repos/<key>/crucible-last-used   last use, nanoseconds since the Unix epoch
//! <root>/repos/<key>/crucible-url         the URL without password, for people
//! <root>/trash/                           directories being deleted by eviction
//! ```
//!
//! `<key>` is the hex sha256 of the normalized URL (lower-case scheme and host, no user, no
//! default port, no trailing `/`), extended with a fingerprint of the credentials when there
//! are any: Evaluations of the same repository with the same Secret (or none) share one
//! repository, fetched incrementally; different credentials never share.
//!
//! # Eviction
//!
//! After every operation that fetched from the network, if the repositories under `repos/`
//! add up to more than `max_bytes`, the least recently used ones (by `crucible-last-used`;
//! a repository without it counts as oldest) are deleted until the total fits, skipping the
//! repository just used, any repository another task is using at that moment and any whose
//! fetch thread was given up on and still runs. So one
//! repository larger than the whole budget stays (it is in use) and the cache can exceed the
//! budget by at most that repository until the next eviction. Eviction moves a directory into
//! `trash/` first (a rename, atomic) and then deletes it, so a crash never leaves half a
//! repository under `repos/`.
//!
//! # Assumptions
//!
//! One `GitCache` (and its clones) per cache root and process: the per-repository locks live
//! in memory. The controller runs one active replica (leader election), so that holds.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use git2::Repository;

use super::error::internal;
use super::request::{self, Prepared};
use super::url::Scheme;
use super::{Fetched, GitRequest, SourceError, git};

/// Default limit for one fetch, lock wait included. A first clone of a large repository over
/// a slow link takes minutes; no shared worker waits for it (see [`super::pool`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

/// Default limit for the server's first answer (connection, TLS or ssh handshake, credential
/// request): a server that accepts and never answers is given up on after it.
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a request fails at once while an earlier fetch of its repository is stalled.
const STALLED: &str = "an earlier fetch from this repository is still waiting for the server \
                       to answer; no new one starts until it ends";

/// Marker file with the last use of a cached repository.
const LAST_USED_FILE: &str = "crucible-last-used";
/// File with the repository's URL (without password), for people inspecting the cache.
const URL_FILE: &str = "crucible-url";

/// Per-repository locks, by cache key.
type Locks = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// Fetches git sources into a size-bounded cache of bare repositories. Cheap to clone; clones
/// share locks.
#[derive(Clone, Debug)]
pub struct GitCache {
    root: PathBuf,
    max_bytes: u64,
    timeout: Duration,
    answer_timeout: Duration,
    allow_file_urls: bool,
    locks: Arc<Locks>,
    /// Repositories whose fetch thread was given up on and has not ended yet.
    stalled: Arc<Mutex<HashSet<String>>>,
    evicting: Arc<Mutex<()>>,
}

impl GitCache {
    /// A cache under `root` (created on first use) that evicts down to `max_bytes`.
    pub fn new(root: PathBuf, max_bytes: u64) -> Self {
        GitCache {
            root,
            max_bytes,
            timeout: DEFAULT_TIMEOUT,
            answer_timeout: DEFAULT_ANSWER_TIMEOUT,
            allow_file_urls: false,
            locks: Arc::default(),
            stalled: Arc::default(),
            evicting: Arc::default(),
        }
    }

    /// Limit for one `fetch`/`resolve`, waiting for the repository's lock included
    /// ([`DEFAULT_TIMEOUT`] unless set). Past it the call returns `SourceUnreachable`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Limit for the server's first answer ([`DEFAULT_ANSWER_TIMEOUT`] unless set); past it
    /// the call returns `SourceUnreachable`.
    pub fn with_answer_timeout(mut self, timeout: Duration) -> Self {
        self.answer_timeout = timeout;
        self
    }

    /// Whether `file://` URLs are fetched (off by default: they read the controller's own
    /// disk). For tests and for mirrors mounted into the controller.
    pub fn allow_file_urls(mut self, allow: bool) -> Self {
        self.allow_file_urls = allow;
        self
    }

    /// Whether `file://` URLs are fetched.
    pub fn allows_file_urls(&self) -> bool {
        self.allow_file_urls
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory that holds (or will hold) the repository of `req`.
    pub fn repo_dir(&self, req: &GitRequest) -> Result<PathBuf, SourceError> {
        let prepared = request::prepare(req, self.allow_file_urls)?;
        Ok(self.repos_dir().join(prepared.key))
    }

    /// Resolves `req.reference` to a commit and reads the files under `req.path` at that
    /// commit, at most `max_files_bytes` of them.
    ///
    /// # Errors
    ///
    /// Any [`SourceError`]; `SourceTooLarge` as soon as the files exceed `max_files_bytes`.
    pub async fn fetch(
        &self,
        req: GitRequest,
        max_files_bytes: usize,
    ) -> Result<Fetched, SourceError> {
        self.fetch_holding(req, max_files_bytes, ()).await
    }

    /// Resolves `req.reference` to a commit (40 hex digits) without reading files. A branch
    /// or tag is always looked up on the remote (an incremental fetch), so `follow: true`
    /// sees a moved branch; a full commit id the cache has needs no network.
    pub async fn resolve(&self, req: GitRequest) -> Result<String, SourceError> {
        self.resolve_holding(req, ()).await
    }

    /// [`GitCache::fetch`], dropping `hold` when the blocking work ends, which may be after
    /// this call gave up on a stalled server.
    pub async fn fetch_holding<H: Send + 'static>(
        &self,
        req: GitRequest,
        max_files_bytes: usize,
        hold: H,
    ) -> Result<Fetched, SourceError> {
        self.run(req, hold, move |repo, prepared, deadline, answered| {
            let (commit, fetched) = git::resolve(repo, prepared, deadline, answered)?;
            Ok((git::read(repo, prepared, commit, max_files_bytes)?, fetched))
        })
        .await
    }

    /// [`GitCache::resolve`], dropping `hold` as [`GitCache::fetch_holding`] does.
    pub async fn resolve_holding<H: Send + 'static>(
        &self,
        req: GitRequest,
        hold: H,
    ) -> Result<String, SourceError> {
        self.run(req, hold, |repo, prepared, deadline, answered| {
            let (commit, fetched) = git::resolve(repo, prepared, deadline, answered)?;
            Ok((commit.to_string(), fetched))
        })
        .await
    }

    /// Checks `req`, then runs `job` on its repository on the blocking pool with the
    /// repository's lock held; `job` returns its value and whether it used the network.
    ///
    /// A server that does not answer within `answer_timeout`, or a job past `timeout`, is
    /// given up on: nothing can interrupt libgit2 from outside while it waits on a socket
    /// (its own socket limits end such waits over https and git, see
    /// [`super::socket_timeouts`]), so the thread is left to end by itself, but the lock is
    /// released at once and the repository is
    /// marked stalled until the thread ends (its requests fail at once, no second thread
    /// waits on the same server).
    async fn run<T, F, H>(&self, req: GitRequest, hold: H, job: F) -> Result<T, SourceError>
    where
        T: Send + 'static,
        H: Send + 'static,
        F: FnOnce(&Repository, &Prepared, Instant, &AtomicBool) -> Result<(T, bool), SourceError>
            + Send
            + 'static,
    {
        let prepared = request::prepare(&req, self.allow_file_urls)?;
        let url = prepared.redacted.clone();
        let key = prepared.key.clone();
        let unreachable = |message: String| SourceError::Unreachable {
            url: url.clone(),
            message,
        };
        let started = tokio::time::Instant::now();
        let deadline = started + self.timeout;
        let lock = self.lock_for(&key);
        let acquired = tokio::time::timeout_at(deadline, lock.clone().lock_owned()).await;
        drop(lock);
        let Ok(guard) = acquired else {
            self.prune_lock(&key);
            return Err(unreachable(format!(
                "another fetch of the repository took longer than {}s",
                self.timeout.as_secs()
            )));
        };
        if self.is_stalled(&key) {
            drop(guard);
            self.prune_lock(&key);
            return Err(unreachable(STALLED.to_string()));
        }
        // libgit2 calls back only on a network fetch; a local one counts as answered.
        let answered = Arc::new(AtomicBool::new(prepared.url.scheme() == Scheme::File));
        let end = Arc::new(Mutex::new(ThreadEnd::default()));
        let task = {
            let (cache, answered, end) = (self.clone(), answered.clone(), end.clone());
            let deadline = deadline.into_std();
            tokio::task::spawn_blocking(move || {
                let _hold = hold;
                let result = cache.work(&prepared, deadline, &answered, job);
                cache.thread_ended(&prepared.key, &end);
                result
            })
        };
        let outcome = self
            .watch(task, started, deadline, &answered, &end, &key)
            .await;
        drop(guard);
        self.prune_lock(&key);
        match outcome {
            Watched::Ended(Ok(result)) => result,
            Watched::Ended(Err(e)) => Err(internal(&url, "the git task failed", e)),
            Watched::GaveUp(message) => Err(unreachable(message)),
        }
    }

    /// Waits for `task` until its server's first answer is due, then until `deadline`;
    /// past either, marks the repository stalled and gives up on it.
    async fn watch<T>(
        &self,
        mut task: tokio::task::JoinHandle<T>,
        started: tokio::time::Instant,
        deadline: tokio::time::Instant,
        answered: &AtomicBool,
        end: &Mutex<ThreadEnd>,
        key: &str,
    ) -> Watched<T> {
        let answer_due = (started + self.answer_timeout).min(deadline);
        if let Ok(result) = tokio::time::timeout_at(answer_due, &mut task).await {
            return Watched::Ended(result);
        }
        let message = if answered.load(Ordering::Relaxed) {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(result) => return Watched::Ended(result),
                Err(_) => format!(
                    "the fetch did not finish within {}s",
                    self.timeout.as_secs()
                ),
            }
        } else {
            format!(
                "the server accepted no connection or sent no answer within {}s",
                self.answer_timeout.as_secs()
            )
        };
        {
            let mut end = end.lock().unwrap_or_else(PoisonError::into_inner);
            if !end.done {
                end.abandoned = true;
                self.stalled
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key.to_string());
                tracing::warn!(%key, %message, "gave up on a stalled git fetch");
                return Watched::GaveUp(message);
            }
        }
        // It ended just now.
        Watched::Ended(task.await)
    }

    /// The blocking part of [`GitCache::run`], on the repository of `prepared`.
    fn work<T, F>(
        &self,
        prepared: &Prepared,
        deadline: Instant,
        answered: &AtomicBool,
        job: F,
    ) -> Result<T, SourceError>
    where
        F: FnOnce(&Repository, &Prepared, Instant, &AtomicBool) -> Result<(T, bool), SourceError>,
    {
        let dir = self.repos_dir().join(&prepared.key);
        let url = prepared.redacted.as_str();
        let (repo, created) = git::open_or_init(&dir, url)?;
        if created {
            write_best_effort(&dir.join(URL_FILE), url.as_bytes());
        }
        let result = job(&repo, prepared, deadline, answered);
        drop(repo);
        if created && result.is_err() {
            // Nothing useful arrived: do not leave an empty repository behind for every
            // mistyped URL.
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            write_best_effort(
                &dir.join(LAST_USED_FILE),
                now_nanos().to_string().as_bytes(),
            );
        }
        let (value, used_network) = result?;
        if used_network {
            self.evict(&prepared.key);
        }
        Ok(value)
    }

    /// Records that the thread working on `key` ended; a repository given up on is usable
    /// again from now on.
    fn thread_ended(&self, key: &str, end: &Mutex<ThreadEnd>) {
        let mut end = end.lock().unwrap_or_else(PoisonError::into_inner);
        end.done = true;
        if end.abandoned {
            self.stalled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(key);
        }
    }

    fn is_stalled(&self, key: &str) -> bool {
        self.stalled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }

    fn repos_dir(&self) -> PathBuf {
        self.root.join("repos")
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.entry(key.to_string()).or_default().clone()
    }

    /// Forgets the lock of `key` once nobody holds or waits for it, so the map holds only
    /// repositories in use.
    fn prune_lock(&self, key: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if locks
            .get(key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(key);
        }
    }

    /// Moves the repository `key` into `trash` and deletes it there.
    fn remove_repo(&self, trash: &Path, key: &str) -> std::io::Result<()> {
        let from = self.repos_dir().join(key);
        let to = trash.join(key);
        std::fs::create_dir_all(trash)
            .and_then(|()| std::fs::rename(&from, &to))
            .and_then(|()| std::fs::remove_dir_all(&to))
    }

    /// Deletes least recently used repositories until the cache fits its budget (see the
    /// module docs). Failures are logged: a full cache must not fail a fetch that worked.
    fn evict(&self, keep: &str) {
        let _one_at_a_time = self.evicting.lock().unwrap_or_else(PoisonError::into_inner);
        let trash = self.root.join("trash");
        let _ = std::fs::remove_dir_all(&trash);
        let Ok(entries) = std::fs::read_dir(self.repos_dir()) else {
            return;
        };
        let mut repos: Vec<(u128, String, u64)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let key = entry.file_name().into_string().ok()?;
                let is_key = key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit());
                is_key.then(|| (last_used(&entry.path()), key, dir_size(&entry.path())))
            })
            .collect();
        let mut total: u64 = repos.iter().map(|(_, _, size)| size).sum();
        if total <= self.max_bytes {
            return;
        }
        repos.sort();
        for (_, key, size) in repos {
            if total <= self.max_bytes {
                break;
            }
            if key == keep || self.is_stalled(&key) {
                continue;
            }
            let lock = self.lock_for(&key);
            let removed = match lock.try_lock() {
                Ok(_in_use_by_nobody) => Some(self.remove_repo(&trash, &key)),
                Err(_) => None,
            };
            drop(lock);
            self.prune_lock(&key);
            match removed {
                Some(Ok(())) => {
                    total = total.saturating_sub(size);
                    tracing::info!(%key, bytes = size, "evicted git cache entry");
                }
                Some(Err(error)) => {
                    tracing::warn!(%key, %error, "failed to evict git cache entry");
                }
                None => {}
            }
        }
        if total > self.max_bytes {
            tracing::warn!(
                bytes = total,
                budget = self.max_bytes,
                "git cache stays over budget: the repositories in use are larger than it"
            );
        }
    }
}

/// What [`GitCache::watch`] saw of its blocking task.
enum Watched<T> {
    /// The task ended (or panicked).
    Ended(Result<T, tokio::task::JoinError>),
    /// The task was given up on, for this reason.
    GaveUp(String),
}

/// Whether a blocking fetch thread ended and whether its caller gave up on it before.
#[derive(Debug, Default)]
struct ThreadEnd {
    done: bool,
    abandoned: bool,
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// Last use of a cached repository; 0 (oldest) when unknown.
fn last_used(dir: &Path) -> u128 {
    std::fs::read_to_string(dir.join(LAST_USED_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes of the regular files under `dir` (symlinks are not followed).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Bookkeeping files help eviction and people; failing to write one must not fail a fetch.
fn write_best_effort(path: &Path, contents: &[u8]) {
    if let Err(error) = std::fs::write(path, contents) {
        tracing::warn!(path = %path.display(), %error, "failed to write git cache bookkeeping");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_a_last_use_counts_as_oldest() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last_used(dir.path()), 0);
        std::fs::write(dir.path().join(LAST_USED_FILE), "42\n").unwrap();
        assert_eq!(last_used(dir.path()), 42);
    }

    #[test]
    fn directory_size_adds_up_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("x"), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join("a/b/y"), [0u8; 32]).unwrap();
        assert_eq!(dir_size(dir.path()), 42);
    }
}
