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
//! repository just used and any repository another task is using at that moment. So one
//! repository larger than the whole budget stays (it is in use) and the cache can exceed the
//! budget by at most that repository until the next eviction. Eviction moves a directory into
//! `trash/` first (a rename, atomic) and then deletes it, so a crash never leaves half a
//! repository under `repos/`.
//!
//! # Assumptions
//!
//! One `GitCache` (and its clones) per cache root and process: the per-repository locks live
//! in memory. The controller runs one active replica (leader election), so that holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use git2::Repository;

use super::error::internal;
use super::request::{self, Prepared};
use super::{Fetched, GitRequest, SourceError, git};

/// Default limit for one fetch, lock wait included. A first clone of a large repository over
/// a slow link takes minutes; a reconcile should not wait much longer than that.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

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
    allow_file_urls: bool,
    locks: Arc<Locks>,
    evicting: Arc<Mutex<()>>,
}

impl GitCache {
    /// A cache under `root` (created on first use) that evicts down to `max_bytes`.
    pub fn new(root: PathBuf, max_bytes: u64) -> Self {
        GitCache {
            root,
            max_bytes,
            timeout: DEFAULT_TIMEOUT,
            allow_file_urls: false,
            locks: Arc::default(),
            evicting: Arc::default(),
        }
    }

    /// Limit for one `fetch`/`resolve`, waiting for the repository's lock included
    /// ([`DEFAULT_TIMEOUT`] unless set). Past it the call returns `SourceUnreachable`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether `file://` URLs are fetched (off by default: they read the controller's own
    /// disk). For tests and for mirrors mounted into the controller.
    pub fn allow_file_urls(mut self, allow: bool) -> Self {
        self.allow_file_urls = allow;
        self
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
        self.run(req, move |repo, prepared, deadline| {
            let (commit, fetched) = git::resolve(repo, prepared, deadline)?;
            Ok((git::read(repo, prepared, commit, max_files_bytes)?, fetched))
        })
        .await
    }

    /// Resolves `req.reference` to a commit (40 hex digits) without reading files. A branch
    /// or tag is always looked up on the remote (an incremental fetch), so `follow: true`
    /// sees a moved branch; a full commit id the cache has needs no network.
    pub async fn resolve(&self, req: GitRequest) -> Result<String, SourceError> {
        self.run(req, |repo, prepared, deadline| {
            let (commit, fetched) = git::resolve(repo, prepared, deadline)?;
            Ok((commit.to_string(), fetched))
        })
        .await
    }

    /// Checks `req`, then runs `job` on its repository on the blocking pool with the
    /// repository's lock held; `job` returns its value and whether it used the network.
    async fn run<T, F>(&self, req: GitRequest, job: F) -> Result<T, SourceError>
    where
        T: Send + 'static,
        F: FnOnce(&Repository, &Prepared, Instant) -> Result<(T, bool), SourceError>
            + Send
            + 'static,
    {
        let prepared = request::prepare(&req, self.allow_file_urls)?;
        let url = prepared.redacted.clone();
        let task_url = url.clone();
        let lock = self.lock_for(&prepared.key);
        let deadline = Instant::now() + self.timeout;
        let cache = self.clone();
        let work = async move {
            let guard = lock.lock_owned().await;
            let task = tokio::task::spawn_blocking(move || {
                let dir = cache.repos_dir().join(&prepared.key);
                let url = prepared.redacted.as_str();
                let (repo, created) = git::open_or_init(&dir, url)?;
                if created {
                    write_best_effort(&dir.join(URL_FILE), url.as_bytes());
                }
                let result = job(&repo, &prepared, deadline);
                drop(repo);
                if created && result.is_err() {
                    // Nothing useful arrived: do not leave an empty repository behind for
                    // every mistyped URL.
                    let _ = std::fs::remove_dir_all(&dir);
                } else {
                    write_best_effort(
                        &dir.join(LAST_USED_FILE),
                        now_nanos().to_string().as_bytes(),
                    );
                }
                drop(guard);
                let (value, used_network) = result?;
                if used_network {
                    cache.evict(&prepared.key);
                }
                Ok(value)
            });
            task.await
                .map_err(|e| internal(&task_url, "the git task failed", e))?
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(SourceError::Unreachable {
                url,
                message: format!(
                    "no answer within {}s (or another fetch of the repository took that long)",
                    self.timeout.as_secs()
                ),
            }),
        }
    }

    fn repos_dir(&self) -> PathBuf {
        self.root.join("repos")
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.entry(key.to_string()).or_default().clone()
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
            if key == keep {
                continue;
            }
            let lock = self.lock_for(&key);
            let Ok(_in_use_by_nobody) = lock.try_lock() else {
                continue;
            };
            let from = self.repos_dir().join(&key);
            let to = trash.join(&key);
            let removed = std::fs::create_dir_all(&trash)
                .and_then(|()| std::fs::rename(&from, &to))
                .and_then(|()| std::fs::remove_dir_all(&to));
            match removed {
                Ok(()) => {
                    total = total.saturating_sub(size);
                    tracing::info!(%key, bytes = size, "evicted git cache entry");
                }
                Err(error) => tracing::warn!(%key, %error, "failed to evict git cache entry"),
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
