//! Checks a [`GitRequest`] before any I/O: the URL and its scheme rules, whether the
//! credentials fit the transport, the path, and the name of the cache directory. Pure.

use sha2::{Digest, Sha256};

use super::known_hosts::KnownHosts;
use super::url::{RemoteUrl, Scheme, redact};
use super::{Credentials, GitRequest, SourceError};

/// User name sent with [`Credentials::Token`]; GitHub documents it for app and personal
/// tokens, GitLab and Gitea accept any user name with a token.
pub(crate) const TOKEN_USERNAME: &str = "x-access-token";
/// User name for ssh when the URL has none (every hosting service uses it).
const DEFAULT_SSH_USER: &str = "git";

/// How to authenticate, checked against the transport.
#[derive(Clone, Debug)]
pub(crate) enum Auth {
    /// Anonymous (also `file://`, which ignores credentials).
    None,
    /// HTTP Basic auth.
    UserPass { username: String, password: String },
    /// ssh public-key auth with a verified host key.
    Ssh {
        username: String,
        private_key: String,
        passphrase: Option<String>,
        known_hosts: KnownHosts,
    },
}

/// A request that passed every check, ready for the cache.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    /// The parsed URL.
    pub url: RemoteUrl,
    /// The URL without password, for messages and provenance.
    pub redacted: String,
    /// The ref; `None` for the remote's default branch.
    pub reference: Option<String>,
    /// Normalized path (`a/b`), `None` for the whole tree.
    pub path: Option<String>,
    /// The path as requested, for messages.
    pub requested_path: String,
    /// Authentication.
    pub auth: Auth,
    /// Cache directory name: hex sha256 of the normalized URL and the credentials.
    pub key: String,
}

/// Checks `req`; `allow_file_urls` is the cache's setting for `file://`.
pub(crate) fn prepare(req: &GitRequest, allow_file_urls: bool) -> Result<Prepared, SourceError> {
    let redacted = redact(&req.url);
    let url = RemoteUrl::parse(&req.url).map_err(|message| SourceError::InvalidUrl {
        url: redacted.clone(),
        message,
    })?;
    let refused = |message: &str| SourceError::Refused {
        url: redacted.clone(),
        message: message.to_string(),
    };
    let invalid = |message: String| SourceError::InvalidCredentials {
        url: redacted.clone(),
        message,
    };
    let auth = match (url.scheme(), &req.credentials) {
        (Scheme::File, _) if !allow_file_urls => {
            return Err(refused(
                "file:// sources are disabled in this controller (they could read any \
                 repository on its disk)",
            ));
        }
        (Scheme::File, _) | (Scheme::Http | Scheme::Https, None) => Auth::None,
        (Scheme::Http, Some(_)) if !url.is_loopback() => {
            return Err(refused(
                "credentials are never sent over plain http except to a loopback host; use \
                 https://",
            ));
        }
        (Scheme::Http | Scheme::Https, Some(Credentials::Token(token))) => Auth::UserPass {
            username: TOKEN_USERNAME.to_string(),
            password: token.clone(),
        },
        (Scheme::Http | Scheme::Https, Some(Credentials::Basic { username, password })) => {
            Auth::UserPass {
                username: username.clone(),
                password: password.clone(),
            }
        }
        (Scheme::Http | Scheme::Https, Some(Credentials::Ssh { .. })) => {
            return Err(invalid(
                "an ssh private key was given for an http(s) URL; use a token or username \
                 and password, or an ssh:// URL"
                    .into(),
            ));
        }
        (Scheme::Ssh, None) => {
            return Err(refused(
                "ssh sources need a Secret with a private key and known_hosts",
            ));
        }
        (Scheme::Ssh, Some(Credentials::Token(_) | Credentials::Basic { .. })) => {
            return Err(invalid(
                "ssh needs a private key and known_hosts, not a token or password".into(),
            ));
        }
        (
            Scheme::Ssh,
            Some(Credentials::Ssh {
                known_hosts: None, ..
            }),
        ) => {
            return Err(refused(
                "ssh without known_hosts would trust any server; add the server's known_hosts \
                 lines (ssh-keyscan host) to the Secret",
            ));
        }
        (
            Scheme::Ssh,
            Some(Credentials::Ssh {
                private_key,
                known_hosts: Some(known_hosts),
                passphrase,
            }),
        ) => {
            if private_key.trim().is_empty() {
                return Err(invalid("the ssh private key is empty".into()));
            }
            let known_hosts =
                KnownHosts::parse(known_hosts).map_err(|e| invalid(format!("known_hosts: {e}")))?;
            Auth::Ssh {
                username: url
                    .user
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SSH_USER.to_string()),
                private_key: private_key.clone(),
                passphrase: passphrase.clone(),
                known_hosts,
            }
        }
    };
    let reference =
        check_reference(req.reference.as_deref()).map_err(|message| SourceError::UnknownRef {
            url: redacted.clone(),
            reference: req.reference.clone().unwrap_or_default(),
            message,
        })?;
    let requested_path = req.path.clone().unwrap_or_default();
    let path = normalize_path(&requested_path).map_err(|message| SourceError::InvalidPath {
        path: requested_path.clone(),
        message,
    })?;
    let key = cache_key(&url, &auth);
    Ok(Prepared {
        url,
        redacted,
        reference,
        path,
        requested_path,
        auth,
        key,
    })
}

