//! Blocking libgit2 work on one cached bare repository: open it (or rebuild it), fetch
//! incrementally, resolve a ref to a commit, read the files under a path at that commit.
//! Does I/O (network and disk): call it only from a blocking thread, with the repository's
//! lock held (see [`super::cache`]).
//!
//! The cache repository is a bare mirror: the remote's branches are `refs/heads/*`, its tags
//! `refs/tags/*`, and `HEAD` follows the remote's default branch. Each fetch asks for all
//! branches and tags (git sends only the objects the cache lacks) and prunes branches and
//! tags deleted upstream.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use git2::{
    AutotagOption, ErrorCode, FetchOptions, FetchPrune, ObjectType, Oid, RemoteRedirect,
    Repository, Tree,
};

use super::Fetched;
use super::auth;
use super::error::{CallbackFailure, SourceError, classify_remote, internal};
use super::request::{Auth, Prepared};
use crate::crd::bounds::MAX_SOURCE_FILES;

/// Refspecs of a mirror fetch. Forced, so moved branches and re-pointed tags follow upstream.
const MIRROR_REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// Git file modes of tree entries.
const MODE_TREE: i32 = 0o040000;
const MODE_SYMLINK: i32 = 0o120000;
const MODE_SUBMODULE: i32 = 0o160000;

/// Opens the bare repository at `dir`, creating it when missing and rebuilding it when it
/// cannot be opened (a crash during creation, a corrupted directory). Returns whether it was
/// created now.
pub(crate) fn open_or_init(dir: &Path, url: &str) -> Result<(Repository, bool), SourceError> {
    if dir.exists() {
        match Repository::open_bare(dir) {
            Ok(repo) => return Ok((repo, false)),
            Err(err) => {
                tracing::warn!(dir = %dir.display(), %url, error = %err, "rebuilding unreadable git cache");
                std::fs::remove_dir_all(dir)
                    .map_err(|e| internal(url, "removing the unreadable cache directory", e))?;
            }
        }
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| internal(url, "creating the cache directory", e))?;
    }
    let repo = Repository::init_bare(dir)
        .map_err(|e| internal(url, "creating the cache repository", e))?;
    Ok((repo, true))
}

/// Resolves the request's ref to a commit, fetching first unless the ref is a full commit id
/// the cache already has. Returns the commit and whether the network was used.
pub(crate) fn resolve(
    repo: &Repository,
    prepared: &Prepared,
    deadline: Instant,
    answered: &AtomicBool,
) -> Result<(Oid, bool), SourceError> {
    let full_id = prepared
        .reference
        .as_deref()
        .filter(|r| is_hex(r) && r.len() == 40)
        .and_then(|r| Oid::from_str(r).ok());
    if let Some(oid) = full_id
        && repo.find_commit(oid).is_ok()
    {
        return Ok((oid, false));
    }
    fetch(repo, prepared, deadline, answered, &MIRROR_REFSPECS, true)?;
    let unknown = |message: String| SourceError::UnknownRef {
        url: prepared.redacted.clone(),
        reference: prepared.reference.clone().unwrap_or_else(|| "HEAD".into()),
        message,
    };
    match lookup(repo, prepared.reference.as_deref()) {
        Lookup::Found(oid) => Ok((oid, true)),
        Lookup::Invalid(message) => Err(unknown(message)),
        Lookup::Missing => {
            if let Some(oid) = full_id {
                // Not reachable from a branch or tag: servers that allow it send a commit
                // asked for by id (GitHub does for any commit in the repository's network).
                let by_id = fetch(
                    repo,
                    prepared,
                    deadline,
                    answered,
                    &[oid.to_string()],
                    false,
                );
                if by_id.is_ok() && repo.find_commit(oid).is_ok() {
                    return Ok((oid, true));
                }
            }
            Err(unknown(match &prepared.reference {
                None => "the remote has no default branch (is it empty?)".into(),
                Some(_) => "no branch, tag or commit of that name".into(),
            }))
        }
    }
}

