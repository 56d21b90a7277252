//! Git sources against real repositories made with git2 in temp dirs: `file://` for refs,
//! paths, limits, caching and eviction; a loopback smart-HTTP server (`git http-backend`
//! behind a small CGI bridge with Basic auth) for credentials. Nothing leaves 127.0.0.1.
// clippy.toml allows unwrap in #[test] functions only; the fixtures here are test code too.
#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a panic is a failed test"
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crucible::source::{Credentials, Fetched, GitCache, GitRequest, SourceError};
use git2::{IndexEntry, IndexTime, Oid, Repository, RepositoryInitOptions, Signature};
use tempfile::TempDir;

const MIB: usize = 1024 * 1024;
/// Every test finishes well within this; a hang fails instead of blocking CI.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Fixtures

/// A repository to fetch from, built object by object (no work tree involved), at
/// `<root>/repo`; removed with `root`.
struct Upstream {
    root: TempDir,
    path: PathBuf,
    repo: Repository,
}

/// Mode of a file in a commit.
enum Entry<'a> {
    File(&'a [u8]),
    Symlink(&'a str),
    Submodule(Oid),
}

impl Upstream {
    /// An empty repository whose default branch is `default_branch`.
    fn new(default_branch: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("repo");
        let mut opts = RepositoryInitOptions::new();
        opts.initial_head(default_branch);
        let repo = Repository::init_opts(&path, &opts).unwrap();
        Upstream { root, path, repo }
    }

    fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }

    fn request(&self, reference: Option<&str>, path: Option<&str>) -> GitRequest {
        GitRequest {
            url: self.url(),
            reference: reference.map(Into::into),
            path: path.map(Into::into),
            credentials: None,
        }
    }

    /// Commits exactly `files` (regular files) on `branch`, on top of its current tip.
    fn commit(&self, branch: &str, files: &[(&str, &[u8])]) -> Oid {
        let entries: Vec<(&str, Entry<'_>)> =
            files.iter().map(|(p, d)| (*p, Entry::File(d))).collect();
        self.commit_entries(branch, &entries)
    }

    fn commit_entries(&self, branch: &str, entries: &[(&str, Entry<'_>)]) -> Oid {
        let mut index = self.repo.index().unwrap();
        index.clear().unwrap();
        for (path, entry) in entries {
            let (mode, data, id): (u32, &[u8], Oid) = match entry {
                Entry::File(data) => (0o100644, data, Oid::ZERO_SHA1),
                Entry::Symlink(target) => (0o120000, target.as_bytes(), Oid::ZERO_SHA1),
                Entry::Submodule(commit) => (0o160000, b"", *commit),
            };
            let mut e = IndexEntry {
                ctime: IndexTime::new(0, 0),
                mtime: IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode,
                uid: 0,
                gid: 0,
                file_size: data.len() as u32,
                id,
                flags: 0,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            if matches!(entry, Entry::Submodule(_)) {
                index.add(&e).unwrap();
            } else {
                e.id = Oid::ZERO_SHA1;
                index.add_frombuffer(&e, data).unwrap();
            }
        }
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let refname = format!("refs/heads/{branch}");
        let parent = self
            .repo
            .find_reference(&refname)
            .ok()
            .and_then(|r| r.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let sig = Signature::now("Test", "test@example.invalid").unwrap();
        self.repo
            .commit(Some(&refname), &sig, &sig, "commit", &tree, &parents)
            .unwrap()
    }

    fn lightweight_tag(&self, name: &str, commit: Oid) {
        self.repo
            .reference(&format!("refs/tags/{name}"), commit, false, "tag")
            .unwrap();
    }

    fn annotated_tag(&self, name: &str, commit: Oid) {
        let object = self.repo.find_object(commit, None).unwrap();
        let sig = Signature::now("Test", "test@example.invalid").unwrap();
        self.repo
            .tag(name, &object, &sig, "annotated", false)
            .unwrap();
    }
}

fn cache() -> (TempDir, GitCache) {
    let root = tempfile::tempdir().unwrap();
    let cache = GitCache::new(root.path().join("cache"), u64::MAX).allow_file_urls(true);
    (root, cache)
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("the test did not finish in time")
}

fn names(fetched: &Fetched) -> Vec<&str> {
    fetched.files.keys().map(String::as_str).collect()
}

fn failure<T: std::fmt::Debug>(result: Result<T, SourceError>) -> (String, &'static str) {
    let err = result.unwrap_err();
    (err.to_string(), err.reason())
}

/// Bytes of the regular files under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_usage(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

// ---------------------------------------------------------------------------------------
// Refs

#[tokio::test]
async fn the_default_branch_is_the_remote_head_whatever_its_name() {
    within(async {
        let up = Upstream::new("trunk");
        let head = up.commit("trunk", &[("eval.py", b"print(1)")]);
        up.commit("main", &[("eval.py", b"print(2)")]);
        let (_root, cache) = cache();
        let fetched = cache.fetch(up.request(None, None), MIB).await.unwrap();
        assert_eq!(fetched.commit, head.to_string());
        assert_eq!(fetched.files["eval.py"], b"print(1)");
        assert_eq!(fetched.repo, up.url());
        assert_eq!(
            cache.resolve(up.request(Some("HEAD"), None)).await.unwrap(),
            head.to_string()
        );
    })
    .await;
}

#[tokio::test]
async fn branches_and_both_kinds_of_tags_resolve_to_their_commits() {
    within(async {
        let up = Upstream::new("main");
        let first = up.commit("main", &[("a", b"1")]);
        let second = up.commit("main", &[("a", b"2")]);
        let dev = up.commit("dev", &[("a", b"dev")]);
        up.lightweight_tag("v1", first);
        up.annotated_tag("v2", second);
        let (_root, cache) = cache();
        let resolve = |r: &'static str| cache.resolve(up.request(Some(r), None));
        assert_eq!(resolve("main").await.unwrap(), second.to_string());
        assert_eq!(resolve("dev").await.unwrap(), dev.to_string());
        assert_eq!(resolve("refs/heads/dev").await.unwrap(), dev.to_string());
        assert_eq!(resolve("v1").await.unwrap(), first.to_string());
        assert_eq!(resolve("v2").await.unwrap(), second.to_string());
        assert_eq!(resolve("refs/tags/v2").await.unwrap(), second.to_string());
        let fetched = cache
            .fetch(up.request(Some("v1"), None), MIB)
            .await
            .unwrap();
        assert_eq!(fetched.files["a"], b"1");
    })
    .await;
}

#[tokio::test]
async fn full_and_short_commit_ids_resolve() {
    within(async {
        let up = Upstream::new("main");
        let first = up.commit("main", &[("a", b"1")]);
        up.commit("main", &[("a", b"2")]);
        let (_root, cache) = cache();
        let full = first.to_string();
        assert_eq!(
            cache.resolve(up.request(Some(&full), None)).await.unwrap(),
            full
        );
        let short = full[..7].to_string();
        assert_eq!(
            cache.resolve(up.request(Some(&short), None)).await.unwrap(),
            full
        );
        let upper = full.to_uppercase();
        let fetched = cache
            .fetch(up.request(Some(&upper), None), MIB)
            .await
            .unwrap();
        assert_eq!(fetched.commit, full);
        assert_eq!(fetched.files["a"], b"1");
    })
    .await;
}

#[tokio::test]
async fn an_ambiguous_short_commit_id_is_an_unknown_ref_that_says_so() {
    within(async {
        let up = Upstream::new("main");
        // Enough objects that two share their first four hex digits.
        let contents: Vec<(String, Vec<u8>)> = (0..1500)
            .map(|i| (format!("f{i}"), format!("{i}").into_bytes()))
            .collect();
        let files: Vec<(&str, &[u8])> = contents
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_slice()))
            .collect();
        up.commit("main", &files);
        let mut seen = BTreeMap::new();
        let mut prefix = None;
        up.repo
            .odb()
            .unwrap()
            .foreach(|oid| {
                let p = oid.to_string()[..4].to_string();
                if seen.insert(p.clone(), ()).is_some() {
                    prefix = Some(p);
                    return false;
                }
                true
            })
            .ok();
        let prefix = prefix.expect("1500 objects share a four-digit prefix");
        let (_root, cache) = cache();
        let (message, reason) = failure(cache.resolve(up.request(Some(&prefix), None)).await);
        assert_eq!(reason, "UnknownRef");
        assert!(message.contains("ambiguous"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn an_unknown_ref_names_the_ref_and_the_url() {
    within(async {
        let up = Upstream::new("main");
        up.commit("main", &[("a", b"1")]);
        let (_root, cache) = cache();
        for missing in [
            "nope",
            "feature/x",
            "0123456789abcdef0123456789abcdef01234567",
            "abcdef1",
        ] {
            let (message, reason) =
                failure(cache.fetch(up.request(Some(missing), None), MIB).await);
            assert_eq!(reason, "UnknownRef", "{missing}");
            assert!(message.contains(missing), "{message}");
            assert!(message.contains(&up.url()), "{message}");
        }
    })
    .await;
}

#[tokio::test]
async fn an_empty_repository_has_no_default_branch_to_resolve() {
    within(async {
        let up = Upstream::new("main");
        let (_root, cache) = cache();
        let (message, reason) = failure(cache.resolve(up.request(None, None)).await);
        assert_eq!(reason, "UnknownRef");
        assert!(message.contains("default branch"), "{message}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Caching

#[tokio::test]
async fn a_pinned_commit_stays_while_the_branch_moves_and_the_cache_is_reused() {
    within(async {
        let up = Upstream::new("main");
        let pinned = up.commit("main", &[("eval.py", b"v1")]);
        let (_root, cache) = cache();
        let first = cache
            .fetch(up.request(Some("main"), None), MIB)
            .await
            .unwrap();
        assert_eq!(first.commit, pinned.to_string());

        let dir = cache.repo_dir(&up.request(None, None)).unwrap();
        let inode = std::fs::metadata(&dir).unwrap().ino();
        std::fs::write(dir.join("marker"), "kept").unwrap();

        let moved = up.commit("main", &[("eval.py", b"v2")]);
        assert_eq!(
            cache.resolve(up.request(Some("main"), None)).await.unwrap(),
            moved.to_string()
        );
        let at_pin = cache
            .fetch(up.request(Some(&pinned.to_string()), None), MIB)
            .await
            .unwrap();
        assert_eq!(at_pin.files["eval.py"], b"v1");
        let at_head = cache.fetch(up.request(None, None), MIB).await.unwrap();
        assert_eq!(at_head.files["eval.py"], b"v2");

        // Incremental: the same directory, not a new clone.
        assert_eq!(std::fs::metadata(&dir).unwrap().ino(), inode);
        assert_eq!(std::fs::read_to_string(dir.join("marker")).unwrap(), "kept");
        assert_eq!(std::fs::read_dir(dir.parent().unwrap()).unwrap().count(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_cached_full_commit_id_needs_no_network() {
    within(async {
        let up = Upstream::new("main");
        let commit = up.commit("main", &[("a", b"1")]);
        let (_root, cache) = cache();
        cache.fetch(up.request(None, None), MIB).await.unwrap();
        let request = up.request(Some(&commit.to_string()), None);
        drop(up); // the remote is gone
        let fetched = cache.fetch(request.clone(), MIB).await.unwrap();
        assert_eq!(fetched.files["a"], b"1");
        let (_, reason) = failure(
            cache
                .resolve(GitRequest {
                    reference: Some("main".into()),
                    ..request
                })
                .await,
        );
        assert_eq!(reason, "SourceRepositoryNotFound");
    })
    .await;
}

#[tokio::test]
async fn a_branch_deleted_upstream_disappears_from_the_cache() {
    within(async {
        let up = Upstream::new("main");
        up.commit("main", &[("a", b"1")]);
        up.commit("gone", &[("a", b"2")]);
        let (_root, cache) = cache();
        cache.resolve(up.request(Some("gone"), None)).await.unwrap();
        up.repo
            .find_reference("refs/heads/gone")
            .unwrap()
            .delete()
            .unwrap();
        let (_, reason) = failure(cache.resolve(up.request(Some("gone"), None)).await);
        assert_eq!(reason, "UnknownRef");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_fetches_of_one_repository_all_see_the_same_files() {
    within(async {
        let up = Upstream::new("main");
        let big = vec![7u8; 256 * 1024];
        let commit = up.commit("main", &[("data/big.bin", &big), ("eval.py", b"x")]);
        let (_root, cache) = cache();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let cache = cache.clone();
                let request = up.request(if i % 2 == 0 { Some("main") } else { None }, None);
                tokio::spawn(async move { cache.fetch(request, MIB).await })
            })
            .collect();
        for task in tasks {
            let fetched = task.await.unwrap().unwrap();
            assert_eq!(fetched.commit, commit.to_string());
            assert_eq!(fetched.files["data/big.bin"].len(), big.len());
        }
        let repos = cache.root().join("repos");
        assert_eq!(std::fs::read_dir(repos).unwrap().count(), 1);
    })
    .await;
}

#[tokio::test]
async fn least_recently_used_repositories_are_evicted_over_budget() {
    within(async {
        let ups: Vec<Upstream> = (0..3)
            .map(|i| {
                let up = Upstream::new("main");
                up.commit("main", &[("eval.py", format!("repo {i}").as_bytes())]);
                up
            })
            .collect();
        let (_root, probe) = cache();
        probe.fetch(ups[0].request(None, None), MIB).await.unwrap();
        let one = disk_usage(&probe.root().join("repos"));

        let root = tempfile::tempdir().unwrap();
        let cache = GitCache::new(root.path().to_path_buf(), one * 5 / 2).allow_file_urls(true);
        let dir = |i: usize| cache.repo_dir(&ups[i].request(None, None)).unwrap();
        let a = cache.fetch(ups[0].request(None, None), MIB).await.unwrap();
        cache.fetch(ups[1].request(None, None), MIB).await.unwrap();
        // Using A again (from the cache) makes B the least recently used.
        cache
            .fetch(ups[0].request(Some(&a.commit), None), MIB)
            .await
            .unwrap();
        cache.fetch(ups[2].request(None, None), MIB).await.unwrap();
        assert!(dir(0).exists(), "recently used A is kept");
        assert!(!dir(1).exists(), "least recently used B is evicted");
        assert!(dir(2).exists(), "C, just fetched, is kept");

        // A budget smaller than one repository keeps only the one in use.
        let tiny = GitCache::new(root.path().to_path_buf(), 1).allow_file_urls(true);
        tiny.fetch(ups[1].request(None, None), MIB).await.unwrap();
        assert!(dir(1).exists());
        assert!(!dir(0).exists() && !dir(2).exists());
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Paths and limits

fn tree_upstream() -> (Upstream, Oid) {
    let up = Upstream::new("main");
    let commit = up.commit(
        "main",
        &[
            ("README.md", b"readme"),
            ("evals/arith/eval.py", b"print(42)"),
            ("evals/arith/data/cases.jsonl", b"{}\n"),
            ("evals/arith/data/deep/er/x.txt", b"x"),
            ("evals/other/eval.py", b"other"),
        ],
    );
    (up, commit)
}

#[tokio::test]
async fn a_directory_path_yields_every_file_below_it_relative_to_it() {
    within(async {
        let (up, _) = tree_upstream();
        let (_root, cache) = cache();
        for path in ["evals/arith", "./evals/arith/", "/evals/arith"] {
            let fetched = cache
                .fetch(up.request(None, Some(path)), MIB)
                .await
                .unwrap();
            assert_eq!(
                names(&fetched),
                ["data/cases.jsonl", "data/deep/er/x.txt", "eval.py"],
                "{path}"
            );
            assert_eq!(fetched.total_bytes, 3 + 1 + 9);
        }
        let whole = cache.fetch(up.request(None, None), MIB).await.unwrap();
        assert_eq!(whole.files.len(), 5);
        assert!(whole.files.contains_key("evals/other/eval.py"));
    })
    .await;
}

#[tokio::test]
async fn a_file_path_yields_one_entry_named_after_the_file() {
    within(async {
        let (up, _) = tree_upstream();
        let (_root, cache) = cache();
        let fetched = cache
            .fetch(up.request(None, Some("evals/arith/eval.py")), MIB)
            .await
            .unwrap();
        assert_eq!(names(&fetched), ["eval.py"]);
        assert_eq!(fetched.files["eval.py"], b"print(42)");
    })
    .await;
}

#[tokio::test]
async fn a_missing_or_escaping_path_is_an_error_naming_it() {
    within(async {
        let (up, commit) = tree_upstream();
        let (_root, cache) = cache();
        let (message, reason) =
            failure(cache.fetch(up.request(None, Some("evals/nope")), MIB).await);
        assert_eq!(reason, "SourcePathNotFound");
        assert!(
            message.contains("evals/nope") && message.contains(&commit.to_string()),
            "{message}"
        );
        let (_, reason) = failure(cache.fetch(up.request(None, Some("../etc")), MIB).await);
        assert_eq!(reason, "InvalidSourcePath");
    })
    .await;
}

#[tokio::test]
async fn symlinks_and_submodules_are_skipped_inside_a_directory_and_refused_as_the_path() {
    within(async {
        let up = Upstream::new("main");
        let other = up.commit("other", &[("x", b"x")]);
        up.commit_entries(
            "main",
            &[
                ("src/eval.py", Entry::File(b"ok")),
                ("src/link.py", Entry::Symlink("eval.py")),
                ("src/vendor", Entry::Submodule(other)),
            ],
        );
        let (_root, cache) = cache();
        let fetched = cache
            .fetch(up.request(None, Some("src")), MIB)
            .await
            .unwrap();
        assert_eq!(names(&fetched), ["eval.py"]);
        assert_eq!(fetched.skipped, ["link.py", "vendor"]);
        for (path, kind) in [("src/link.py", "symlink"), ("src/vendor", "submodule")] {
            let (message, reason) = failure(cache.fetch(up.request(None, Some(path)), MIB).await);
            assert_eq!(reason, "SourceUnsupportedEntry");
            assert!(message.contains(kind), "{message}");
        }
    })
    .await;
}

#[tokio::test]
async fn files_over_the_limit_are_too_large_and_reading_stops() {
    within(async {
        let up = Upstream::new("main");
        let big = vec![1u8; 3 * MIB];
        up.commit("main", &[("big.bin", &big), ("small.txt", b"12345")]);
        let (_root, cache) = cache();
        let err = cache.fetch(up.request(None, None), MIB).await.unwrap_err();
        assert_eq!(err.reason(), "SourceTooLarge");
        assert!(!err.is_transient());
        match err {
            SourceError::TooLarge { total, limit, .. } => {
                assert_eq!(limit, MIB);
                assert!(total > limit && total <= big.len() + 5, "{total}");
            }
            other => panic!("{other:?}"),
        }
        let small = cache
            .fetch(up.request(None, Some("small.txt")), 5)
            .await
            .unwrap();
        assert_eq!(small.total_bytes, 5);
    })
    .await;
}

#[tokio::test]
async fn more_files_than_a_pod_can_mount_are_refused() {
    within(async {
        let up = Upstream::new("main");
        let names: Vec<String> = (0..=crucible::crd::bounds::MAX_SOURCE_FILES)
            .map(|i| format!("f/{i}.txt"))
            .collect();
        let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
        up.commit("main", &files);
        let (_root, cache) = cache();
        let err = cache
            .fetch(up.request(None, Some("f")), MIB)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "SourceTooManyFiles");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("more than 1000 files"), "{err}");
        up.commit("main", &files[1..]);
        let fetched = cache.fetch(up.request(None, Some("f")), MIB).await.unwrap();
        assert_eq!(fetched.files.len(), 1000);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Schemes and failures without a server

#[tokio::test]
async fn file_urls_are_refused_unless_the_cache_allows_them() {
    within(async {
        let (up, _) = tree_upstream();
        let root = tempfile::tempdir().unwrap();
        let strict = GitCache::new(root.path().to_path_buf(), u64::MAX);
        let (message, reason) = failure(strict.fetch(up.request(None, None), MIB).await);
        assert_eq!(reason, "SourceRefused");
        assert!(message.contains("file://"), "{message}");
        let (_, reason) = failure(
            strict
                .fetch(
                    GitRequest {
                        url: up.path.display().to_string(),
                        ..Default::default()
                    },
                    MIB,
                )
                .await,
        );
        assert_eq!(reason, "InvalidSourceUrl");
    })
    .await;
}

#[tokio::test]
async fn a_missing_repository_is_not_found_and_leaves_no_cache_behind() {
    within(async {
        let (_root, cache) = cache();
        let request = GitRequest {
            url: "file:///nonexistent/crucible/repo".into(),
            ..Default::default()
        };
        let (message, reason) = failure(cache.fetch(request.clone(), MIB).await);
        assert_eq!(reason, "SourceRepositoryNotFound", "{message}");
        assert!(!cache.repo_dir(&request).unwrap().exists());
    })
    .await;
}

/// A loopback port with nothing listening.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn connection_refused_is_unreachable_and_transient() {
    within(async {
        let (_root, cache) = cache();
        let request = GitRequest {
            url: format!("http://127.0.0.1:{}/repo", closed_port()),
            ..Default::default()
        };
        let err = cache.resolve(request).await.unwrap_err();
        assert_eq!(err.reason(), "SourceUnreachable", "{err}");
        assert!(err.is_transient());
    })
    .await;
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_unreachable() {
    within(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (_root, cache) = cache();
        let cache = cache.with_timeout(Duration::from_secs(2));
        let started = Instant::now();
        let err = cache
            .resolve(GitRequest {
                url: format!("http://127.0.0.1:{port}/repo"),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "SourceUnreachable", "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(listener); // the connection closes and the blocking thread ends
    })
    .await;
}

/// A listener that records whether anything connected.
fn watched_port() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

const KNOWN_HOSTS: &str =
    "127.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fn ssh_key(known_hosts: Option<&str>) -> Option<Credentials> {
    Some(Credentials::Ssh {
        private_key: "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n".into(),
        known_hosts: known_hosts.map(Into::into),
        passphrase: None,
    })
}

#[tokio::test]
async fn ssh_without_known_hosts_is_refused_before_connecting() {
    within(async {
        let (listener, port) = watched_port();
        let (_root, cache) = cache();
        for (url, credentials) in [
            (
                format!("ssh://git@127.0.0.1:{port}/org/repo"),
                ssh_key(None),
            ),
            (format!("ssh://git@127.0.0.1:{port}/org/repo"), None),
        ] {
            let (message, reason) = failure(
                cache
                    .fetch(
                        GitRequest {
                            url,
                            credentials,
                            ..Default::default()
                        },
                        MIB,
                    )
                    .await,
            );
            assert_eq!(reason, "SourceRefused");
            assert!(message.contains("known_hosts"), "{message}");
        }
        let (message, reason) = failure(
            cache
                .resolve(GitRequest {
                    url: "git@127.0.0.1:org/repo".into(),
                    credentials: ssh_key(None),
                    ..Default::default()
                })
                .await,
        );
        assert_eq!(reason, "SourceRefused", "{message}");
        assert!(listener.accept().is_err(), "nothing may have connected");
    })
    .await;
}

#[tokio::test]
async fn ssh_with_unreadable_known_hosts_is_invalid_and_never_connects() {
    within(async {
        let (listener, port) = watched_port();
        let (_root, cache) = cache();
        let (message, reason) = failure(
            cache
                .resolve(GitRequest {
                    url: format!("ssh://git@127.0.0.1:{port}/org/repo"),
                    credentials: ssh_key(Some("127.0.0.1 ssh-ed25519")),
                    ..Default::default()
                })
                .await,
        );
        assert_eq!(reason, "InvalidSourceCredentials");
        assert!(message.contains("known_hosts"), "{message}");
        assert!(listener.accept().is_err(), "nothing may have connected");
    })
    .await;
}

#[tokio::test]
async fn ssh_with_known_hosts_to_a_closed_port_is_unreachable() {
    within(async {
        let (_root, cache) = cache();
        let err = cache
            .resolve(GitRequest {
                url: format!("ssh://git@127.0.0.1:{}/org/repo", closed_port()),
                credentials: ssh_key(Some(KNOWN_HOSTS)),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "SourceUnreachable", "{err}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Smart HTTP with Basic auth on 127.0.0.1

/// `git http-backend` (CGI) behind a one-request-per-connection HTTP/1.1 server on an
/// ephemeral loopback port that demands Basic auth. Stops when dropped.
struct GitHttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    unauthorized: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl GitHttpServer {
    fn start(project_root: PathBuf, username: &str, password: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let unauthorized = Arc::new(AtomicUsize::new(0));
        let expected = format!(
            "Basic {}",
            base64(format!("{username}:{password}").as_bytes())
        );
        let user = username.to_string();
        let thread = {
            let (stop, unauthorized) = (stop.clone(), unauthorized.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let _ = serve(stream, &project_root, &expected, &user, &unauthorized);
                    }
                }
            })
        };
        GitHttpServer {
            addr,
            stop,
            unauthorized,
            thread: Some(thread),
        }
    }

    fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}", self.addr.port())
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One request: check auth, run the CGI, send its answer, close.
fn serve(
    stream: TcpStream,
    root: &Path,
    expected_auth: &str,
    user: &str,
    unauthorized: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let body = read_body(&mut reader, &headers)?;
    let mut out = stream;
    if headers.get("authorization").map(String::as_str) != Some(expected_auth) {
        unauthorized.fetch_add(1, Ordering::SeqCst);
        return out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut cgi = Command::new("git");
    cgi.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (header, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(value) = headers.get(header) {
            cgi.env(var, value);
        }
    }
    let mut child = cgi.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let output = child.wait_with_output()?;
    let _ = writer.join();
    let raw = output.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        return out
            .write_all(b"HTTP/1.1 500 CGI\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    };
    let mut status = "200 OK".to_string();
    let mut response_headers = String::new();
    for line in String::from_utf8_lossy(&raw[..end]).lines() {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_string();
            }
            Some(_) => response_headers.push_str(&format!("{line}\r\n")),
            None => {}
        }
    }
    let body = &raw[end + sep..];
    out.write_all(
        format!(
            "HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )?;
    out.write_all(body)
}

fn read_body(
    reader: &mut impl BufRead,
    headers: &BTreeMap<String, String>,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = headers.get("content-length").and_then(|v| v.parse().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(body)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A repository served over HTTP as `/repo` (the server's project root is `up.root`).
fn served_upstream() -> (Upstream, Oid) {
    let up = Upstream::new("main");
    let commit = up.commit("main", &[("evals/eval.py", b"print('over http')")]);
    (up, commit)
}

fn http_request(url: String, credentials: Option<Credentials>) -> GitRequest {
    GitRequest {
        url,
        reference: Some("main".into()),
        path: Some("evals".into()),
        credentials,
    }
}

#[tokio::test]
async fn basic_auth_over_loopback_http_fetches_with_the_right_credentials() {
    within(async {
        let (up, commit) = served_upstream();
        let server = GitHttpServer::start(up.root.path().to_path_buf(), "alice", "s3cret");
        let (_root, cache) = cache();
        let credentials = Credentials::Basic {
            username: "alice".into(),
            password: "s3cret".into(),
        };
        let fetched = cache
            .fetch(http_request(server.url("repo"), Some(credentials)), MIB)
            .await
            .unwrap();
        assert_eq!(fetched.commit, commit.to_string());
        assert_eq!(fetched.files["eval.py"], b"print('over http')");
        // Again, incrementally, against the same cache.
        let again = cache
            .resolve(http_request(
                server.url("repo"),
                Some(Credentials::Basic {
                    username: "alice".into(),
                    password: "s3cret".into(),
                }),
            ))
            .await
            .unwrap();
        assert_eq!(again, commit.to_string());
    })
    .await;
}

#[tokio::test]
async fn a_token_is_sent_as_basic_auth_with_the_x_access_token_user() {
    within(async {
        let (up, commit) = served_upstream();
        let server = GitHttpServer::start(up.root.path().to_path_buf(), "x-access-token", "tok");
        let (_root, cache) = cache();
        let commit_seen = cache
            .resolve(http_request(
                server.url("repo"),
                Some(Credentials::Token("tok".into())),
            ))
            .await
            .unwrap();
        assert_eq!(commit_seen, commit.to_string());
    })
    .await;
}

#[tokio::test]
async fn wrong_credentials_fail_fast_with_auth_failed() {
    within(async {
        let (up, _) = served_upstream();
        let server = GitHttpServer::start(up.root.path().to_path_buf(), "alice", "s3cret");
        let (_root, cache) = cache();
        let started = Instant::now();
        let wrong = Credentials::Basic {
            username: "alice".into(),
            password: "wrong".into(),
        };
        let err = cache
            .fetch(http_request(server.url("repo"), Some(wrong)), MIB)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "SourceAuthFailed", "{err}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("rejected"), "{err}");
        assert!(
            !err.to_string().contains("wrong"),
            "the password never shows: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        let attempts = server.unauthorized.load(Ordering::SeqCst);
        assert!(attempts <= 3, "credentials were retried {attempts} times");
    })
    .await;
}

#[tokio::test]
async fn missing_credentials_fail_with_auth_failed() {
    within(async {
        let (up, _) = served_upstream();
        let server = GitHttpServer::start(up.root.path().to_path_buf(), "alice", "s3cret");
        let (_root, cache) = cache();
        let err = cache
            .fetch(http_request(server.url("repo"), None), MIB)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "SourceAuthFailed", "{err}");
        assert!(err.to_string().contains("secretRef"), "{err}");
        assert!(server.unauthorized.load(Ordering::SeqCst) >= 1);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// HTTPS with a self-signed certificate on 127.0.0.1
//
// A Python `ssl` server runs the same CGI bridge over TLS with a certificate made by
// `openssl req`. The fetch that must succeed runs in a child test process whose OpenSSL
// trusts exactly that certificate (`SSL_CERT_FILE`), so the controller's code has no test
// hook and the test process's own trust store stays the system's.

/// The TLS smart-HTTP server: Basic auth, then `git http-backend`. Prints its port, stops
/// when its stdin closes.
const TLS_SERVER_PY: &str = r#"
import base64, http.server, os, ssl, subprocess, sys, threading
root, cert, key, user, password = sys.argv[1:6]
expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_GET(self):
        self.git()
    def do_POST(self):
        self.git()
    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                chunk = self.rfile.read(size + 2)
                if size == 0:
                    return data
                data += chunk[:size]
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))
    def reply(self, status, headers, payload):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True
    def git(self):
        body = self.body()
        if self.headers.get("Authorization") != expected:
            return self.reply(401, [("WWW-Authenticate", 'Basic realm="git"')], b"")
        path, _, query = self.path.partition("?")
        env = dict(os.environ, GIT_PROJECT_ROOT=root, GIT_HTTP_EXPORT_ALL="1",
                   REQUEST_METHOD=self.command, PATH_INFO=path, QUERY_STRING=query,
                   CONTENT_LENGTH=str(len(body)), REMOTE_USER=user, REMOTE_ADDR="127.0.0.1")
        for header, var in (("Content-Type", "CONTENT_TYPE"),
                            ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
                            ("Git-Protocol", "GIT_PROTOCOL")):
            if self.headers.get(header):
                env[var] = self.headers[header]
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
        head, sep, payload = out.partition(b"\r\n\r\n")
        if not sep:
            head, sep, payload = out.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif value:
                headers.append((name, value.strip()))
        self.reply(status, headers, payload)

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
server.shutdown()
"#;

/// The Python TLS server and its certificate; stops when dropped.
struct TlsServer {
    child: std::process::Child,
    port: u16,
    cert: PathBuf,
    _dir: TempDir,
}

impl TlsServer {
    /// `None` (and a note on stderr) when `python3` or `openssl` is not installed.
    fn start(project_root: &Path, username: &str, password: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: openssl could not make a test certificate");
            return None;
        }
        let script = dir.path().join("server.py");
        std::fs::write(&script, TLS_SERVER_PY).unwrap();
        let Ok(mut child) = Command::new("python3")
            .arg(&script)
            .arg(project_root)
            .args([&cert, &key])
            .args([username, password])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        else {
            eprintln!("SKIPPED: python3 is not installed");
            return None;
        };
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server prints its port");
        Some(TlsServer {
            child,
            port,
            cert,
            _dir: dir,
        })
    }

    fn url(&self, host: &str, repo: &str) -> String {
        format!("https://{host}:{}/{repo}", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // EOF: the server shuts down
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Environment of the child test process: where the server is and what to expect.
const TLS_URL_ENV: &str = "CRUCIBLE_TEST_TLS_URL";
const TLS_COMMIT_ENV: &str = "CRUCIBLE_TEST_TLS_COMMIT";

#[tokio::test]
async fn https_with_basic_auth_works_against_a_trusted_certificate_and_fails_closed_otherwise() {
    within(async {
        let (up, commit) = served_upstream();
        let Some(server) = TlsServer::start(up.root.path(), "alice", "s3cret") else {
            return;
        };
        // This process does not trust the self-signed certificate: refused, not transient.
        let (_root, cache) = cache();
        let credentials = Credentials::Basic {
            username: "alice".into(),
            password: "s3cret".into(),
        };
        let err = cache
            .resolve(http_request(
                server.url("127.0.0.1", "repo"),
                Some(credentials),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "SourceAuthFailed", "{err}");
        assert!(err.to_string().contains("certificate"), "{err}");

        // A process that trusts exactly this certificate fetches, by IP and by name.
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--exact",
                "tls_fetch_in_a_process_that_trusts_the_test_certificate",
            ])
            .args(["--include-ignored", "--nocapture", "--test-threads=1"])
            .env("SSL_CERT_FILE", &server.cert)
            .env_remove("SSL_CERT_DIR")
            .env(TLS_URL_ENV, server.url("127.0.0.1", "repo"))
            .env(TLS_COMMIT_ENV, commit.to_string());
        let child = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .unwrap();
        let out = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success(),
            "{out}\n{}",
            String::from_utf8_lossy(&child.stderr)
        );
        assert!(
            out.contains("1 passed"),
            "the child test did not run: {out}"
        );
    })
    .await;
}

/// Run by the test above, in a process whose OpenSSL trusts the test certificate.
#[tokio::test]
#[ignore = "run by https_with_basic_auth_works_against_a_trusted_certificate_and_fails_closed_otherwise"]
async fn tls_fetch_in_a_process_that_trusts_the_test_certificate() {
    let (Ok(url), Ok(commit)) = (std::env::var(TLS_URL_ENV), std::env::var(TLS_COMMIT_ENV)) else {
        return;
    };
    within(async {
        let (_root, cache) = cache();
        let basic = |password: &str| {
            Some(Credentials::Basic {
                username: "alice".into(),
                password: password.into(),
            })
        };
        let fetched = cache
            .fetch(http_request(url.clone(), basic("s3cret")), MIB)
            .await
            .unwrap();
        assert_eq!(fetched.commit, commit);
        assert_eq!(fetched.files["eval.py"], b"print('over http')");
        let by_name = url.replace("127.0.0.1", "localhost");
        let (_root2, other) = self::cache();
        assert_eq!(
            other
                .resolve(http_request(by_name, basic("s3cret")))
                .await
                .unwrap(),
            commit
        );
        let err = cache
            .fetch(http_request(url, basic("wrong")), MIB)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "SourceAuthFailed", "{err}");
        println!("tls-fetched {commit}");
    })
    .await;
}
