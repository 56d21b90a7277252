//! Fixtures shared by the git source tests.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crucible::source::{Fetched, GitCache, GitRequest, SourceError};
use git2::{IndexEntry, IndexTime, Oid, Repository, RepositoryInitOptions, Signature};
use tempfile::TempDir;

pub(crate) const MIB: usize = 1024 * 1024;
/// Every test finishes well within this; a hang fails instead of blocking CI.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A repository to fetch from, built object by object (no work tree involved), at
/// `<root>/repo`; removed with `root`.
pub(crate) struct Upstream {
    pub(crate) root: TempDir,
    pub(crate) path: PathBuf,
    pub(crate) repo: Repository,
}

/// Mode of a file in a commit.
pub(crate) enum Entry<'a> {
    File(&'a [u8]),
    Symlink(&'a str),
    Submodule(Oid),
}

impl Upstream {
    /// An empty repository whose default branch is `default_branch`.
    pub(crate) fn new(default_branch: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("repo");
        let mut opts = RepositoryInitOptions::new();
        opts.initial_head(default_branch);
        let repo = Repository::init_opts(&path, &opts).unwrap();
        Upstream { root, path, repo }
    }

    pub(crate) fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }

    pub(crate) fn request(&self, reference: Option<&str>, path: Option<&str>) -> GitRequest {
        GitRequest {
            url: self.url(),
            reference: reference.map(Into::into),
            path: path.map(Into::into),
            credentials: None,
        }
    }

    /// Commits exactly `files` (regular files) on `branch`, on top of its current tip.
    pub(crate) fn commit(&self, branch: &str, files: &[(&str, &[u8])]) -> Oid {
        let entries: Vec<(&str, Entry<'_>)> =
            files.iter().map(|(p, d)| (*p, Entry::File(d))).collect();
        self.commit_entries(branch, &entries)
    }

    pub(crate) fn commit_entries(&self, branch: &str, entries: &[(&str, Entry<'_>)]) -> Oid {
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

    pub(crate) fn lightweight_tag(&self, name: &str, commit: Oid) {
        self.repo
            .reference(&format!("refs/tags/{name}"), commit, false, "tag")
            .unwrap();
    }

    pub(crate) fn annotated_tag(&self, name: &str, commit: Oid) {
        let object = self.repo.find_object(commit, None).unwrap();
        let sig = Signature::now("Test", "test@example.invalid").unwrap();
        self.repo
            .tag(name, &object, &sig, "annotated", false)
            .unwrap();
    }
}

pub(crate) fn cache() -> (TempDir, GitCache) {
    let root = tempfile::tempdir().unwrap();
    let cache = GitCache::new(root.path().join("cache"), u64::MAX).allow_file_urls(true);
    (root, cache)
}

pub(crate) async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("the test did not finish in time")
}

pub(crate) fn names(fetched: &Fetched) -> Vec<&str> {
    fetched.files.keys().map(String::as_str).collect()
}

pub(crate) fn failure<T: std::fmt::Debug>(
    result: Result<T, SourceError>,
) -> (String, &'static str) {
    let err = result.unwrap_err();
    (err.to_string(), err.reason())
}

/// Bytes of the regular files under `dir`.
pub(crate) fn disk_usage(dir: &Path) -> u64 {
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

pub(crate) fn tree_upstream() -> (Upstream, Oid) {
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