/// Fetches `refspecs` from the remote into the cache; with `mirror`, also prunes and points
/// `HEAD` at the remote's default branch.
fn fetch<S: AsRef<str> + git2::IntoCString + Clone>(
    repo: &Repository,
    prepared: &Prepared,
    deadline: Instant,
    answered: &AtomicBool,
    refspecs: &[S],
    mirror: bool,
) -> Result<(), SourceError> {
    let seen = RefCell::new(CallbackFailure::default());
    let url = prepared.redacted.as_str();
    let mut remote = repo
        .remote_anonymous(&prepared.url.original)
        .map_err(|e| internal(url, "setting up the remote", e))?;
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(auth::callbacks(prepared, &seen, deadline, answered))
        .download_tags(AutotagOption::None)
        .prune(if mirror {
            FetchPrune::On
        } else {
            FetchPrune::Off
        })
        // A redirect to another host must not carry the credentials along.
        .follow_redirects(match prepared.auth {
            Auth::None => RemoteRedirect::Initial,
            _ => RemoteRedirect::None,
        });
    let fetched = remote.fetch(refspecs, Some(&mut options), None);
    drop(options);
    fetched.map_err(|e| classify_remote(url, &e, &seen.borrow()))?;
    if mirror {
        // Available after the fetch although the connection is closed (libgit2 keeps the
        // advertised refs); missing for an empty repository.
        if let Ok(head) = remote.default_branch()
            && let Ok(name) = head.as_str()
        {
            repo.set_head(name)
                .map_err(|e| internal(url, "recording the default branch", e))?;
        }
    }
    Ok(())
}

/// Outcome of looking a ref up in the cache.
enum Lookup {
    Found(Oid),
    Missing,
    /// Exists but cannot be used (ambiguous, not a commit).
    Invalid(String),
}

/// Looks `reference` up in the order git uses, after a full commit id: `refs/...` as given,
/// then tags, then branches, then a unique short commit id (4 to 39 hex digits). `None` is
/// the default branch.
fn lookup(repo: &Repository, reference: Option<&str>) -> Lookup {
    let Some(name) = reference else {
        return match repo.head() {
            Ok(head) => peel(head.peel_to_commit().map(|c| c.id())),
            Err(_) => Lookup::Missing,
        };
    };
    if is_hex(name)
        && name.len() == 40
        && let Ok(oid) = Oid::from_str(name)
        && repo.find_commit(oid).is_ok()
    {
        return Lookup::Found(oid);
    }
    let candidates = if name.starts_with("refs/") {
        vec![name.to_string()]
    } else {
        vec![format!("refs/tags/{name}"), format!("refs/heads/{name}")]
    };
    for candidate in candidates {
        if let Ok(reference) = repo.find_reference(&candidate) {
            return peel(reference.peel_to_commit().map(|c| c.id()));
        }
    }
    if is_hex(name) && (4..40).contains(&name.len()) {
        return match repo.find_object_by_prefix(name, None) {
            Ok(object) => peel(object.peel_to_commit().map(|c| c.id())),
            Err(e) if e.code() == ErrorCode::Ambiguous => {
                Lookup::Invalid("the short commit id is ambiguous; use more digits".into())
            }
            Err(_) => Lookup::Missing,
        };
    }
    Lookup::Missing
}

