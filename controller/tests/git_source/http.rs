//! Smart HTTP with Basic auth on 127.0.0.1.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crucible::source::{Credentials, GitRequest};
use git2::Oid;

use crate::fixtures::*;

/// `git http-backend` (CGI) behind a one-request-per-connection HTTP/1.1 server on an
/// ephemeral loopback port that demands Basic auth. Stops when dropped.
pub(crate) struct GitHttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    unauthorized: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl GitHttpServer {
    pub(crate) fn start(project_root: PathBuf, username: &str, password: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let unauthorized = Arc::new(AtomicUsize::new(0));
        let expected = format!(
            "Basic {}",
            base64(format!("{username}:{password}").as_bytes())
        );
        let user = username.to_string();
        let thread = {
            let (stop, unauthorized) = (stop.clone(), unauthorized.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let _ = serve(stream, &project_root, &expected, &user, &unauthorized);
                    }
                }
            })
        };
        GitHttpServer {
            addr,
            stop,
            unauthorized,
            thread: Some(thread),
        }
    }

    pub(crate) fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}", self.addr.port())
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One request: check auth, run the CGI, send its answer, close.
fn serve(
    stream: TcpStream,
    root: &Path,
    expected_auth: &str,
    user: &str,
    unauthorized: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let body = read_body(&mut reader, &headers)?;
    let mut out = stream;
    if headers.get("authorization").map(String::as_str) != Some(expected_auth) {
        unauthorized.fetch_add(1, Ordering::SeqCst);
        return out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut cgi = Command::new("git");
    cgi.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (header, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(value) = headers.get(header) {
            cgi.env(var, value);
        }
    }
    let mut child = cgi.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let output = child.wait_with_output()?;
    let _ = writer.join();
    let raw = output.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        return out
            .write_all(b"HTTP/1.1 500 CGI\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    };
    let mut status = "200 OK".to_string();
    let mut response_headers = String::new();
    for line in String::from_utf8_lossy(&raw[..end]).lines() {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_string();
            }
            Some(_) => response_headers.push_str(&format!("{line}\r\n")),
            None => {}
        }
    }
    let body = &raw[end + sep..];
    out.write_all(
        format!(
            "HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )?;
    out.write_all(body)
}

fn read_body(
    reader: &mut impl BufRead,
    headers: &BTreeMap<String, String>,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = headers.get("content-length").and_then(|v| v.parse().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(body)
}

pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A repository served over HTTP as `/repo` (the server's project root is `up.root`).
pub(crate) fn served_upstream() -> (Upstream, Oid) {
    let up = Upstream::new("main");
    let commit = up.commit("main", &[("evals/eval.py", b"print('over http')")]);
    (up, commit)
}

pub(crate) fn http_request(url: String, credentials: Option<Credentials>) -> GitRequest {
    GitRequest {
        url,
        reference: Some("main".into()),
        path: Some("evals".into()),
        credentials,
    }
}

#[tokio::test]
async fn basic_auth_over_loopback_http_fetches_with_the_right_credentials() {
    within(async {
        let (up, commit) = served_upstream();
        let server = GitHttpServer::start(up.root.path().to_path_buf(), "alice", "s3cret");
        let (_root, cache) = cache();
        let credentials = Credentials::Basic {
            username: "alice".into(),
            password: "s3cret".into(),
        };
        let fetched = cache
            .fetch(http_request(server.url("repo"), Some(credentials)), MIB)
            .await
            .unwrap();
        assert_eq!(fetched.commit, commit.to_string());
        assert_eq!(fetched.files["eval.py"], b"print('over http')");
        // Again, incrementally, against the same cache.
        let again = cache
            .resolve(http_request(
                server.url("repo"),
                Some(Credentials::Basic {
                    username: "alice".into(),
                    password: "s3cret".into(),
                }),
            ))
            .await
            .unwrap();
        assert_eq!(again, commit.to_string());
    })
    .await;
}

#[tokio::test]
async fn a_token_is_sent_as_basic_auth_with_the_x_access_token_user() {
    within(async {
        let (up, commit) = served_upstream();
        let server = GitHttpServer::start(up.root.path().to_path_buf(), "x-access-token", "tok");
        let (_root, cache) = cache();
        let commit_seen = cache
            .resolve(http_request(
                server.url("repo"),
                Some(Credentials::Token("tok".into())),
            ))
            .await
            .unwrap();
        assert_eq!(commit_seen, commit.to_string());
    })
    .await;
}

#[tokio::test]
async fn wrong_credentials_fail_fast_with_auth_failed() {
    within(async {
        let (up, _) = served_upstream();
        let server = GitHttpServer::start(up.root.path().to_path_buf(), "alice", "s3cret");
        let (_root, cache) = cache();
        let started = Instant::now();
        let wrong = Credentials::Basic {
            username: "alice".into(),
            password: "wrong".into(),
        };
        let err = cache
            .fetch(http_request(server.url("repo"), Some(wrong)), MIB)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "SourceAuthFailed", "{err}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("rejected"), "{err}");
        assert!(
            !err.to_string().contains("wrong"),
            "the password never shows: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        let attempts = server.unauthorized.load(Ordering::SeqCst);
        assert!(attempts <= 3, "credentials were retried {attempts} times");
    })
    .await;
}

#[tokio::test]
async fn missing_credentials_fail_with_auth_failed() {
    within(async {
        let (up, _) = served_upstream();
        let server = GitHttpServer::start(up.root.path().to_path_buf(), "alice", "s3cret");
        let (_root, cache) = cache();
        let err = cache
            .fetch(http_request(server.url("repo"), None), MIB)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "SourceAuthFailed", "{err}");
        assert!(err.to_string().contains("secretRef"), "{err}");
        assert!(server.unauthorized.load(Ordering::SeqCst) >= 1);
    })
    .await;
}
