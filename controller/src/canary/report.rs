//! The canary's probe: `crucible canary-probe`, run inside the canary pod from the controller's
//! own image (so an install needs no other image), prints one line `CRUCIBLE_CANARY {json}`
//! that [`super::verdict`] judges. Blocking standard-library I/O only (no async runtime, no API
//! client; serde_json writes the line): it must start in 128Mi as uid 65534 with a read-only root
//! and, usually, no network.
//!
//! The parsing of what it reads is pure and tested here; [`main`] does the reading.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix of the probe's one report line in its log.
pub const REPORT_PREFIX: &str = "CRUCIBLE_CANARY ";
/// Environment variable with the `host:port` targets the probe connects to, comma-separated.
pub const CONNECT_ENV: &str = "CRUCIBLE_CANARY_CONNECT";
/// Longest wait for one connect, and then for the greeting: a dropped SYN must not stall the
/// probe past the controller's bound on the run.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Most bytes read from one connection (the greeting is one short line).
const READ_MAX: u64 = 128;
/// Most bytes read of one `/proc` file (a few KiB in any sandbox).
const FILE_MAX: u64 = 1 << 20;
/// Most entries taken from `/sys/class/net` (a sandbox with more fails `interfaces` anyway).
const SYS_NET_MAX: usize = 64;
/// Where a service-account token would be mounted.
const TOKEN_PATHS: [&str; 2] = [
    "/var/run/secrets/kubernetes.io/serviceaccount/token",
    "/run/secrets/kubernetes.io/serviceaccount/token",
];

/// What the probe saw from inside the sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `/proc/version`.
    pub kernel: String,
    /// Network interfaces, sorted.
    pub interfaces: Vec<String>,
    /// Effective uid.
    pub uid: i64,
    /// Effective gid.
    pub gid: i64,
    /// Whether a service-account token is mounted.
    pub token: bool,
    /// Whether `/` is mounted read-only.
    pub root_read_only: bool,
    /// `CapEff` of `/proc/self/status` (hex), or `unknown`.
    pub cap_eff: String,
    /// One connect attempt per target.
    pub connect: BTreeMap<String, Attempt>,
}

/// One TCP connect the probe tried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The connect succeeded.
    pub connected: bool,
    /// Why the connect, or the read after it, failed.
    #[serde(default)]
    pub error: Option<String>,
    /// What the other end wrote first (at most 128 bytes, up to a newline).
    #[serde(default)]
    pub read: String,
}

/// The report line, as the controller finds it in the pod's log.
pub fn line(report: &Report) -> String {
    // A struct of strings, bools, integers and maps always serializes.
    let json = serde_json::to_string(report).unwrap_or_default();
    format!("{REPORT_PREFIX}{json}")
}

/// Whether the root filesystem is mounted read-only, from `/proc/self/mountinfo`: the last
/// mount on `/` (a later one hides an earlier) decides. Writing to `/` as uid 65534 fails with
/// EACCES either way, so only the mount flags tell.
pub fn root_read_only(mountinfo: &str) -> bool {
    mountinfo
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() > 5 && fields[4] == "/").then(|| fields[5])
        })
        .next_back()
        .is_some_and(|options| options.split(',').any(|o| o == "ro"))
}

/// `CapEff` of `/proc/self/status`, or `unknown` when it has none (the verdict then fails
/// `capabilities`).
pub fn cap_eff(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map_or_else(|| "unknown".into(), |v| v.trim().to_string())
}

/// Interface names of `/proc/net/dev` (two header lines, then `name: counters`).
pub fn net_dev_interfaces(net_dev: &str) -> Vec<String> {
    net_dev
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Every interface either view shows, sorted and once each. gVisor's sysfs has no
/// `/sys/class/net` (its netstack shows interfaces in `/proc/net/dev`); a kernel shows both.
pub fn interfaces(net_dev: Option<&str>, sys_class_net: &[String]) -> Vec<String> {
    let mut all: Vec<String> = net_dev
        .map(net_dev_interfaces)
        .unwrap_or_default()
        .into_iter()
        .chain(sys_class_net.iter().cloned())
        .collect();
    all.sort();
    all.dedup();
    all
}

/// The targets of [`CONNECT_ENV`].
pub fn targets(connect: &str) -> Vec<&str> {
    connect.split(',').filter(|t| !t.is_empty()).collect()
}

/// The error of an attempt, as `Kind: message`.
fn error_text(e: &std::io::Error) -> String {
    format!("{:?}: {e}", e.kind())
}

/// Connects to `target` (3 s), and reads what it writes first (3 s, one line, 128 bytes).
fn connect(target: &str) -> Attempt {
    let failed = |error: String| Attempt {
        connected: false,
        error: Some(error),
        read: String::new(),
    };
    let addr: SocketAddr = match target.parse() {
        Ok(addr) => addr,
        Err(e) => return failed(format!("not a host:port: {e}")),
    };
    let stream = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(stream) => stream,
        Err(e) => return failed(error_text(&e)),
    };
    // Connected: a read that fails after it still counts as reaching the target.
    let mut buf = Vec::new();
    let read = stream
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .and_then(|()| BufReader::new(stream.take(READ_MAX)).read_until(b'\n', &mut buf));
    Attempt {
        connected: true,
        error: read.err().map(|e| match e.kind() {
            // What a read timeout is on Linux (EAGAIN).
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("read: nothing within {CONNECT_TIMEOUT:?}")
            }
            _ => format!("read: {}", error_text(&e)),
        }),
        read: String::from_utf8_lossy(&buf).into_owned(),
    }
}

