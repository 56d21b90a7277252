//! Errors of git sources: one variant per way a fetch can fail, a fixed `reason()` for status
//! and metric labels, `is_transient()` for the requeue policy, and the mapping from libgit2's
//! errors. Pure.
//!
//! Every message names the repository by its URL with any password removed
//! ([`super::url::redact`]).

/// Why a git source could not be fetched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The URL is not one Crucible fetches from (unknown scheme, local path, password in the
    /// URL, malformed).
    #[error("invalid git URL {url}: {message}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// The request would be insecure, so Crucible does not try: ssh without `known_hosts`,
    /// credentials over plain http to a host that is not loopback, `file://` when not allowed.
    #[error("refusing to fetch {url}: {message}")]
    Refused {
        /// The URL, redacted.
        url: String,
        /// Which rule refused it.
        message: String,
    },
    /// The credentials do not fit the URL (a token for ssh, a key for https) or cannot be
    /// read (malformed `known_hosts`).
    #[error("invalid credentials for {url}: {message}")]
    InvalidCredentials {
        /// The URL, redacted.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The server could not be reached or the transfer broke off (DNS, connection refused,
    /// timeout, server error). Transient.
    #[error("cannot reach {url}: {message}")]
    Unreachable {
        /// The URL, redacted.
        url: String,
        /// The cause, from libgit2 or the timeout.
        message: String,
    },
    /// The server refused the credentials, asked for credentials that are not configured,
    /// or its identity could not be verified (ssh host key, TLS certificate).
    #[error("authentication to {url} failed: {message}")]
    AuthFailed {
        /// The URL, redacted.
        url: String,
        /// What failed.
        message: String,
    },
    /// The server says there is no such repository (or it is private and no credentials
    /// were given).
    #[error("repository {url} not found: {message}")]
    RepositoryNotFound {
        /// The URL, redacted.
        url: String,
        /// The server's or libgit2's words.
        message: String,
    },
    /// The branch, tag or commit does not exist in the repository (or a short commit id is
    /// ambiguous, or the ref does not point to a commit).
    #[error("ref {reference:?} not found in {url}: {message}")]
    UnknownRef {
        /// The URL, redacted.
        url: String,
        /// The ref as requested (`HEAD` for the default branch).
        reference: String,
        /// Details.
        message: String,
    },
    /// `path` is not in the tree of the resolved commit.
    #[error("path {path:?} not found at commit {commit} of {url}")]
    PathNotFound {
        /// The URL, redacted.
        url: String,
        /// The resolved commit.
        commit: String,
        /// The path as requested.
        path: String,
    },
    /// `path` is absolute in a way that cannot be normalized, or climbs out with `..`.
    #[error("invalid path {path:?}: {message}")]
    InvalidPath {
        /// The path as requested.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// `path` itself names a symlink or a submodule, which have no file content to hand over.
    #[error(
        "path {path:?} at commit {commit} of {url} is a {kind}, which cannot be used as a source"
    )]
    UnsupportedEntry {
        /// The URL, redacted.
        url: String,
        /// The resolved commit.
        commit: String,
        /// The path as requested.
        path: String,
        /// `symlink` or `submodule`.
        kind: &'static str,
    },
    /// The files under `path` add up to more than the limit; reading stopped there.
    #[error(
        "files under {path:?} at commit {commit} of {url} exceed the limit of {limit} bytes \
         (at least {total} bytes)"
    )]
    TooLarge {
        /// The URL, redacted.
        url: String,
        /// The resolved commit.
        commit: String,
        /// The path as requested (empty for the whole tree).
        path: String,
        /// Bytes counted when reading stopped (at least this many in total).
        total: usize,
        /// The limit.
        limit: usize,
    },
    /// There are more files under `path` than a pod's workspace volume takes; reading stopped
    /// there.
    #[error(
        "more than {limit} files under {path:?} at commit {commit} of {url} (each becomes an \
         item of the pod's workspace volume)"
    )]
    TooManyFiles {
        /// The URL, redacted.
        url: String,
        /// The resolved commit.
        commit: String,
        /// The path as requested (empty for the whole tree).
        path: String,
        /// The limit.
        limit: usize,
    },
    /// The local cache failed (disk full, corrupt repository, a panicked task). Transient:
    /// the next attempt may succeed, and a cache directory that cannot be opened is rebuilt.
    #[error("git cache failed for {url}: {message}")]
    Internal {
        /// The URL, redacted.
        url: String,
        /// What failed.
        message: String,
    },
}