/// `None`, empty and `HEAD` mean the default branch; anything git could not name is refused.
fn check_reference(reference: Option<&str>) -> Result<Option<String>, String> {
    let Some(r) = reference
        .map(str::trim)
        .filter(|r| !r.is_empty() && *r != "HEAD")
    else {
        return Ok(None);
    };
    let bad = r.starts_with('-')
        || r.contains("..")
        || r.contains("@{")
        || r.ends_with('/')
        || r.ends_with(".lock")
        || r.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        return Err("not a valid branch, tag or commit name".into());
    }
    Ok(Some(r.to_string()))
}

/// `./a//b/` → `a/b`; empty, `.` and `/` → whole tree; `..` is refused.
pub(crate) fn normalize_path(path: &str) -> Result<Option<String>, String> {
    if path.contains('\0') {
        return Err("the path contains a NUL byte".into());
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("the path must stay inside the repository (no `..`)".into()),
            p => parts.push(p),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// Hex sha256 of the normalized URL, plus a fingerprint of the credentials when there are
/// any: one cache per repository and identity, so anonymous requests never read what an
/// authenticated one fetched. Rotating a Secret starts a new cache; the old one ages out.
fn cache_key(url: &RemoteUrl, auth: &Auth) -> String {
    let mut hasher = Sha256::new();
    hasher.update(url.normalized().as_bytes());
    match auth {
        Auth::None => {}
        Auth::UserPass { username, password } => {
            hasher.update(b"\0basic\0");
            hasher.update(Sha256::digest(format!("{username}\0{password}")));
        }
        Auth::Ssh {
            username,
            private_key,
            ..
        } => {
            hasher.update(b"\0ssh\0");
            hasher.update(Sha256::digest(format!("{username}\0{private_key}")));
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &str = "127.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn req(url: &str, credentials: Option<Credentials>) -> GitRequest {
        GitRequest {
            url: url.into(),
            credentials,
            ..Default::default()
        }
    }

    fn ssh(known_hosts: Option<&str>) -> Option<Credentials> {
        Some(Credentials::Ssh {
            private_key: "-----BEGIN OPENSSH PRIVATE KEY-----\n...".into(),
            known_hosts: known_hosts.map(Into::into),
            passphrase: None,
        })
    }

    fn reason(r: &GitRequest) -> &'static str {
        prepare(r, false)
            .map(|_| "Ok")
            .unwrap_or_else(|e| e.reason())
    }

    #[test]
    fn the_cache_directory_is_the_sha256_of_the_normalized_url() {
        let a = prepare(&req("https://Git.Example/org/repo/", None), false).unwrap();
        let b = prepare(&req("https://git.example:443/org/repo", None), false).unwrap();
        assert_eq!(a.key, b.key);
        assert_eq!(a.key.len(), 64);
        assert!(a.key.chars().all(|c| c.is_ascii_hexdigit()));
        let expected: String = Sha256::digest(b"https://git.example/org/repo")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(a.key, expected);
    }

    #[test]
    fn requests_with_different_credentials_never_share_a_cache_directory() {
        let url = "https://git.example/org/repo";
        let anonymous = prepare(&req(url, None), false).unwrap().key;
        let token = prepare(&req(url, Some(Credentials::Token("t1".into()))), false)
            .unwrap()
            .key;
        let other = prepare(&req(url, Some(Credentials::Token("t2".into()))), false)
            .unwrap()
            .key;
        assert_ne!(anonymous, token);
        assert_ne!(token, other);
        let again = prepare(&req(url, Some(Credentials::Token("t1".into()))), false)
            .unwrap()
            .key;
        assert_eq!(token, again);
    }

    #[test]
    fn file_urls_need_the_cache_to_allow_them() {
        let r = req("file:///srv/repo", None);
        assert_eq!(prepare(&r, false).unwrap_err().reason(), "SourceRefused");
        assert!(prepare(&r, true).is_ok());
    }

    #[test]
    fn credentials_go_over_plain_http_only_to_loopback() {
        let token = || Some(Credentials::Token("t".into()));
        assert_eq!(reason(&req("http://git.example/r", None)), "Ok");
        assert_eq!(
            reason(&req("http://git.example/r", token())),
            "SourceRefused"
        );
        assert_eq!(reason(&req("http://127.0.0.1:8080/r", token())), "Ok");
        assert_eq!(reason(&req("https://git.example/r", token())), "Ok");
    }

    #[test]
    fn ssh_without_known_hosts_is_refused_before_any_connection() {
        let err = prepare(&req("git@127.0.0.1:org/repo", ssh(None)), false).unwrap_err();
        assert_eq!(err.reason(), "SourceRefused");
        assert!(err.to_string().contains("known_hosts"), "{err}");
        let no_secret = prepare(&req("ssh://git@127.0.0.1/org/repo", None), false).unwrap_err();
        assert_eq!(no_secret.reason(), "SourceRefused");
        assert!(no_secret.to_string().contains("private key"), "{no_secret}");
        assert_eq!(reason(&req("ssh://127.0.0.1/r", ssh(Some(KNOWN)))), "Ok");
        assert_eq!(
            reason(&req("ssh://127.0.0.1/r", ssh(Some("garbage")))),
            "InvalidSourceCredentials"
        );
    }

    #[test]
    fn credentials_of_the_wrong_kind_are_invalid() {
        let token = Some(Credentials::Token("t".into()));
        assert_eq!(
            reason(&req("ssh://127.0.0.1/r", token)),
            "InvalidSourceCredentials"
        );
        assert_eq!(
            reason(&req("https://git.example/r", ssh(Some(KNOWN)))),
            "InvalidSourceCredentials"
        );
    }

    #[test]
    fn ssh_user_comes_from_the_url_or_defaults_to_git() {
        let user = |url: &str| match prepare(&req(url, ssh(Some(KNOWN))), false).unwrap().auth {
            Auth::Ssh { username, .. } => username,
            other => panic!("{other:?}"),
        };
        assert_eq!(user("ssh://127.0.0.1/r"), "git");
        assert_eq!(user("deploy@127.0.0.1:r"), "deploy");
    }

    #[test]
    fn paths_are_normalized_and_may_not_climb_out() {
        assert_eq!(normalize_path("").unwrap(), None);
        assert_eq!(normalize_path("/").unwrap(), None);
        assert_eq!(normalize_path("./").unwrap(), None);
        assert_eq!(
            normalize_path("./evals//arith/").unwrap().as_deref(),
            Some("evals/arith")
        );
        assert_eq!(
            normalize_path("/eval.py").unwrap().as_deref(),
            Some("eval.py")
        );
        assert!(normalize_path("evals/../../etc").is_err());
    }

    #[test]
    fn references_git_could_not_name_are_unknown_refs() {
        assert_eq!(check_reference(None).unwrap(), None);
        assert_eq!(check_reference(Some("")).unwrap(), None);
        assert_eq!(check_reference(Some("HEAD")).unwrap(), None);
        assert_eq!(
            check_reference(Some(" main ")).unwrap().as_deref(),
            Some("main")
        );
        for bad in [
            "-x", "a..b", "a b", "x~1", "x^", "a:b", "x.lock", "r/", "@{-1}",
        ] {
            assert!(check_reference(Some(bad)).is_err(), "{bad}");
        }
    }
}
