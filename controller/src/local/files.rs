//! Files and directories `crucible run` makes and reads. It runs as root on hosts other users
//! share (`/tmp`) and reads what a sandbox wrote, so: every directory is created fresh and
//! private (an existing one, or a symlink in its place, is an error, never reused), every file
//! is created new, and nothing is opened through a symlink or read without a bound.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub use crate::files::open_regular;

/// Creates `path`, which must not exist (a symlink there is an error too: `mkdir` does not
/// follow it), with exactly `mode` (the umask does not apply).
///
/// # Errors
/// `path` exists, or cannot be created.
pub fn fresh_dir(path: &Path, mode: u32) -> Result<(), String> {
    let error = |e: std::io::Error| format!("{}: {e}", path.display());
    DirBuilder::new().mode(mode).create(path).map_err(error)?;
    std::fs::set_permissions(path, Permissions::from_mode(mode)).map_err(error)
}

/// Creates the file `path`, which must not exist, with exactly `mode`, and writes `bytes`.
///
/// # Errors
/// `path` exists (a symlink included), or cannot be written.
pub fn create_file(path: &Path, mode: u32, bytes: &[u8]) -> Result<File, String> {
    use std::io::Write;
    let error = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(error)?;
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    Ok(file)
}

/// At most `max` bytes from the start of the regular file `path` ([`open_regular`]).
///
/// # Errors
/// As [`open_regular`], or a read error.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_regular(path)?.take(max).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn directories_are_fresh_and_private() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("run");
        fresh_dir(&dir, 0o700).expect("created");
        let mode = std::fs::metadata(&dir).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Existing: never reused.
        let err = fresh_dir(&dir, 0o700).expect_err("exists");
        assert!(err.contains("exists"), "{err}");
        // A symlink planted where the directory goes is not followed.
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        let planted = root.path().join("planted");
        symlink(&elsewhere, &planted).expect("symlink");
        assert!(fresh_dir(&planted, 0o700).is_err());
        assert_eq!(std::fs::read_dir(&elsewhere).expect("list").count(), 0);
    }

    #[test]
    fn files_are_created_new_and_never_through_a_symlink() {
        let root = tempfile::tempdir().expect("tempdir");
        let file = root.path().join("config.json");
        create_file(&file, 0o640, b"{}").expect("created");
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        assert!(create_file(&file, 0o640, b"again").is_err());
        assert_eq!(std::fs::read(&file).expect("read"), b"{}");
        let victim = root.path().join("victim");
        std::fs::write(&victim, "secret").expect("write");
        let link = root.path().join("link");
        symlink(&victim, &link).expect("symlink");
        assert!(create_file(&link, 0o600, b"overwritten").is_err());
        assert_eq!(std::fs::read(&victim).expect("read"), b"secret");
    }

    #[test]
    fn reads_are_bounded_and_refuse_symlinks_and_fifos() {
        let root = tempfile::tempdir().expect("tempdir");
        let big = root.path().join("big");
        std::fs::write(&big, vec![b'x'; 10_000]).expect("write");
        assert_eq!(read_bounded(&big, 4096).expect("read").len(), 4096);
        let link = root.path().join("link");
        symlink(&big, &link).expect("symlink");
        assert!(read_bounded(&link, 4096).is_err());
        let fifo = root.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let err = read_bounded(&fifo, 4096).expect_err("a FIFO is not read");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}
