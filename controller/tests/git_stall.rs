//! A git server that accepts and never answers: with the socket limits `main` installs,
//! libgit2 itself ends the fetch (the thread and the repository's lock are free again), long
//! before the cache would give up on the thread. Its own binary without the test harness:
//! the limits may only be set before any other thread exists.

use std::net::TcpListener;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crucible::source::GitRequest;
use crucible::source::cache::GitCache;
use crucible::source::socket_timeouts;

fn main() -> ExitCode {
    #[allow(unsafe_code)]
    // SAFETY: the first statement of the process; no other thread exists.
    let limited =
        unsafe { socket_timeouts::install(Duration::from_secs(2), Duration::from_secs(2)) };
    limited.expect("libgit2 takes the limits");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The kernel accepts into the backlog; nothing ever answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("address").port();
    let root = tempfile::tempdir().expect("tempdir");
    // The cache's own patience is far longer than the socket limit: only libgit2 can end
    // this fetch in time.
    let patience = Duration::from_secs(120);
    let cache = GitCache::new(root.path().join("cache"), u64::MAX)
        .with_timeout(patience)
        .with_answer_timeout(patience);
    let started = Instant::now();
    let result = runtime.block_on(cache.fetch(
        GitRequest {
            url: format!("http://127.0.0.1:{port}/org/repo"),
            ..Default::default()
        },
        1 << 20,
    ));
    let took = started.elapsed();
    let error = match result {
        Ok(_) => panic!("a silent server gave files"),
        Err(error) => error,
    };
    println!("fetch from a silent server ended after {took:?}: {error}");
    assert_eq!(error.reason(), "SourceUnreachable", "{error}");
    assert!(
        took < Duration::from_secs(30),
        "libgit2 waited {took:?} on a silent server: its socket limits are not in force"
    );
    drop(silent);
    println!("test a_silent_git_server_is_cut_off_by_libgit2 ... ok");
    ExitCode::SUCCESS
}
