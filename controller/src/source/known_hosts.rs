//! OpenSSH `known_hosts` parsing and host-key verification for ssh sources. Pure.
//!
//! Supported: plain host patterns (`host`, `host1,host2`, `[host]:2222`, wildcards `*` and
//! `?`, negation `!pattern`) and the `@revoked` marker. Not supported, and never trusted:
//! hashed hosts (`|1|salt|hash`, written by `ssh-keyscan -H`) and `@cert-authority` lines.
//! Both are counted so the error can say why nothing matched. Write the entries with
//! `ssh-keyscan host` (without `-H`).

use sha2::{Digest, Sha256};

/// The parsed `known_hosts` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KnownHosts {
    entries: Vec<Entry>,
    /// Lines that cannot be used (hashed hosts, `@cert-authority`).
    unusable: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    patterns: Vec<String>,
    revoked: bool,
    key_type: String,
    key: Vec<u8>,
}

/// The key a server presented, as libgit2 hands it over: the raw key blob when libssh2
/// gives it, and its sha256.
#[derive(Clone, Debug, Default)]
pub(crate) struct PresentedKey {
    /// Wire-format public key (the bytes base64 encodes in `known_hosts`).
    pub raw: Option<Vec<u8>>,
    /// sha256 of the wire-format key.
    pub sha256: Option<[u8; 32]>,
}

impl KnownHosts {
    /// Parses a `known_hosts` file; a malformed line is an error naming its number.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut known = KnownHosts::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let mut first = fields.next().unwrap_or_default();
            let mut revoked = false;
            if let Some(marker) = first.strip_prefix('@') {
                match marker {
                    "revoked" => revoked = true,
                    "cert-authority" => {
                        known.unusable += 1;
                        continue;
                    }
                    other => return Err(format!("line {}: unknown marker @{other}", n + 1)),
                }
                first = fields.next().unwrap_or_default();
            }
            if first.starts_with('|') {
                known.unusable += 1;
                continue;
            }
            let (Some(key_type), Some(key)) = (fields.next(), fields.next()) else {
                return Err(format!(
                    "line {}: expected `host key-type base64-key`",
                    n + 1
                ));
            };
            let key = base64_decode(key)
                .ok_or_else(|| format!("line {}: the key is not base64", n + 1))?;
            if !key_type_matches_blob(key_type, &key) {
                return Err(format!("line {}: the key is not a {key_type} key", n + 1));
            }
            known.entries.push(Entry {
                patterns: first.split(',').map(str::to_ascii_lowercase).collect(),
                revoked,
                key_type: key_type.to_string(),
                key,
            });
        }
        if known.entries.is_empty() {
            return Err(if known.unusable > 0 {
                "known_hosts has only hashed or @cert-authority entries, which Crucible cannot \
                 use; add plain entries (ssh-keyscan without -H)"
                    .into()
            } else {
                "known_hosts has no entries".into()
            });
        }
        Ok(known)
    }

    /// Whether `presented` is a trusted, not revoked key of `host:port`; the error says why
    /// not, in words fit for a status message.
    pub fn verify(&self, host: &str, port: u16, presented: &PresentedKey) -> Result<(), String> {
        let host = host.to_ascii_lowercase();
        let name = if port == 22 {
            host.clone()
        } else {
            format!("[{host}]:{port}")
        };
        let for_host: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| host_matches(&e.patterns, &name))
            .collect();
        let same_key = |e: &&Entry| match (&presented.raw, &presented.sha256) {
            (Some(raw), _) => raw == &e.key,
            (None, Some(sha)) => Sha256::digest(&e.key).as_slice() == sha.as_slice(),
            (None, None) => false,
        };
        if for_host.iter().filter(|e| e.revoked).any(same_key) {
            return Err(format!(
                "host key verification failed: the key of {name} is revoked in known_hosts"
            ));
        }
        let trusted: Vec<&&Entry> = for_host.iter().filter(|e| !e.revoked).collect();
        if trusted.iter().any(|e| same_key(e)) {
            return Ok(());
        }
        if trusted.is_empty() {
            let hint = if self.unusable > 0 {
                format!(
                    " ({} hashed or @cert-authority entries were ignored; add plain entries \
                     with ssh-keyscan without -H)",
                    self.unusable
                )
            } else {
                String::new()
            };
            return Err(format!(
                "host key verification failed: {name} is not in known_hosts{hint}"
            ));
        }
        let types: Vec<&str> = trusted.iter().map(|e| e.key_type.as_str()).collect();
        Err(format!(
            "host key verification failed: the key {name} presented does not match its \
             known_hosts entries ({})",
            types.join(", ")
        ))
    }
}

