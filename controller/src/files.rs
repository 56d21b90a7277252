//! Reading files a sandbox wrote, from the trusted side (`crucible run` on the host, the samples
//! container in the pod): never through a symlink, never blocking on a FIFO.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens the regular file `path` for reading without following a symlink and without blocking
/// on a FIFO.
///
/// # Errors
/// `path` is missing, a symlink or not a regular file.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}
