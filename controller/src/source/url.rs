//! Git remote URLs: parsing, the schemes Crucible accepts, redaction for messages, and the
//! normalized form that names a cache directory. Pure.
//!
//! Accepted: `https://`, `http://`, `ssh://`, scp-like `user@host:path`, and `file://` (only
//! when the cache allows it, see [`super::GitCache::allow_file_urls`]). Refused: plain local
//! paths, `git://` (no authentication, no integrity) and any other scheme, and URLs that carry
//! a password (credentials belong in a Secret, not in a spec everyone can read).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Transport of a remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// `file://`, a repository on the controller's own filesystem.
    File,
    /// `http://`: credentials only to loopback hosts.
    Http,
    /// `https://`.
    Https,
    /// `ssh://` or scp-like `user@host:path`.
    Ssh,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::File => "file",
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Ssh => "ssh",
        }
    }

    fn default_port(self) -> Option<u16> {
        match self {
            Scheme::File => None,
            Scheme::Http => Some(80),
            Scheme::Https => Some(443),
            Scheme::Ssh => Some(22),
        }
    }
}

/// A parsed remote URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RemoteUrl {
    /// Transport.
    pub scheme: Scheme,
    /// User name from the URL (`git` in `git@host:org/repo`), never a password.
    pub user: Option<String>,
    /// Host, lower-cased; IPv6 addresses keep their brackets; empty for `file://`.
    pub host: String,
    /// Port when given and not the scheme's default.
    pub port: Option<u16>,
    /// Path on the server. scp-like paths without a leading `/` are relative to the login
    /// directory and keep that distinction.
    pub path: String,
    /// Whether it was written scp-like (`host:path`).
    pub scp_like: bool,
    /// The URL as given, which is what libgit2 connects to.
    pub original: String,
}

impl RemoteUrl {
    /// Parses and checks a remote URL; the error says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::parse_as(raw, false)
    }

    /// Parses a URL prefix that git credentials are bound to: a remote URL whose path may be
    /// empty (`https://host` is every repository on that host).
    pub fn parse_prefix(raw: &str) -> Result<Self, String> {
        Self::parse_as(raw, true)
    }

    /// Whether the prefix `self` ([`Self::parse_prefix`]) covers `repo`: the same scheme, host
    /// and port, and `repo`'s path is the prefix's or below it, at a `/` (so
    /// `https://host/org` covers neither `https://host/organisation/x` nor
    /// `https://host.evil/org/x`).
    pub fn covers(&self, repo: &RemoteUrl) -> bool {
        let (prefix, url) = (self.normalized(), repo.normalized());
        url.strip_prefix(&prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'))
    }

    fn parse_as(raw: &str, no_path_ok: bool) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("the URL is empty".into());
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the URL contains whitespace or control characters".into());
        }
        match raw.split_once("://") {
            Some((scheme, rest)) => Self::parse_with_scheme(raw, scheme, rest, no_path_ok),
            None => Self::parse_scp_like(raw, no_path_ok),
        }
    }

    fn parse_with_scheme(
        raw: &str,
        scheme: &str,
        rest: &str,
        no_path_ok: bool,
    ) -> Result<Self, String> {
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            "ssh" => Scheme::Ssh,
            "file" => Scheme::File,
            "git" => {
                return Err(
                    "git:// has neither authentication nor integrity; use https:// or ssh://"
                        .into(),
                );
            }
            other => {
                return Err(format!(
                    "scheme {other:?} is not supported; use https://, ssh:// or file://"
                ));
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (user, hostport) = split_userinfo(authority)?;
        if scheme == Scheme::File {
            if user.is_some()
                || !(hostport.is_empty() || hostport.eq_ignore_ascii_case("localhost"))
            {
                return Err("file:// URLs name a local path: file:///path/to/repo".into());
            }
            if path.is_empty() {
                return Err("the URL has no path".into());
            }
            return Ok(RemoteUrl {
                scheme,
                user: None,
                host: String::new(),
                port: None,
                path: path.to_string(),
                scp_like: false,
                original: raw.to_string(),
            });
        }
        let (host, port) = split_host_port(hostport)?;
        let path = path.trim_end_matches('/');
        if path.is_empty() && !no_path_ok {
            return Err("the URL has no repository path".into());
        }
        Ok(RemoteUrl {
            scheme,
            user,
            host,
            port: port.filter(|p| Some(*p) != scheme.default_port()),
            path: path.to_string(),
            scp_like: false,
            original: raw.to_string(),
        })
    }

    /// `[user@]host:path`, git's short form for ssh.
    fn parse_scp_like(raw: &str, no_path_ok: bool) -> Result<Self, String> {
        let local = || {
            format!(
                "{raw:?} is not a URL; local paths are not allowed (use https://, ssh://, \
                 user@host:path or file://)"
            )
        };
        let Some((authority, path)) = raw.split_once(':') else {
            return Err(local());
        };
        if authority.is_empty() || authority.contains('/') || (path.is_empty() && !no_path_ok) {
            return Err(local());
        }
        let (user, host) = split_userinfo(authority)?;
        let (host, _) = split_host_port(host)?;
        let path = path.trim_end_matches('/');
        if path.is_empty() && !no_path_ok {
            return Err("the URL has no repository path".into());
        }
        Ok(RemoteUrl {
            scheme: Scheme::Ssh,
            user,
            host,
            port: None,
            path: path.to_string(),
            scp_like: true,
            original: raw.to_string(),
        })
    }

    /// Transport of the URL.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether the host is this machine (`localhost`, 127.0.0.0/8, `[::1]`).
    pub fn is_loopback(&self) -> bool {
        if self.host == "localhost" {
            return true;
        }
        if let Ok(ip) = self.host.parse::<Ipv4Addr>() {
            return ip.is_loopback();
        }
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .and_then(|h| h.parse::<Ipv6Addr>().ok())
            .is_some_and(|ip| ip.is_loopback())
    }

    /// Port to connect to (the scheme's default when not given).
    pub fn effective_port(&self) -> Option<u16> {
        self.port.or(self.scheme.default_port())
    }

    /// One spelling per repository: lower-case scheme and host, no user, no default port,
    /// no trailing `/`. A trailing `.git` is kept: `repo` and `repo.git` may be different
    /// repositories on a plain git server, and sharing one cache between two repositories
    /// would resolve branch names against the wrong one.
    pub fn normalized(&self) -> String {
        match self.scheme {
            Scheme::File => format!("file://{}", self.path),
            _ => {
                let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
                let path = if self.scp_like && !self.path.starts_with('/') {
                    format!("/~/{}", self.path)
                } else {
                    self.path.clone()
                };
                format!("{}://{}{}{}", self.scheme.as_str(), self.host, port, path)
            }
        }
    }
}