/// OpenSSH pattern-list semantics: a matching negated pattern excludes the host, otherwise
/// any matching pattern includes it.
fn host_matches(patterns: &[String], name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns {
        match pattern.strip_prefix('!') {
            Some(negated) if glob(negated.as_bytes(), name.as_bytes()) => return false,
            Some(_) => {}
            None => matched |= glob(pattern.as_bytes(), name.as_bytes()),
        }
    }
    matched
}

/// `*` (any run) and `?` (any one character) matching, in O(pattern × text) time and no
/// allocation whatever the input.
///
/// Two pointers with backtracking to the last `*` only: a later star can absorb anything an
/// earlier one could, so retrying earlier stars (what a recursive matcher does, exponentially
/// for patterns such as `*a*a*a*…b`) never finds a match the last one misses.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // The position after the last `*` seen, and the text position it is matched up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last star absorb one more character and retry from there.
                Some((after, absorbed)) => {
                    star = Some((after, absorbed + 1));
                    p = after;
                    t = absorbed + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The key blob starts with its own type name as an ssh string (u32 length + bytes).
fn key_type_matches_blob(key_type: &str, blob: &[u8]) -> bool {
    let Some((len, rest)) = blob.split_first_chunk::<4>() else {
        return false;
    };
    let len = u32::from_be_bytes(*len) as usize;
    rest.get(..len) == Some(key_type.as_bytes())
}

/// Standard base64 with optional padding; `None` on anything else.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover base64 digit cannot encode a byte.
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ed25519 host key (github.com's published one) and a second, made-up key of the
    /// same type for mismatches.
    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9AAAA";

    fn raw(key: &str) -> PresentedKey {
        PresentedKey {
            raw: base64_decode(key),
            sha256: None,
        }
    }

    #[test]
    fn base64_decodes_the_standard_alphabet() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("aGV-bG8=").is_none());
    }

    #[test]
    fn a_listed_host_with_its_key_is_trusted() {
        let known = KnownHosts::parse(&format!(
            "# comment\n\ngithub.com,140.82.121.4 ssh-ed25519 {KEY_A} comment\n"
        ))
        .unwrap();
        assert_eq!(known.verify("GitHub.com", 22, &raw(KEY_A)), Ok(()));
        assert_eq!(known.verify("140.82.121.4", 22, &raw(KEY_A)), Ok(()));
        let by_hash = PresentedKey {
            raw: None,
            sha256: Some(Sha256::digest(base64_decode(KEY_A).unwrap()).into()),
        };
        assert_eq!(known.verify("github.com", 22, &by_hash), Ok(()));
    }

    #[test]
    fn a_different_key_an_unknown_host_or_another_port_is_refused() {
        let known = KnownHosts::parse(&format!("github.com ssh-ed25519 {KEY_A}")).unwrap();
        let mismatch = known.verify("github.com", 22, &raw(KEY_B)).unwrap_err();
        assert!(mismatch.contains("does not match"), "{mismatch}");
        let unknown = known.verify("gitlab.com", 22, &raw(KEY_A)).unwrap_err();
        assert!(unknown.contains("not in known_hosts"), "{unknown}");
        let port = known.verify("github.com", 2222, &raw(KEY_A)).unwrap_err();
        assert!(port.contains("[github.com]:2222"), "{port}");
        assert!(
            known
                .verify("github.com", 22, &PresentedKey::default())
                .is_err()
        );
    }

    #[test]
    fn ports_wildcards_negation_and_revocation_follow_openssh() {
        let known = KnownHosts::parse(&format!(
            "[git.internal]:2222 ssh-ed25519 {KEY_A}\n\
             *.example.org,!bad.example.org ssh-ed25519 {KEY_A}\n\
             @revoked * ssh-ed25519 {KEY_B}\n\
             *.example.org ssh-ed25519 {KEY_B}\n"
        ))
        .unwrap();
        assert_eq!(known.verify("git.internal", 2222, &raw(KEY_A)), Ok(()));
        assert!(known.verify("git.internal", 22, &raw(KEY_A)).is_err());
        assert_eq!(known.verify("a.example.org", 22, &raw(KEY_A)), Ok(()));
        assert!(known.verify("bad.example.org", 22, &raw(KEY_A)).is_err());
        let revoked = known.verify("a.example.org", 22, &raw(KEY_B)).unwrap_err();
        assert!(revoked.contains("revoked"), "{revoked}");
    }

    #[test]
    fn glob_follows_the_wildcard_rules() {
        for (pattern, text, expected) in [
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("*.example.org", "a.example.org", true),
            ("*.example.org", "example.org", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a*b*c", "a-b-b-c", true),
            ("a*b*c", "a-b-b-", false),
            ("*a", "bab", false),
            ("**", "x", true),
            ("[git.internal]:22?2", "[git.internal]:2222", true),
        ] {
            assert_eq!(
                glob(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern:?} vs {text:?}"
            );
        }
    }

    #[test]
    fn a_pathological_pattern_is_matched_in_linear_time() {
        // A recursive matcher tries every way to share the host among the 30 stars: about
        // C(100, 30) > 10^25 calls.
        let pattern = format!("{}b", "*a".repeat(30));
        let host = "a".repeat(100);
        let started = std::time::Instant::now();
        assert!(!glob(pattern.as_bytes(), host.as_bytes()));
        let known = KnownHosts::parse(&format!("{pattern},!x ssh-ed25519 {KEY_A}")).unwrap();
        assert!(known.verify(&host, 22, &raw(KEY_A)).is_err());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(glob(pattern.as_bytes(), format!("{host}b").as_bytes()));
    }

    #[test]
    fn hashed_entries_are_never_trusted_and_the_error_says_so() {
        let hashed = format!("|1|c2FsdA==|aGFzaA== ssh-ed25519 {KEY_A}");
        let only_hashed = KnownHosts::parse(&hashed).unwrap_err();
        assert!(
            only_hashed.contains("ssh-keyscan without -H"),
            "{only_hashed}"
        );
        let known = KnownHosts::parse(&format!("{hashed}\nother ssh-ed25519 {KEY_A}")).unwrap();
        let err = known.verify("github.com", 22, &raw(KEY_A)).unwrap_err();
        assert!(err.contains("1 hashed"), "{err}");
    }

    #[test]
    fn malformed_known_hosts_are_errors_with_line_numbers() {
        assert!(KnownHosts::parse("").unwrap_err().contains("no entries"));
        let short = KnownHosts::parse("# x\nhost ssh-ed25519").unwrap_err();
        assert!(short.starts_with("line 2"), "{short}");
        let not_b64 = KnownHosts::parse("host ssh-ed25519 !!!").unwrap_err();
        assert!(not_b64.contains("not base64"), "{not_b64}");
        let wrong_type = KnownHosts::parse(&format!("host ssh-rsa {KEY_A}")).unwrap_err();
        assert!(wrong_type.contains("not a ssh-rsa key"), "{wrong_type}");
        let marker = KnownHosts::parse(&format!("@bogus host ssh-ed25519 {KEY_A}")).unwrap_err();
        assert!(marker.contains("@bogus"), "{marker}");
    }
}
