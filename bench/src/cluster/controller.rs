//! The controller under test: the `crucible` binary, started by the benchmark for its own
//! namespaces and killed when dropped (also on error or Ctrl-C); [`Daemon`], what it shares
//! with the other programs the benchmark starts (Kueue).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Error, io_err, lab, say};

/// How long a started program may take to report ready (and the canary to verify).
const READY_WITHIN: Duration = Duration::from_secs(60);
/// Timeout of one request to its HTTP endpoints.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// How to start the controller.
pub struct Options<'a> {
    pub binary: &'a Path,
    pub kubeconfig: &'a Path,
    /// Scope: the benchmark's namespaces.
    pub namespaces: &'a [String],
    /// Its own system namespace (stop switch), not the cluster's `crucible-system`.
    pub system_namespace: &'a str,
    pub max_running: usize,
    /// Where its log and git cache go.
    pub dir: &'a Path,
    /// Flags after the common ones (e.g. the results store of the samples step).
    pub extra: &'a [String],
}

/// A running controller; killed on drop.
pub struct Controller {
    daemon: Daemon,
}

impl Controller {
    /// Starts the controller (no leader election) and waits until its /readyz says ready.
    pub async fn start(opts: &Options<'_>) -> Result<Controller, Error> {
        let port = free_port()?;
        let log = opts.dir.join(format!("controller-{port}.log"));
        // Through bash, which closes inherited descriptors and execs (same PID): the
        // controller must not hold this process's lock or pipes.
        let mut command = lab::bash(r#"exec "$@""#);
        command
            .arg(opts.binary)
            .arg("controller")
            .arg("--namespace")
            .arg(opts.namespaces.join(","))
            .args(["--system-namespace", opts.system_namespace])
            .args(["--max-running", &opts.max_running.to_string()])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .arg("--git-cache-dir")
            .arg(opts.dir.join("git-cache"))
            .args(opts.extra)
            .env("KUBECONFIG", opts.kubeconfig);
        let daemon = Daemon::start("the controller", command, port, log).await?;
        let deadline = Instant::now() + READY_WITHIN;
        say(format!(
            "controller ready (PID {}, log {}), scope {}",
            daemon.pid(),
            daemon.log.display(),
            opts.namespaces.join(",")
        ));
        // The sandbox canary holds admission until it has proven the RuntimeClass: a one-off
        // start-up cost, kept out of every figure. A controller without the canary (or with it
        // off) exports no gvisor sample: a few seconds without one means there is none.
        let started = Instant::now();
        loop {
            let metrics = daemon.get("/metrics").await.map(|(_, b)| b);
            let verdict = metrics.as_deref().ok().and_then(canary_verified);
            if verdict == Some(true)
                || (verdict.is_none() && started.elapsed() > Duration::from_secs(5))
            {
                break;
            }
            if Instant::now() >= deadline {
                return Err(daemon.failed("the sandbox canary did not verify gvisor"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        say("sandbox canary verified");
        Ok(Controller { daemon })
    }

    /// The process.
    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// Reconciles started so far (`crucible_reconcile_runs_total`, every kind), if the
    /// controller exports that counter.
    pub async fn reconciles(&self) -> Option<f64> {
        let (code, body) = self.daemon.get("/metrics").await.ok()?;
        (code == 200).then_some(())?;
        let samples: Vec<f64> = body
            .lines()
            .filter(|l| l.starts_with("crucible_reconcile_runs_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!samples.is_empty()).then(|| samples.iter().sum())
    }
}

/// A program the benchmark started (the controller, Kueue), with a plain-HTTP `/readyz` on
/// 127.0.0.1; killed on drop (also on error or Ctrl-C).
pub struct Daemon {
    name: &'static str,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    /// Spawns `command` with its output to `log` and waits until `/readyz` on `port` answers
    /// 200 (at most a minute).
    pub async fn start(
        name: &'static str,
        mut command: Command,
        port: u16,
        log: PathBuf,
    ) -> Result<Daemon, Error> {
        let file = std::fs::File::create(&log).map_err(io_err(&log))?;
        let file2 = file.try_clone().map_err(io_err(&log))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2)
            .spawn()
            .map_err(io_err(command.get_program()))?;
        let mut daemon = Daemon {
            name,
            child,
            port,
            log,
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(daemon.failed(&format!("exited with {status}")));
            }
            if matches!(daemon.get("/readyz").await, Ok((200, _))) {
                return Ok(daemon);
            }
            if Instant::now() >= deadline {
                return Err(daemon.failed("not ready after 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> Result<u64, Error> {
        lab::rss_kib(self.pid())
    }

    /// CPU time used so far.
    pub fn cpu(&self) -> Result<Duration, Error> {
        lab::cpu_time(self.pid())
    }

    /// What went wrong, with the last lines of its log.
    pub fn failed(&self, what: &str) -> Error {
        let tail = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = tail.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        Error::Setup(format!(
            "{} {what} (log {}):\n{tail}",
            self.name,
            self.log.display()
        ))
    }

    async fn get(&self, path: &str) -> Result<(u16, String), Error> {
        let (port, path) = (self.port, path.to_string());
        tokio::task::spawn_blocking(move || http_get(port, &path))
            .await
            .map_err(|e| Error::Setup(format!("HTTP task: {e}")))?
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGKILL: the benchmark has what it needs; nothing of it must outlive the benchmark.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on now (the program started next binds it).
pub fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("127.0.0.1:0"))?;
    let port = listener.local_addr().map_err(io_err("127.0.0.1:0"))?.port();
    Ok(port)
}

/// One plain HTTP/1.1 GET to the controller's own endpoint on 127.0.0.1.
fn http_get(port: u16, path: &str) -> Result<(u16, String), Error> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let what = format!("http://{addr}{path}");
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).map_err(io_err(&what))?;
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .map_err(io_err(&what))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(io_err(&what))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io_err(&what))?;
    parse_response(&raw).ok_or_else(|| Error::Setup(format!("{what}: malformed response")))
}

/// Status code and body of an HTTP/1.1 response (body by length, chunked, or to the end).
fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Some((code, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_by_length_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(parse_response(plain), Some((200, "ok".into())));
        let chunked =
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnot \r\n5\r\nready\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((503, "not ready".into())));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            None
        );
    }
}

/// What the controller's metrics say of the canary's verdict on `gvisor`: `None` without a
/// sample.
fn canary_verified(metrics: &str) -> Option<bool> {
    let sample = r#"crucible_sandbox_verified{runtime_class="gvisor"} "#;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(sample))
        .map(|v| v.trim() == "1")
}

#[cfg(test)]
mod canary_tests {
    use super::canary_verified;

    #[test]
    fn the_gvisor_sample_says_whether_the_canary_verified() {
        let g = |v: &str| format!("crucible_sandbox_verified{{runtime_class=\"gvisor\"}} {v}\n");
        assert_eq!(canary_verified(&g("0")), Some(false));
        assert_eq!(canary_verified(&g("1")), Some(true));
        assert_eq!(canary_verified("crucible_reconcile_runs_total 3\n"), None);
    }
}