/// Splits `user@host` (a password in the userinfo is refused).
fn split_userinfo(authority: &str) -> Result<(Option<String>, &str), String> {
    match authority.rsplit_once('@') {
        None => Ok((None, authority)),
        Some((userinfo, host)) => {
            if userinfo.contains(':') {
                return Err(
                    "the URL contains a password; put credentials in the Secret named by \
                     secretRef"
                        .into(),
                );
            }
            if userinfo.is_empty() {
                return Err("the URL has an empty user name".into());
            }
            Ok((Some(userinfo.to_string()), host))
        }
    }
}

/// Splits `host[:port]` or `[v6]:port`; lower-cases the host and checks its characters.
fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| "unterminated [IPv6] host".to_string())?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("{v6:?} is not an IPv6 address"))?;
        (format!("[{v6}]"), after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    let valid_host = !host.is_empty()
        && !host.starts_with('-')
        && (host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')));
    if !valid_host {
        return Err(format!("{host:?} is not a host name"));
    }
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{p:?} is not a port"))?,
        ),
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// The URL with any password removed, for messages and status. Works on anything, parsed or
/// not, so even an invalid URL never shows a secret.
pub fn redact(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if user.is_empty() {
                format!("{scheme}://{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(raw: &str) -> String {
        RemoteUrl::parse(raw).unwrap().normalized()
    }

    #[test]
    fn spellings_of_one_https_repository_normalize_alike() {
        let want = "https://github.com/org/repo";
        for raw in [
            "https://github.com/org/repo",
            "HTTPS://GitHub.com/org/repo/",
            "https://github.com:443/org/repo",
            "https://someone@github.com/org/repo",
        ] {
            assert_eq!(normalized(raw), want, "{raw}");
        }
        assert_ne!(normalized("https://github.com/org/repo.git"), want);
        assert_ne!(normalized("https://github.com:8443/org/repo"), want);
        assert_ne!(normalized("http://github.com/org/repo"), want);
    }

    #[test]
    fn prefixes_cover_their_repositories_only_at_a_path_boundary() {
        let covers = |prefix: &str, repo: &str| {
            RemoteUrl::parse_prefix(prefix)
                .expect(prefix)
                .covers(&RemoteUrl::parse(repo).expect(repo))
        };
        for (prefix, repo) in [
            ("https://github.com/org/", "https://github.com/org/repo.git"),
            ("https://github.com/org", "https://github.com/org/repo"),
            ("https://github.com/org/repo", "https://github.com/org/repo"),
            ("HTTPS://GitHub.com:443/org", "https://github.com/org/a/b"),
            (
                "https://git.example.com",
                "https://git.example.com/any/repo",
            ),
            ("git@github.com:org", "git@github.com:org/repo.git"),
            ("git@github.com:", "git@github.com:org/repo.git"),
            ("ssh://git@host/org", "ssh://host/org/repo"),
        ] {
            assert!(covers(prefix, repo), "{prefix} should cover {repo}");
        }
        for (prefix, repo) in [
            (
                "https://github.com/org",
                "https://github.com/organisation/repo",
            ),
            (
                "https://github.com",
                "https://github.com.evil.example/org/repo",
            ),
            ("https://github.com/org", "http://github.com/org/repo"),
            ("https://github.com/org", "https://github.com:8443/org/repo"),
            ("https://github.com/org", "ssh://git@github.com/org/repo"),
            (
                "https://github.com/org/repo",
                "https://github.com/org/repo.git",
            ),
            ("git@github.com:org", "ssh://git@github.com/org/repo"),
        ] {
            assert!(!covers(prefix, repo), "{prefix} should not cover {repo}");
        }
        assert!(RemoteUrl::parse_prefix("github.com/org").is_err());
        assert!(RemoteUrl::parse("https://github.com").is_err());
    }

    #[test]
    fn scp_like_urls_are_ssh_with_home_relative_paths() {
        let url = RemoteUrl::parse("git@github.com:org/repo.git").unwrap();
        assert_eq!(url.scheme(), Scheme::Ssh);
        assert_eq!(url.user.as_deref(), Some("git"));
        assert_eq!(url.host, "github.com");
        assert_eq!(url.effective_port(), Some(22));
        assert_eq!(url.normalized(), "ssh://github.com/~/org/repo.git");
        assert_eq!(
            normalized("git@github.com:/srv/repo"),
            normalized("ssh://git@github.com:22/srv/repo")
        );
    }

    #[test]
    fn file_urls_keep_their_path() {
        let url = RemoteUrl::parse("file:///tmp/x/repo").unwrap();
        assert_eq!(url.scheme(), Scheme::File);
        assert_eq!(url.normalized(), "file:///tmp/x/repo");
        assert!(RemoteUrl::parse("file://localhost/tmp/repo").is_ok());
        assert!(RemoteUrl::parse("file://otherhost/tmp/repo").is_err());
        assert!(RemoteUrl::parse("file://").is_err());
    }

    #[test]
    fn local_paths_unknown_schemes_and_passwords_are_refused() {
        for raw in [
            "",
            "/srv/repo",
            "./repo",
            "repo",
            "git://github.com/org/repo",
            "ftp://host/repo",
            "https://user:secret@github.com/org/repo",
            "https://github.com",
            "https://github.com/",
            "https://-oProxyCommand=x/repo",
            "https://host:99999/repo",
            "https://host name/repo",
            "ssh://[::1/repo",
        ] {
            assert!(RemoteUrl::parse(raw).is_err(), "{raw:?} should be refused");
        }
        let err = RemoteUrl::parse("https://u:p@h/r").unwrap_err();
        assert!(err.contains("secretRef"), "{err}");
        assert!(!err.contains("u:p"), "{err}");
    }

    #[test]
    fn loopback_hosts_are_recognized() {
        for raw in [
            "http://127.0.0.1:8080/r",
            "http://127.3.2.1/r",
            "http://localhost/r",
            "http://[::1]:9/r",
        ] {
            assert!(RemoteUrl::parse(raw).unwrap().is_loopback(), "{raw}");
        }
        for raw in [
            "http://10.0.0.1/r",
            "http://localhost.example.com/r",
            "http://[::2]/r",
        ] {
            assert!(!RemoteUrl::parse(raw).unwrap().is_loopback(), "{raw}");
        }
    }

    #[test]
    fn redaction_removes_passwords_and_keeps_the_rest() {
        assert_eq!(
            redact("https://user:secret@host/org/repo"),
            "https://user@host/org/repo"
        );
        assert_eq!(redact("https://:secret@host/r"), "https://host/r");
        assert_eq!(redact("https://host/r"), "https://host/r");
        assert_eq!(redact("git@host:org/repo"), "git@host:org/repo");
        assert_eq!(redact("https://a:b@c@host/r"), "https://a@host/r");
    }
}
