//! Limits on libgit2's waits on a socket. By default libgit2 waits for a connection and for
//! every read without end, so a git server that accepts and never answers holds a fetch
//! thread (and the lock of its repository) for as long as the process lives: the fetch pool
//! gives up on such a thread, but cannot end it. With these limits libgit2 itself fails the
//! connect or the read, the thread ends, and the repository is usable again.
//!
//! libgit2 keeps them in process-wide C globals written without synchronisation, so they are
//! set once, by the binary, before any other thread exists (`main.rs`); that is the one
//! `unsafe` of the crate. They apply to libgit2's own sockets (https, git); ssh reads are
//! libssh2's and stay bounded only by the pool's deadlines.

use std::time::Duration;

/// Longest wait for a TCP connection to a git server.
pub const CONNECT: Duration = Duration::from_secs(10);

/// Longest wait for the next bytes from a git server: the fetch pool's answer deadline, so a
/// thread given up on ends about when it is given up on.
pub const READ: Duration = super::cache::DEFAULT_ANSWER_TIMEOUT;

/// Sets libgit2's connect and read timeouts for the whole process.
///
/// # Safety
/// Call before any other thread of the process exists (libgit2 writes C globals without
/// synchronisation; a concurrent fetch could read them torn).
///
/// # Errors
/// libgit2's, if it refuses the option (it does not, from 1.7 on).
#[allow(unsafe_code)]
pub unsafe fn install(connect: Duration, read: Duration) -> Result<(), git2::Error> {
    let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the caller guarantees no other thread exists (see above).
    unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(millis(connect))?;
        git2::opts::set_server_timeout_in_milliseconds(millis(read))
    }
}
