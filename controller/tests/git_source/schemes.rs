//! Schemes and failures without a server.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crucible::source::{Credentials, GitCache, GitRequest};

use crate::fixtures::*;

#[tokio::test]
async fn file_urls_are_refused_unless_the_cache_allows_them() {
    within(async {
        let (up, _) = tree_upstream();
        let root = tempfile::tempdir().unwrap();
        let strict = GitCache::new(root.path().to_path_buf(), u64::MAX);
        let (message, reason) = failure(strict.fetch(up.request(None, None), MIB).await);
        assert_eq!(reason, "SourceRefused");
        assert!(message.contains("file://"), "{message}");
        let (_, reason) = failure(
            strict
                .fetch(
                    GitRequest {
                        url: up.path.display().to_string(),
                        ..Default::default()
                    },
                    MIB,
                )
                .await,
        );
        assert_eq!(reason, "InvalidSourceUrl");
    })
    .await;
}

#[tokio::test]
async fn a_missing_repository_is_not_found_and_leaves_no_cache_behind() {
    within(async {
        let (_root, cache) = cache();
        let request = GitRequest {
            url: "file:///nonexistent/crucible/repo".into(),
            ..Default::default()
        };
        let (message, reason) = failure(cache.fetch(request.clone(), MIB).await);
        assert_eq!(reason, "SourceRepositoryNotFound", "{message}");
        assert!(!cache.repo_dir(&request).unwrap().exists());
    })
    .await;
}

/// A loopback port with nothing listening.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn connection_refused_is_unreachable_and_transient() {
    within(async {
        let (_root, cache) = cache();
        let request = GitRequest {
            url: format!("http://127.0.0.1:{}/repo", closed_port()),
            ..Default::default()
        };
        let err = cache.resolve(request).await.unwrap_err();
        assert_eq!(err.reason(), "SourceUnreachable", "{err}");
        assert!(err.is_transient());
    })
    .await;
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_unreachable() {
    within(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (_root, cache) = cache();
        let cache = cache.with_timeout(Duration::from_secs(2));
        let started = Instant::now();
        let err = cache
            .resolve(GitRequest {
                url: format!("http://127.0.0.1:{port}/repo"),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "SourceUnreachable", "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(listener); // the connection closes and the blocking thread ends
    })
    .await;
}

#[tokio::test]
async fn a_stalled_server_releases_the_lock_at_once_and_gets_no_second_thread() {
    within(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (_root, cache) = cache();
        let cache = cache
            .with_timeout(Duration::from_secs(50))
            .with_answer_timeout(Duration::from_secs(1));
        let request = || GitRequest {
            url: format!("http://127.0.0.1:{port}/repo"),
            ..Default::default()
        };
        let started = Instant::now();
        let err = cache.resolve(request()).await.unwrap_err();
        assert_eq!(err.reason(), "SourceUnreachable", "{err}");
        assert!(err.to_string().contains("no answer within 1s"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // The thread still waits on the socket, but the lock is free: the next request ends
        // at once instead of waiting for it, and starts no second thread on the server.
        let again = Instant::now();
        let err = cache.resolve(request()).await.unwrap_err();
        assert!(err.to_string().contains("still waiting"), "{err}");
        assert!(again.elapsed() < Duration::from_millis(500));
        drop(listener); // the connection is reset and the blocking thread ends
        loop {
            let err = cache.resolve(request()).await.unwrap_err();
            if !err.to_string().contains("still waiting") {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// A listener that records whether anything connected.
fn watched_port() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

const KNOWN_HOSTS: &str =
    "127.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fn ssh_key(known_hosts: Option<&str>) -> Option<Credentials> {
    Some(Credentials::Ssh {
        private_key: "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n".into(),
        known_hosts: known_hosts.map(Into::into),
        passphrase: None,
    })
}

#[tokio::test]
async fn ssh_without_known_hosts_is_refused_before_connecting() {
    within(async {
        let (listener, port) = watched_port();
        let (_root, cache) = cache();
        for (url, credentials) in [
            (
                format!("ssh://git@127.0.0.1:{port}/org/repo"),
                ssh_key(None),
            ),
            (format!("ssh://git@127.0.0.1:{port}/org/repo"), None),
        ] {
            let (message, reason) = failure(
                cache
                    .fetch(
                        GitRequest {
                            url,
                            credentials,
                            ..Default::default()
                        },
                        MIB,
                    )
                    .await,
            );
            assert_eq!(reason, "SourceRefused");
            assert!(message.contains("known_hosts"), "{message}");
        }
        let (message, reason) = failure(
            cache
                .resolve(GitRequest {
                    url: "git@127.0.0.1:org/repo".into(),
                    credentials: ssh_key(None),
                    ..Default::default()
                })
                .await,
        );
        assert_eq!(reason, "SourceRefused", "{message}");
        assert!(listener.accept().is_err(), "nothing may have connected");
    })
    .await;
}

#[tokio::test]
async fn ssh_with_unreadable_known_hosts_is_invalid_and_never_connects() {
    within(async {
        let (listener, port) = watched_port();
        let (_root, cache) = cache();
        let (message, reason) = failure(
            cache
                .resolve(GitRequest {
                    url: format!("ssh://git@127.0.0.1:{port}/org/repo"),
                    credentials: ssh_key(Some("127.0.0.1 ssh-ed25519")),
                    ..Default::default()
                })
                .await,
        );
        assert_eq!(reason, "InvalidSourceCredentials");
        assert!(message.contains("known_hosts"), "{message}");
        assert!(listener.accept().is_err(), "nothing may have connected");
    })
    .await;
}

#[tokio::test]
async fn ssh_with_known_hosts_to_a_closed_port_is_unreachable() {
    within(async {
        let (_root, cache) = cache();
        let err = cache
            .resolve(GitRequest {
                url: format!("ssh://git@127.0.0.1:{}/org/repo", closed_port()),
                credentials: ssh_key(Some(KNOWN_HOSTS)),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "SourceUnreachable", "{err}");
    })
    .await;
}