/// At most [`FILE_MAX`] bytes of a text file.
fn read_text(path: &str) -> Result<String, String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(FILE_MAX).read_to_string(&mut text))
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    Ok(text)
}

/// What the probe sees, or the first thing it could not read.
fn gather() -> Result<Report, String> {
    let kernel = read_text("/proc/version")?.trim().to_string();
    let net_dev = read_text("/proc/net/dev").ok();
    let sys_class_net: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .take(SYS_NET_MAX)
                .collect()
        })
        .unwrap_or_default();
    if net_dev.is_none() && sys_class_net.is_empty() {
        return Err(
            "cannot list network interfaces: neither /proc/net/dev nor /sys/class/net can be read"
                .into(),
        );
    }
    // The owner of /proc/self is the process's effective uid and gid.
    let me = std::fs::metadata("/proc/self").map_err(|e| format!("cannot stat /proc/self: {e}"))?;
    let connect_env = std::env::var(CONNECT_ENV).unwrap_or_default();
    Ok(Report {
        kernel,
        interfaces: interfaces(net_dev.as_deref(), &sys_class_net),
        uid: i64::from(me.uid()),
        gid: i64::from(me.gid()),
        token: TOKEN_PATHS.iter().any(|p| std::path::Path::new(p).exists()),
        root_read_only: root_read_only(&read_text("/proc/self/mountinfo")?),
        cap_eff: cap_eff(&read_text("/proc/self/status")?),
        connect: targets(&connect_env)
            .into_iter()
            .map(|t| (t.to_string(), connect(t)))
            .collect(),
    })
}