fn peel(commit: Result<Oid, git2::Error>) -> Lookup {
    match commit {
        Ok(oid) => Lookup::Found(oid),
        Err(e) => Lookup::Invalid(format!("it does not point to a commit: {}", e.message())),
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Reads the files under the request's path at `commit`, stopping as soon as their sizes add
/// up to more than `limit` or there are more than [`MAX_SOURCE_FILES`].
pub(crate) fn read(
    repo: &Repository,
    prepared: &Prepared,
    commit: Oid,
    limit: usize,
) -> Result<Fetched, SourceError> {
    let url = prepared.redacted.as_str();
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(|e| internal(url, "reading the commit", e))?;
    let mut reader = Reader {
        repo,
        prepared,
        commit: commit.to_string(),
        limit,
        fetched: Fetched {
            repo: url.to_string(),
            commit: commit.to_string(),
            ..Fetched::default()
        },
    };
    let Some(path) = &prepared.path else {
        reader.walk(&tree)?;
        return Ok(reader.fetched);
    };
    let entry = match tree.get_path(Path::new(path)) {
        Ok(entry) => entry,
        Err(e) if e.code() == ErrorCode::NotFound => {
            return Err(SourceError::PathNotFound {
                url: url.to_string(),
                commit: reader.commit,
                path: prepared.requested_path.clone(),
            });
        }
        Err(e) => return Err(internal(url, "looking up the path", e)),
    };
    let unsupported = |kind| SourceError::UnsupportedEntry {
        url: url.to_string(),
        commit: commit.to_string(),
        path: prepared.requested_path.clone(),
        kind,
    };
    match entry.filemode() {
        MODE_TREE => {
            let subtree = repo
                .find_tree(entry.id())
                .map_err(|e| internal(url, "reading a tree", e))?;
            reader.walk(&subtree)?;
        }
        MODE_SYMLINK => return Err(unsupported("symlink")),
        MODE_SUBMODULE => return Err(unsupported("submodule")),
        _ => {
            let name = path.rsplit('/').next().unwrap_or(path);
            reader.add(name.to_string(), entry.id())?;
        }
    }
    Ok(reader.fetched)
}

/// Accumulates files and enforces the size limit.
struct Reader<'a> {
    repo: &'a Repository,
    prepared: &'a Prepared,
    commit: String,
    limit: usize,
    fetched: Fetched,
}

impl Reader<'_> {
    /// Every blob under `tree`, depth first; symlinks, submodules and non-UTF-8 names are
    /// skipped and listed.
    fn walk(&mut self, tree: &Tree<'_>) -> Result<(), SourceError> {
        let url = self.prepared.redacted.as_str();
        let mut pending = vec![(tree.id(), String::new())];
        while let Some((id, prefix)) = pending.pop() {
            let tree = self
                .repo
                .find_tree(id)
                .map_err(|e| internal(url, "reading a tree", e))?;
            for entry in tree.iter() {
                let join = |name: &str| {
                    if prefix.is_empty() {
                        name.to_string()
                    } else {
                        format!("{prefix}/{name}")
                    }
                };
                let Ok(name) = entry.name() else {
                    let lossy = String::from_utf8_lossy(entry.name_bytes()).into_owned();
                    self.fetched.skipped.push(join(&lossy));
                    continue;
                };
                let path = join(name);
                match (entry.filemode(), entry.kind()) {
                    (MODE_TREE, _) => pending.push((entry.id(), path)),
                    (MODE_SYMLINK | MODE_SUBMODULE, _) => self.fetched.skipped.push(path),
                    (_, Some(ObjectType::Blob)) => self.add(path, entry.id())?,
                    _ => self.fetched.skipped.push(path),
                }
            }
        }
        Ok(())
    }

    /// Adds one blob, checking the file count and its size from the object header before
    /// loading it.
    fn add(&mut self, path: String, id: Oid) -> Result<(), SourceError> {
        let url = self.prepared.redacted.as_str();
        if self.fetched.files.len() >= MAX_SOURCE_FILES {
            return Err(SourceError::TooManyFiles {
                url: url.to_string(),
                commit: self.commit.clone(),
                path: self.prepared.requested_path.clone(),
                limit: MAX_SOURCE_FILES,
            });
        }
        let odb = self
            .repo
            .odb()
            .map_err(|e| internal(url, "opening the object database", e))?;
        let (size, _) = odb
            .read_header(id)
            .map_err(|e| internal(url, "reading an object header", e))?;
        let total = self.fetched.total_bytes.saturating_add(size);
        if total > self.limit {
            return Err(SourceError::TooLarge {
                url: url.to_string(),
                commit: self.commit.clone(),
                path: self.prepared.requested_path.clone(),
                total,
                limit: self.limit,
            });
        }
        let blob = self
            .repo
            .find_blob(id)
            .map_err(|e| internal(url, "reading a file", e))?;
        self.fetched.files.insert(path, blob.content().to_vec());
        self.fetched.total_bytes = total;
        Ok(())
    }
}