impl SourceError {
    /// Fixed PascalCase name of the variant, for status reasons, Events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::InvalidUrl { .. } => "InvalidSourceUrl",
            SourceError::Refused { .. } => "SourceRefused",
            SourceError::InvalidCredentials { .. } => "InvalidSourceCredentials",
            SourceError::Unreachable { .. } => "SourceUnreachable",
            SourceError::AuthFailed { .. } => "SourceAuthFailed",
            SourceError::RepositoryNotFound { .. } => "SourceRepositoryNotFound",
            SourceError::UnknownRef { .. } => "UnknownRef",
            SourceError::PathNotFound { .. } => "SourcePathNotFound",
            SourceError::InvalidPath { .. } => "InvalidSourcePath",
            SourceError::UnsupportedEntry { .. } => "SourceUnsupportedEntry",
            SourceError::TooLarge { .. } => "SourceTooLarge",
            SourceError::TooManyFiles { .. } => "SourceTooManyFiles",
            SourceError::Internal { .. } => "SourceInternalError",
        }
    }

    /// Whether the same request may succeed later without a spec change: network trouble and
    /// local cache failures. Everything else needs the user to change the spec or the Secret.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SourceError::Unreachable { .. } | SourceError::Internal { .. }
        )
    }
}

/// What the transport callbacks saw, which libgit2's error codes alone do not tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CallbackFailure {
    /// Credentials were refused or missing (our callback gave up).
    pub auth: Option<String>,
    /// The ssh host key or TLS certificate was rejected.
    pub host_key: Option<String>,
    /// The transfer passed its deadline and was aborted.
    pub timed_out: Option<String>,
}

/// Maps a libgit2 error from talking to the remote (connect, negotiate, download).
pub(crate) fn classify_remote(url: &str, err: &git2::Error, seen: &CallbackFailure) -> SourceError {
    use git2::{ErrorClass, ErrorCode};
    let url = url.to_string();
    if let Some(message) = &seen.host_key {
        return SourceError::AuthFailed {
            url,
            message: message.clone(),
        };
    }
    if let Some(message) = &seen.auth {
        return SourceError::AuthFailed {
            url,
            message: message.clone(),
        };
    }
    if let Some(message) = &seen.timed_out {
        return SourceError::Unreachable {
            url,
            message: message.clone(),
        };
    }
    let text = err.message().to_string();
    let lower = text.to_ascii_lowercase();
    match (err.code(), err.class()) {
        (ErrorCode::Auth, _) => SourceError::AuthFailed { url, message: text },
        // With the callback passing through, libgit2 reports an untrusted certificate as a
        // generic error of class Ssl ("the SSL certificate is invalid").
        (ErrorCode::Certificate, _) => untrusted(url, &text),
        (_, ErrorClass::Ssl) if lower.contains("certificate") => untrusted(url, &text),
        (_, ErrorClass::Http) if lower.contains("401") || lower.contains("403") => {
            SourceError::AuthFailed { url, message: text }
        }
        (_, ErrorClass::Http) if lower.contains("404") => SourceError::RepositoryNotFound {
            url,
            message: format!("{text} (a private repository needs secretRef)"),
        },
        _ if lower.contains("could not find repository")
            || lower.contains("failed to resolve path")
            || lower.contains("not a git repository")
            || lower.contains("repository not found") =>
        {
            SourceError::RepositoryNotFound { url, message: text }
        }
        // Everything else went wrong while talking to the server (network, TLS, ssh, http,
        // a broken stream): worth retrying.
        _ => SourceError::Unreachable { url, message: text },
    }
}

fn untrusted(url: String, text: &str) -> SourceError {
    SourceError::AuthFailed {
        url,
        message: format!("the server's TLS certificate was not accepted: {text}"),
    }
}

