//! libgit2 callbacks for one fetch: credentials (offered once), ssh host-key verification
//! against `known_hosts`, and the transfer deadline. No I/O of its own; libgit2 calls these
//! during its network I/O and they record what they saw for the error mapping.
//!
//! # Guarantees
//!
//! - Credentials are offered at most once per fetch. libgit2 calls the credential callback
//!   again after a rejection, for ever if the callback keeps answering; the second call
//!   fails instead, so a wrong password ends in `SourceAuthFailed` after one round trip.
//! - An ssh connection proceeds only when the server's host key is in `known_hosts` and not
//!   revoked. TLS certificates are left to libgit2 and OpenSSL (the system's CAs).
//! - Once the deadline has passed, the next progress callback aborts the transfer. A server
//!   that stalls without sending anything is not interrupted here: libgit2's socket limits
//!   end it ([`super::socket_timeouts`]), and for ssh (whose socket libssh2 reads) every
//!   callback marks `answered`, and [`super::GitCache`] gives up on a fetch whose server has
//!   not answered in time.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};

use super::error::CallbackFailure;
use super::known_hosts::PresentedKey;
use super::request::{Auth, Prepared};

/// Callbacks for a fetch of `prepared`; what goes wrong lands in `seen`, and any sign of the
/// server (a certificate, a credential request, progress) sets `answered`.
pub(crate) fn callbacks<'a>(
    prepared: &'a Prepared,
    seen: &'a RefCell<CallbackFailure>,
    deadline: Instant,
    answered: &'a AtomicBool,
) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    let mut offered = false;
    let heard = move || answered.store(true, Ordering::Relaxed);
    callbacks.credentials(move |_url, _username_from_url, allowed| {
        heard();
        let refuse = |message: &str| {
            seen.borrow_mut().auth = Some(message.to_string());
            Err(git2::Error::from_str(message))
        };
        match &prepared.auth {
            Auth::None => {
                refuse("the server asks for credentials and none are configured (set secretRef)")
            }
            Auth::UserPass { username, password } => {
                if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                    return refuse("the server does not accept a username and password");
                }
                if std::mem::replace(&mut offered, true) {
                    return refuse("the server rejected the credentials");
                }
                Cred::userpass_plaintext(username, password)
            }
            Auth::Ssh {
                username,
                private_key,
                passphrase,
                ..
            } => {
                // libssh2 first asks which user to log in as, then for the key.
                if allowed.contains(CredentialType::USERNAME) {
                    return Cred::username(username);
                }
                if !allowed.contains(CredentialType::SSH_KEY) {
                    return refuse("the server does not accept public-key authentication");
                }
                if std::mem::replace(&mut offered, true) {
                    return refuse("the server rejected the ssh key");
                }
                Cred::ssh_key_from_memory(username, None, private_key, passphrase.as_deref())
            }
        }
    });
    callbacks.certificate_check(move |cert, _hostname| {
        heard();
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS: libgit2 has already verified the chain against the system's CAs.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let verdict = match &prepared.auth {
            Auth::Ssh { known_hosts, .. } => {
                let host = prepared
                    .url
                    .host
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let port = prepared.url.effective_port().unwrap_or(22);
                let presented = PresentedKey {
                    raw: hostkey.hostkey().map(<[u8]>::to_vec),
                    sha256: hostkey.hash_sha256().copied(),
                };
                known_hosts.verify(host, port, &presented)
            }
            // prepare() allows ssh only with known_hosts; anything else is refused here too.
            _ => Err("host key verification failed: no known_hosts configured".to_string()),
        };
        match verdict {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(message) => {
                let err = git2::Error::from_str(&message);
                seen.borrow_mut().host_key = Some(message);
                Err(err)
            }
        }
    });
    let in_time = move || {
        heard();
        if Instant::now() <= deadline {
            return true;
        }
        seen.borrow_mut().timed_out = Some("the transfer did not finish in time".to_string());
        false
    };
    callbacks.transfer_progress(move |_| in_time());
    callbacks.sideband_progress(move |_| in_time());
    callbacks
}
