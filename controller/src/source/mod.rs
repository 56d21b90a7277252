//! Evaluation code from Git: resolve a branch, tag or commit of a remote repository to a
//! commit id and read the files under a path at that commit. Does I/O: network (libgit2) and
//! the local cache directory; the blocking work runs on tokio's blocking pool.
//!
//! The controller has the network, the sandbox does not: the controller fetches the code here,
//! pins it to a commit and hands the files to the pod.
//!
//! # Pieces
//!
//! - [`url`]: which URLs are accepted, normalization, redaction (pure).
//! - `request`: checks a [`GitRequest`] before any I/O (pure).
//! - `known_hosts`: ssh host-key verification (pure).
//! - `auth`: libgit2 callbacks for credentials, host keys and the deadline.
//! - `git`: blocking libgit2 work on one cached repository: fetch, resolve, read.
//! - [`cache`]: [`GitCache`], the async API, per-repository locking, deadlines and eviction.
//! - [`pool`]: [`FetchPool`], fetches outside the reconciles, a bounded number at once and a
//!   share per namespace; the reconcile asks and returns, the fetch's end reconciles again.
//!
//! # Security rules (fail closed)
//!
//! - Schemes: `https://`; `ssh://` and `user@host:path`; `http://` (credentials only to a
//!   loopback host, never in clear text over a network); `file://` only when the cache was
//!   built with [`GitCache::allow_file_urls`] (tests, mirrors mounted into the controller),
//!   since otherwise a spec could read any repository on the controller's disk. Plain local
//!   paths, `git://` and passwords inside the URL are refused.
//! - ssh needs a private key *and* `known_hosts`; without `known_hosts` nothing is attempted.
//! - Credentials are tried once: when the server rejects them the fetch fails with
//!   `SourceAuthFailed` instead of letting libgit2 call back forever.
//! - A cached repository is shared only by requests with the same URL *and* the same
//!   credentials (see [`cache`]), so a request without the Secret cannot read a private
//!   repository that another namespace's request put in the cache.
//!
//! # Contents
//!
//! Regular files (blobs) are handed over with their bytes; the executable bit is not kept.
//! Symlinks and submodules inside a directory are skipped and listed in
//! [`Fetched::skipped`]; a `path` that itself names one is an error
//! ([`SourceError::UnsupportedEntry`]).

pub mod cache;
pub mod pool;
pub mod socket_timeouts;
pub mod url;

mod auth;
mod error;
mod git;
mod known_hosts;
mod request;

use std::collections::BTreeMap;
use std::fmt;

pub use cache::GitCache;
pub use error::SourceError;
pub use pool::FetchPool;

/// What to fetch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GitRequest {
    /// Remote URL: `https://host/org/repo`, `ssh://git@host/org/repo`, `git@host:org/repo`,
    /// `http://` to loopback, or `file:///path` when the cache allows it.
    pub url: String,
    /// A branch, tag, full or short (at least 4 hex digits) commit id, or a full ref name
    /// (`refs/...`); the remote's default branch when `None`.
    pub reference: Option<String>,
    /// A file or directory in the repository; the whole tree when `None`.
    pub path: Option<String>,
    /// Credentials from the Evaluation's Secret.
    pub credentials: Option<Credentials>,
}

/// Credentials for a remote. `Debug` never prints the secret parts.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// An access token for https, sent as HTTP Basic auth with the user name
    /// `x-access-token` (accepted by GitHub, GitLab and Gitea).
    Token(String),
    /// User name and password for https (HTTP Basic auth).
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: String,
    },
    /// A private key for ssh; the user name comes from the URL (`git` when it has none).
    Ssh {
        /// The private key, PEM or OpenSSH format.
        private_key: String,
        /// OpenSSH `known_hosts` lines trusted for the server; ssh is refused without them.
        known_hosts: Option<String>,
        /// Passphrase of the key, when it has one.
        passphrase: Option<String>,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::Ssh {
                known_hosts,
                passphrase,
                ..
            } => f
                .debug_struct("Ssh")
                .field("private_key", &"<redacted>")
                .field("known_hosts", &known_hosts.as_ref().map(|_| "<set>"))
                .field("passphrase", &passphrase.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// The files of a source at a pinned commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The URL with any password removed, for `status.provenance.repo`.
    pub repo: String,
    /// The resolved commit, 40 lower-case hex digits, for `status.provenance.commit`.
    pub commit: String,
    /// File contents by path relative to the requested directory, `/`-separated (for a
    /// requested file: its file name).
    pub files: BTreeMap<String, Vec<u8>>,
    /// Sum of the lengths of `files`.
    pub total_bytes: usize,
    /// Symlinks, submodules and entries with non-UTF-8 names under the requested directory
    /// that were left out, relative like `files` (for messages).
    pub skipped: Vec<String>,
}

impl From<Fetched> for crate::run::fetched::FetchedSource {
    fn from(fetched: Fetched) -> Self {
        crate::run::fetched::FetchedSource {
            repo: fetched.repo,
            commit: fetched.commit,
            files: fetched.files,
        }
    }
}

impl From<&SourceError> for crate::run::fetched::SourceProblem {
    fn from(error: &SourceError) -> Self {
        crate::run::fetched::SourceProblem {
            reason: error.reason(),
            message: error.to_string(),
            transient: error.is_transient(),
        }
    }
}