/// Maps a libgit2 error from the local cache (open, read, write).
pub(crate) fn internal(url: &str, what: &str, err: impl std::fmt::Display) -> SourceError {
    SourceError::Internal {
        url: url.to_string(),
        message: format!("{what}: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::{Error, ErrorClass, ErrorCode};

    const URL: &str = "https://git.example/org/repo";

    fn remote(code: ErrorCode, class: ErrorClass, message: &str) -> SourceError {
        classify_remote(
            URL,
            &Error::new(code, class, message),
            &CallbackFailure::default(),
        )
    }

    #[test]
    fn every_reason_is_pascal_case() {
        let url = || URL.to_string();
        let all = [
            SourceError::InvalidUrl {
                url: url(),
                message: "m".into(),
            },
            SourceError::Refused {
                url: url(),
                message: "m".into(),
            },
            SourceError::InvalidCredentials {
                url: url(),
                message: "m".into(),
            },
            SourceError::Unreachable {
                url: url(),
                message: "m".into(),
            },
            SourceError::AuthFailed {
                url: url(),
                message: "m".into(),
            },
            SourceError::RepositoryNotFound {
                url: url(),
                message: "m".into(),
            },
            SourceError::UnknownRef {
                url: url(),
                reference: "r".into(),
                message: "m".into(),
            },
            SourceError::PathNotFound {
                url: url(),
                commit: "c".into(),
                path: "p".into(),
            },
            SourceError::InvalidPath {
                path: "p".into(),
                message: "m".into(),
            },
            SourceError::UnsupportedEntry {
                url: url(),
                commit: "c".into(),
                path: "p".into(),
                kind: "symlink",
            },
            SourceError::TooLarge {
                url: url(),
                commit: "c".into(),
                path: "p".into(),
                total: 2,
                limit: 1,
            },
            SourceError::TooManyFiles {
                url: url(),
                commit: "c".into(),
                path: "p".into(),
                limit: 1,
            },
            SourceError::Internal {
                url: url(),
                message: "m".into(),
            },
        ];
        for err in &all {
            let reason = err.reason();
            assert!(
                reason.starts_with(|c: char| c.is_ascii_uppercase()),
                "{reason}"
            );
            assert!(
                reason.chars().all(|c| c.is_ascii_alphanumeric()),
                "{reason}"
            );
        }
        let transient: Vec<_> = all
            .iter()
            .filter(|e| e.is_transient())
            .map(|e| e.reason())
            .collect();
        assert_eq!(transient, ["SourceUnreachable", "SourceInternalError"]);
    }

    #[test]
    fn network_failures_are_unreachable_and_transient() {
        for (class, message) in [
            (
                ErrorClass::Net,
                "failed to connect to 127.0.0.1: Connection refused",
            ),
            (
                ErrorClass::Net,
                "failed to resolve address for git.example: Name or service not known",
            ),
            (ErrorClass::Os, "connection timed out"),
            (ErrorClass::Http, "unexpected http status code: 502"),
            (
                ErrorClass::Ssh,
                "failed to start SSH session: Unable to exchange encryption keys",
            ),
        ] {
            let err = remote(ErrorCode::GenericError, class, message);
            assert_eq!(err.reason(), "SourceUnreachable", "{message}");
            assert!(err.is_transient());
            assert!(err.to_string().contains(URL));
        }
    }

    #[test]
    fn rejected_credentials_and_certificates_are_auth_failures() {
        for err in [
            remote(ErrorCode::Auth, ErrorClass::Http, "authentication required"),
            remote(
                ErrorCode::GenericError,
                ErrorClass::Http,
                "unexpected http status code: 403",
            ),
            remote(
                ErrorCode::Certificate,
                ErrorClass::Ssl,
                "certificate verify failed",
            ),
            remote(
                ErrorCode::GenericError,
                ErrorClass::Ssl,
                "the SSL certificate is invalid",
            ),
        ] {
            assert_eq!(err.reason(), "SourceAuthFailed", "{err}");
            assert!(!err.is_transient());
        }
    }

    #[test]
    fn what_the_callbacks_saw_wins_over_the_error_code() {
        let err = Error::new(ErrorCode::User, ErrorClass::Callback, "callback failed");
        let seen = CallbackFailure {
            host_key: Some("host key verification failed: x".into()),
            ..Default::default()
        };
        let classified = classify_remote(URL, &err, &seen);
        assert_eq!(classified.reason(), "SourceAuthFailed");
        assert!(
            classified
                .to_string()
                .contains("host key verification failed")
        );
        let timed_out = CallbackFailure {
            timed_out: Some("timed out".into()),
            ..Default::default()
        };
        assert_eq!(
            classify_remote(URL, &err, &timed_out).reason(),
            "SourceUnreachable"
        );
    }

    #[test]
    fn a_missing_repository_is_not_transient() {
        let err = remote(
            ErrorCode::NotFound,
            ErrorClass::Repository,
            "could not find repository at '/x'",
        );
        assert_eq!(err.reason(), "SourceRepositoryNotFound");
        assert!(!err.is_transient());
        let http = remote(
            ErrorCode::GenericError,
            ErrorClass::Http,
            "unexpected http status code: 404",
        );
        assert!(http.to_string().contains("secretRef"));
    }
}