/// `crucible canary-probe`: prints the report line, or says on stderr what it could not read
/// and fails (the verdict then fails `output`, quoting the log's end).
pub fn main() -> ExitCode {
    match gather() {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{}", line(&report)).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("crucible canary-probe: cannot write the report: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(why) => {
            eprintln!("crucible canary-probe: {why}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gVisor's mountinfo of a canary pod: the root read-only, /tmp and /dev writable.
    const MOUNTINFO_RO: &str = "\
1 0 0:4 / / ro,relatime - 9p none rw,trans=fd,rfdno=4,wfdno=4
2 1 0:5 / /dev rw,noexec,relatime - devtmpfs none rw,mode=0755
3 1 0:6 / /proc rw,nosuid,nodev,noexec,relatime - proc none rw
4 1 0:7 / /tmp rw,relatime - tmpfs none rw,size=67108864
";

    #[test]
    fn the_root_is_read_only_only_when_its_last_mount_says_ro() {
        assert!(root_read_only(MOUNTINFO_RO));
        assert!(!root_read_only(
            &MOUNTINFO_RO.replace("/ / ro,relatime", "/ / rw,relatime")
        ));
        // A later mount on / hides the earlier one.
        let remounted = format!("{MOUNTINFO_RO}9 1 0:9 / / rw,relatime - overlay none rw\n");
        assert!(!root_read_only(&remounted));
        let back = format!("{remounted}10 9 0:10 / / rw,ro,noatime - overlay none rw\n");
        assert!(root_read_only(&back));
        // `ro` must be a whole option, and / the mount point (not the root within the fs).
        assert!(!root_read_only("1 0 0:4 / / rw,rootcontext - 9p none ro\n"));
        assert!(!root_read_only("1 0 0:4 / /data ro - 9p none ro\n"));
        assert!(!root_read_only(""));
    }

    #[test]
    fn cap_eff_is_read_from_status_or_unknown() {
        let status = "Name:\tcrucible\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
                      CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n";
        assert_eq!(cap_eff(status), "00000000a80425fb");
        assert_eq!(cap_eff("Name:\tcrucible\n"), "unknown");
    }

    #[test]
    fn interfaces_are_those_of_proc_net_dev_and_sys_class_net_sorted_once() {
        let net_dev = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
  eth0:     120       2    0    0    0     0          0         0      180       3    0    0    0     0       0          0
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
";
        assert_eq!(net_dev_interfaces(net_dev), ["eth0", "lo"]);
        assert_eq!(interfaces(Some(net_dev), &[]), ["eth0", "lo"]);
        assert_eq!(
            interfaces(Some(net_dev), &["lo".into(), "veth1".into()]),
            ["eth0", "lo", "veth1"]
        );
        assert_eq!(interfaces(None, &["lo".into()]), ["lo"]);
        assert!(interfaces(Some("Inter-|\n face |\n"), &[]).is_empty());
    }

    /// The line the probe prints is what the verdict reads: a healthy gVisor sandbox's report is
    /// verified, the same with a writable root is not; one line, whatever the kernel string.
    #[test]
    fn the_printed_line_is_what_the_verdict_reads() {
        use crate::canary::Verdict;
        use crate::canary::verdict::{Check, Expectation, GVISOR_VERSION, Observation, judge};
        use crate::crd::evaluation::NetworkMode;
        let listener = "10.88.0.1:40001";
        let report = Report {
            kernel: format!("Linux version 4.4.0 {GVISOR_VERSION}"),
            interfaces: vec!["lo".into()],
            uid: 65534,
            gid: 65534,
            token: false,
            root_read_only: true,
            cap_eff: "0000000000000000".into(),
            connect: BTreeMap::from([(listener.to_string(), connect("10.88.0.1:not-a-port"))]),
        };
        let expect = Expectation {
            network: NetworkMode::None,
            listener,
            unlisted: "10.88.0.1:40002",
            gateway: None,
            nonce: "0123",
            host_kernel: None,
        };
        let verdict = |r: &Report| {
            judge(
                &expect,
                &Observation::Ran {
                    log: format!("starting\n{}\n", line(r)),
                    exit_code: Some(0),
                },
            )
        };
        assert!(
            matches!(verdict(&report), Verdict::Verified(_)),
            "{:?}",
            verdict(&report)
        );
        let writable = Report {
            root_read_only: false,
            ..report.clone()
        };
        assert!(matches!(
            verdict(&writable),
            Verdict::Failed {
                check: Check::ReadOnlyRoot,
                ..
            }
        ));
        let odd = Report {
            kernel: "a\nb \"c\"".into(),
            ..report
        };
        assert!(!line(&odd).contains('\n') && line(&odd).starts_with(REPORT_PREFIX));
        let json: serde_json::Value =
            serde_json::from_str(&line(&odd)[REPORT_PREFIX.len()..]).expect("json");
        assert_eq!(json["kernel"], "a\nb \"c\"");
        assert_eq!(json["rootReadOnly"], true);
        assert_eq!(json["capEff"], "0000000000000000");
    }

    #[test]
    fn targets_are_the_non_empty_entries() {
        assert_eq!(
            targets("10.88.0.1:40001,,[fd00::1]:40002,"),
            ["10.88.0.1:40001", "[fd00::1]:40002"]
        );
        assert!(targets("").is_empty());
    }

    #[test]
    fn a_target_that_is_not_host_port_is_a_failed_attempt() {
        let attempt = connect("listener");
        assert!(!attempt.connected);
        assert!(
            attempt
                .error
                .is_some_and(|e| e.starts_with("not a host:port"))
        );
    }

    /// A listener on loopback: the probe connects, reads its one greeting line, and stops
    /// there although the connection stays open.
    #[test]
    fn a_connect_reads_the_greeting_line_and_does_not_wait_for_more() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.write_all(b"crucible-canary 0123\nmore")
                .expect("write");
            // Held open until the probe is done: only the newline ends its read.
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest);
        });
        let started = std::time::Instant::now();
        let attempt = connect(&addr);
        assert!(started.elapsed() < CONNECT_TIMEOUT, "waited for more");
        assert_eq!(
            attempt,
            Attempt {
                connected: true,
                error: None,
                read: "crucible-canary 0123\n".into(),
            }
        );
        server.join().expect("server");
    }

    #[test]
    fn a_refused_connect_says_why() {
        // Bound then dropped: nothing listens on this port any more.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("addr");
        let attempt = connect(&addr.to_string());
        assert!(!attempt.connected);
        assert!(
            attempt
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("ConnectionRefused")),
            "{attempt:?}"
        );
    }
}
