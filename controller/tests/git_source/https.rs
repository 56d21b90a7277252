//! HTTPS with a self-signed certificate on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crucible::source::Credentials;
use tempfile::TempDir;

use crate::fixtures::*;
use crate::http::*;

//
// A Python `ssl` server runs the same CGI bridge over TLS with a certificate made by
// `openssl req`. The fetch that must succeed runs in a child test process whose OpenSSL
// trusts exactly that certificate (`SSL_CERT_FILE`), so the controller's code has no test
// hook and the test process's own trust store stays the system's.

/// The TLS smart-HTTP server: Basic auth, then `git http-backend`. Prints its port, stops
/// when its stdin closes.
const TLS_SERVER_PY: &str = r#"
import base64, http.server, os, ssl, subprocess, sys, threading
root, cert, key, user, password = sys.argv[1:6]
expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_GET(self):
        self.git()
    def do_POST(self):
        self.git()
    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                chunk = self.rfile.read(size + 2)
                if size == 0:
                    return data
                data += chunk[:size]
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))
    def reply(self, status, headers, payload):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True
    def git(self):
        body = self.body()
        if self.headers.get("Authorization") != expected:
            return self.reply(401, [("WWW-Authenticate", 'Basic realm="git"')], b"")
        path, _, query = self.path.partition("?")
        env = dict(os.environ, GIT_PROJECT_ROOT=root, GIT_HTTP_EXPORT_ALL="1",
                   REQUEST_METHOD=self.command, PATH_INFO=path, QUERY_STRING=query,
                   CONTENT_LENGTH=str(len(body)), REMOTE_USER=user, REMOTE_ADDR="127.0.0.1")
        for header, var in (("Content-Type", "CONTENT_TYPE"),
                            ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
                            ("Git-Protocol", "GIT_PROTOCOL")):
            if self.headers.get(header):
                env[var] = self.headers[header]
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
        head, sep, payload = out.partition(b"\r\n\r\n")
        if not sep:
            head, sep, payload = out.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif value:
                headers.append((name, value.strip()))
        self.reply(status, headers, payload)

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
server.shutdown()
"#;

/// The Python TLS server and its certificate; stops when dropped.
struct TlsServer {
    child: std::process::Child,
    port: u16,
    cert: PathBuf,
    _dir: TempDir,
}

impl TlsServer {
    /// `None` (and a note on stderr) when `python3` or `openssl` is not installed.
    fn start(project_root: &Path, username: &str, password: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: openssl could not make a test certificate");
            return None;
        }
        let script = dir.path().join("server.py");
        std::fs::write(&script, TLS_SERVER_PY).unwrap();
        let Ok(mut child) = Command::new("python3")
            .arg(&script)
            .arg(project_root)
            .args([&cert, &key])
            .args([username, password])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        else {
            eprintln!("SKIPPED: python3 is not installed");
            return None;
        };
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server prints its port");
        Some(TlsServer {
            child,
            port,
            cert,
            _dir: dir,
        })
    }

    fn url(&self, host: &str, repo: &str) -> String {
        format!("https://{host}:{}/{repo}", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // EOF: the server shuts down
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Environment of the child test process: where the server is and what to expect.
const TLS_URL_ENV: &str = "CRUCIBLE_TEST_TLS_URL";
const TLS_COMMIT_ENV: &str = "CRUCIBLE_TEST_TLS_COMMIT";

#[tokio::test]
async fn https_with_basic_auth_works_against_a_trusted_certificate_and_fails_closed_otherwise() {
    within(async {
        let (up, commit) = served_upstream();
        let Some(server) = TlsServer::start(up.root.path(), "alice", "s3cret") else {
            return;
        };
        // This process does not trust the self-signed certificate: refused, not transient.
        let (_root, cache) = cache();
        let credentials = Credentials::Basic {
            username: "alice".into(),
            password: "s3cret".into(),
        };
        let err = cache
            .resolve(http_request(
                server.url("127.0.0.1", "repo"),
                Some(credentials),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "SourceAuthFailed", "{err}");
        assert!(err.to_string().contains("certificate"), "{err}");

        // A process that trusts exactly this certificate fetches, by IP and by name.
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--exact",
                "https::tls_fetch_in_a_process_that_trusts_the_test_certificate",
            ])
            .args(["--include-ignored", "--nocapture", "--test-threads=1"])
            .env("SSL_CERT_FILE", &server.cert)
            .env_remove("SSL_CERT_DIR")
            .env(TLS_URL_ENV, server.url("127.0.0.1", "repo"))
            .env(TLS_COMMIT_ENV, commit.to_string());
        let child = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .unwrap();
        let out = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success(),
            "{out}\n{}",
            String::from_utf8_lossy(&child.stderr)
        );
        assert!(
            out.contains("1 passed"),
            "the child test did not run: {out}"
        );
    })
    .await;
}

/// Run by the test above, in a process whose OpenSSL trusts the test certificate.
#[tokio::test]
#[ignore = "run by https_with_basic_auth_works_against_a_trusted_certificate_and_fails_closed_otherwise"]
async fn tls_fetch_in_a_process_that_trusts_the_test_certificate() {
    let (Ok(url), Ok(commit)) = (std::env::var(TLS_URL_ENV), std::env::var(TLS_COMMIT_ENV)) else {
        return;
    };
    within(async {
        let (_root, cache) = cache();
        let basic = |password: &str| {
            Some(Credentials::Basic {
                username: "alice".into(),
                password: password.into(),
            })
        };
        let fetched = cache
            .fetch(http_request(url.clone(), basic("s3cret")), MIB)
            .await
            .unwrap();
        assert_eq!(fetched.commit, commit);
        assert_eq!(fetched.files["eval.py"], b"print('over http')");
        let by_name = url.replace("127.0.0.1", "localhost");
        let (_root2, other) = self::cache();
        assert_eq!(
            other
                .resolve(http_request(by_name, basic("s3cret")))
                .await
                .unwrap(),
            commit
        );
        let err = cache
            .fetch(http_request(url, basic("wrong")), MIB)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "SourceAuthFailed", "{err}");
        println!("tls-fetched {commit}");
    })
    .await;
}
