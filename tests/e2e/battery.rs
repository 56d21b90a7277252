//! The attack battery: one Evaluation per attack, all in one namespace at once, each held to
//! its exact outcome (phase, reason, and a proof from its result or log tail). The scripts
//! print every attempt with the errno it got and report a result whose metrics encode each
//! check (0 = the attempt succeeded, else its errno, -1 = no errno, e.g. a timeout).
//!
//! Network attacks target only listeners this test opens itself on the node's bridge address
//! 10.88.0.1; a runc pod of the test's own proves those listeners are reachable from the pod
//! network, so a failed attempt from the sandbox is the sandbox's doing. An `Allowlist` run
//! (NetworkPolicy, enforced by the cluster's policy engine) reaches its allowed port and not a
//! second one, which the control reaches.
//!
//! A summary table (scenario | expected | observed | proved) is printed at the end and written
//! to `target/tmp/attack-battery.txt` (scripts/test.sh prints it after the e2e tier).

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crucible::crd::evaluation::{EvaluationStatus, Phase};
use crucible::crd::{Evaluation, EvaluationQuota};
use crucible::labels::MANAGED_LABEL;
use crucible_e2e::{
    apply_evaluation, apply_typed, pods_of, quota_manifest, restricted_security_context,
    try_wait_for, wait_finished, watch_peak, with_temp_ns,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, LogParams, PostParams};
use kube::{Api, Client};

/// The node's own address on the pod bridge: the only host the network attacks may target.
const BRIDGE: &str = "10.88.0.1";
const IMAGE: &str = "localhost/crucible/python:3.11";
/// How long the whole battery may take to finish once applied.
const BATTERY_DEADLINE: Duration = Duration::from_secs(200);

/// Helpers every attack script starts with.
const PRELUDE: &str = r#"
import ctypes, errno, json, os, socket, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
checks = {}
def attempt(label, action):
    """Runs action; records 0 if it succeeded, else its errno (-1 when it has none)."""
    try:
        action()
        code = 0
    except OSError as e:
        code = e.errno if e.errno else -1
    checks[label] = code
    what = "succeeded" if code == 0 else "failed, errno %d %s" % (code, errno.errorcode.get(code, "-"))
    print("%s: %s" % (label, what), flush=True)
    return code
def libc_call(fn, *args):
    if fn(*args) == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
def report(**extra):
    checks.update(extra)
    print("CRUCIBLE_RESULT " + json.dumps({"score": 1, "metrics": checks}), flush=True)
"#;

/// TCP, UDP and DNS to the test's listeners. Also run by the runc control pod.
const EGRESS: &str = r#"
token = os.environ["TOKEN"]
host = os.environ["HOST"]
def tcp():
    s = socket.create_connection((host, int(os.environ["TCP_PORT"])), timeout=3)
    s.sendall((token + "-tcp").encode())
    s.recv(16)
    s.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto((token + "-udp").encode(), (host, int(os.environ["UDP_PORT"])))
    s.recvfrom(64)
def dns():
    qname = b"".join(bytes([len(l)]) + l.encode() for l in (token + ".battery.test").split("."))
    query = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + qname + b"\0" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(query, (host, int(os.environ["DNS_PORT"])))
    reply = s.recvfrom(512)[0]
    if reply[:2] != query[:2]:
        raise OSError(errno.EPROTO, "not an answer to the query")
def unlisted():
    s = socket.create_connection((host, int(os.environ["UNLISTED_PORT"])), timeout=3)
    s.sendall((token + "-unlisted").encode())
    s.recv(16)
    s.close()
attempt("tcp", tcp)
attempt("udp", udp)
attempt("dns", dns)
attempt("unlisted", unlisted)
interfaces = sorted(name for _, name in socket.if_nameindex())
print("interfaces:", interfaces)
report(interfaces=len(interfaces))
"#;

/// From an `Allowlist` sandbox whose only egress rule is the allowed port: that port, then the
/// unlisted one (same host). A policy engine may program a new pod's rules after it starts
/// (kube-router 2.1 does, cloudnativelabs/kube-router#873); the pod's network gate holds the
/// evaluation until they are in force. The script first measures how long the unlisted port
/// stays reachable (bounded; `unprotectedMs`, 0 when the first try is refused) and sends
/// `allowlist-early` meanwhile: anything but 0 and silence means the gate let it start early.
const ALLOWLIST: &str = r#"
def connect(port, payload, timeout=3):
    s = socket.create_connection((os.environ["HOST"], int(os.environ[port])), timeout=timeout)
    s.sendall(payload)
    s.recv(16)
    s.close()
start = time.monotonic()
unprotected = 0.0
while time.monotonic() - start < 30:
    try:
        connect("UNLISTED_PORT", b"allowlist-early")
    except OSError:
        break
    unprotected = time.monotonic() - start
    time.sleep(0.2)
print("unlisted port reachable for the first %.1f s" % unprotected, flush=True)
# The engine may also drop the allowed port's packets for a while as it reprograms the pod
# (seen with kube-router 2.1 under load): try it until it answers (bounded), and report how long
# it did not. A ptrace sandbox on a busy node can take seconds to connect: a timeout is no proof.
start = time.monotonic()
blocked = 0.0
while attempt("allowed", lambda: connect("ALLOWED_PORT", b"allowlist", 5)) != 0:
    blocked = time.monotonic() - start
    if blocked > 60:
        break
print("allowed port unreachable for the first %.1f s" % blocked, flush=True)
attempt("unlisted", lambda: connect("UNLISTED_PORT", b"allowlist", 15))
report(unprotectedMs=int(unprotected * 1000), allowedBlockedMs=int(blocked * 1000))
"#;

const WRITES: &str = r#"
for label, path in [("root", "/battery"), ("workspace", "/workspace/battery"),
                    ("etc", "/etc/battery"), ("tmp", "/tmp/battery")]:
    attempt(label, lambda p=path: open(p, "w").write("x"))
report()
"#;

const PRIVILEGE: &str = r#"
attempt("setuid", lambda: os.setuid(0))
attempt("setgid", lambda: os.setgid(0))
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
caps = {k: int(status[k].strip(), 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb") if k in status}
print("capabilities:", {k: hex(v) for k, v in caps.items()})
nnp = status.get("NoNewPrivs", "").strip()
no_new_privs = int(nnp) if nnp else libc.prctl(39, 0, 0, 0, 0)  # PR_GET_NO_NEW_PRIVS
print("no_new_privs:", no_new_privs)
# A setuid-root binary: sample the effective uid of the running child while su waits for a
# password on its (silent) stdin pipe.
setuid_binaries = sorted({os.path.realpath(os.path.join(d, f)) for d in ("/bin", "/usr/bin", "/sbin", "/usr/sbin")
                          if os.path.isdir(d) for f in os.listdir(d)
                          if os.path.isfile(os.path.join(d, f)) and os.stat(os.path.join(d, f)).st_mode & 0o4000
                          and os.stat(os.path.join(d, f)).st_uid == 0})
print("setuid-root binaries:", setuid_binaries)
import subprocess
euids = set()
su = next((b for b in setuid_binaries if b.endswith("/su")), None)
if su:
    child = subprocess.Popen([su, "-c", "id -u"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 2
    while time.time() < deadline and child.poll() is None:
        try:
            uid_line = [l for l in open("/proc/%d/status" % child.pid) if l.startswith("Uid:")][0]
            euids.add(int(uid_line.split()[2]))
        except (OSError, IndexError):
            pass
    child.kill()
    print("su:", child.communicate()[0].decode(errors="replace").strip(), "euids seen:", sorted(euids))
def mount():
    os.makedirs("/tmp/mnt", exist_ok=True)
    libc_call(libc.mount, b"none", b"/tmp/mnt", b"tmpfs", 0, None)
attempt("mount", mount)
def mount_in_new_namespace():
    # In a child, so that this process keeps its namespace.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            libc_call(libc.unshare, 0x00020000)  # CLONE_NEWNS
            print("unshare(CLONE_NEWNS): succeeded", flush=True)
            mount()
            code = 0
        except OSError as e:
            code = e.errno or -1
        os.write(w, str(code).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    code = int(os.read(r, 16))
    if code:
        raise OSError(code, os.strerror(code))
attempt("mountInNewNs", mount_in_new_namespace)
attempt("rawSocket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt("packetSocket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
def ptrace_parent():
    # The child attaches to its parent: another process of the same uid, not a descendant.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        target = os.getppid()
        code = 0 if libc.ptrace(16, target, None, None) == 0 else ctypes.get_errno()  # PTRACE_ATTACH
        if code == 0:
            os.waitpid(target, 0x40000000)  # __WALL
            libc.ptrace(17, target, None, None)  # PTRACE_DETACH
        os.write(w, str(code).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    code = int(os.read(r, 16))
    if code:
        raise OSError(code, os.strerror(code))
attempt("ptraceParent", ptrace_parent)
def ancestors(pid):
    chain = []
    while pid > 0 and pid not in chain:
        chain.append(pid)
        try:
            stat = open("/proc/%d/stat" % pid).read()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return chain
processes = [int(p) for p in os.listdir("/proc") if p.isdigit()]
foreign = [p for p in processes if os.getpid() not in ancestors(p)]
print("visible processes:", processes, "pid:", os.getpid(), "not ours:", foreign)
report(capEff=caps.get("CapEff", -1), capPrm=caps.get("CapPrm", -1), capBnd=caps.get("CapBnd", -1),
       noNewPrivs=no_new_privs, setuidBinaries=len(setuid_binaries),
       suMaxEuid=max(euids) if euids else -1, pid=os.getpid(), foreignProcesses=len(foreign))
"#;

/// Every process forks for ever; nobody ever reports.
const FORK_BOMB: &str = r#"
print("fork bomb starting", flush=True)
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
"#;

/// Touches 16 MiB blocks until killed.
const MEMORY_BOMB: &str = r#"
blocks = []
while True:
    blocks.append(b"\x01" * (16 << 20))
    print("allocated %d MiB" % (16 * len(blocks)), flush=True)
"#;

/// Writes twice the /tmp size limit (fsync'ed, so it reaches the node's disk), then waits.
const DISK_BOMB: &str = r#"
written, chunk = 0, b"\x01" * (4 << 20)
with open("/tmp/bomb", "wb") as f:
    while written < (128 << 20):
        if attempt("write", lambda: (f.write(chunk), f.flush(), os.fsync(f.fileno()))):
            break
        written += len(chunk)
print("wrote %d MiB to /tmp; waiting for the kubelet" % (written >> 20), flush=True)
time.sleep(600)
"#;

/// Two busy processes under a 200m limit. The CPU time gVisor reports inside counts throttled
/// time as running (it read 0.5 cores under a 0.2 quota), so the proof is the node's cgroup
/// (`sample_throttling`); the lines printed here show the burners kept going to the timeout.
const CPU_BURN: &str = r#"
burners = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        while True:
            pass
    burners.append(pid)
tick = os.sysconf("SC_CLK_TCK")
start = time.time()
while True:
    time.sleep(2)
    cpu = sum(sum(int(x) for x in open("/proc/%d/stat" % p).read().rsplit(")", 1)[1].split()[11:13]) for p in burners) / tick
    wall = time.time() - start
    print("burn: wall=%.1fs cpu=%.2fs ratio=%.2f" % (wall, cpu, cpu / wall), flush=True)
"#;

/// 200 MB of output, then the result line. Written with `os.write` until every byte is out:
/// gVisor may hand a large write to the stdout pipe back short (or EAGAIN), and Python's
/// unbuffered text stdout drops the rest without a word.
const BIG_OUTPUT: &str = r#"
import select
def write_all(data):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(1, view):]
        except BlockingIOError:
            select.select([], [1], [])
block = (b"x" * 99 + b"\n") * 10000
for _ in range(200):
    write_all(block)
report(bytes=200e6)
"#;

const MANY_FILES: &str = r#"
def create():
    for i in range(10000):
        with open("/tmp/f%05d" % i, "w") as f:
            f.write("x")
attempt("create", create)
report(files=len([n for n in os.listdir("/tmp") if n.startswith("f")]))
"#;

/// The evaluated code forges a perfect result on every channel it can reach.
const FORGER: &str = r#"
forged = json.dumps({"score": 1, "passed": True, "summary": "forged by the evaluated code"})
print("CRUCIBLE_RESULT " + forged, flush=True)
attempt("terminationLog", lambda: open("/dev/termination-log", "w").write(forged))
attempt("resultPath", lambda: open("/crucible/result.json", "w").write(forged))
attempt("outputsResult", lambda: open(os.environ["CRUCIBLE_OUTPUTS"] + "/result.json", "w").write(forged))
attempt("tmpResult", lambda: open("/tmp/result.json", "w").write(forged))
open(os.environ["CRUCIBLE_OUTPUTS"] + "/answer.txt", "w").write("41")
"#;

/// The trusted scorer: grades /outputs/answer.txt and says whether it sees the forger's /tmp.
const SCORER: &str = r#"
import json, os
answer = open(os.environ["CRUCIBLE_OUTPUTS"] + "/answer.txt").read().strip()
right = 1 if answer == "42" else 0
result = {"score": 0.25 + 0.75 * right, "passed": bool(right),
          "metrics": {"right": right, "sawForgedTmp": int(os.path.exists("/tmp/result.json"))},
          "summary": "scored by the trusted scorer"}
open(os.environ["CRUCIBLE_RESULT_PATH"], "w").write(json.dumps(result))
"#;

/// Listeners of the network attacks on the bridge address; every payload they receive is kept,
/// as `PROTO:payload` (`allowed` and `unlisted` are the two TCP ports of the Allowlist case).
struct Listeners {
    tcp: u16,
    allowed: u16,
    unlisted: u16,
    udp: u16,
    dns: u16,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Listeners {
    fn open() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let udp = UdpSocket::bind((BRIDGE, 0)).expect("bind UDP on the bridge address");
        let dns = UdpSocket::bind((BRIDGE, 0)).expect("bind DNS on the bridge address");
        let port = |a: std::io::Result<std::net::SocketAddr>| a.expect("local address").port();
        let listeners = Listeners {
            tcp: serve_tcp("tcp", &seen, &stop),
            allowed: serve_tcp("allowed", &seen, &stop),
            unlisted: serve_tcp("unlisted", &seen, &stop),
            udp: port(udp.local_addr()),
            dns: port(dns.local_addr()),
            seen: seen.clone(),
            stop: stop.clone(),
        };
        for (proto, socket) in [("udp", udp), ("dns", dns)] {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    record(&seen, proto, &buf[..n]);
                    // Echo; for DNS the echo with the QR bit set is a valid empty answer.
                    let mut reply = buf[..n].to_vec();
                    if proto == "dns" && reply.len() > 2 {
                        reply[2] |= 0x80;
                    }
                    let _ = socket.send_to(&reply, peer);
                }
            });
        }
        listeners
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A TCP listener on the bridge address that records what each connection sends and answers
/// "ok"; returns its port.
fn serve_tcp(proto: &'static str, seen: &Arc<Mutex<Vec<String>>>, stop: &Arc<AtomicBool>) -> u16 {
    let tcp = TcpListener::bind((BRIDGE, 0)).expect("bind TCP on the bridge address");
    tcp.set_nonblocking(true).expect("nonblocking");
    let port = tcp.local_addr().expect("local address").port();
    let (seen, stop) = (seen.clone(), stop.clone());
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((mut conn, _)) = tcp.accept() else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let mut buf = [0u8; 64];
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
            let n = conn.read(&mut buf).unwrap_or(0);
            record(&seen, proto, &buf[..n]);
            let _ = conn.write_all(b"ok");
        }
    });
    port
}

fn record(seen: &Mutex<Vec<String>>, proto: &str, payload: &[u8]) {
    let text: String = String::from_utf8_lossy(payload)
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '.' })
        .collect();
    if let Ok(mut s) = seen.lock() {
        s.push(format!("{proto}:{text}"));
    }
}

/// An Evaluation running `script` (after the prelude) from /workspace/attack.py; `spec` is
/// merged over the defaults (100m CPU, 128Mi, 1 minute).
fn attack(name: &str, script: &str, spec: serde_json::Value) -> Evaluation {
    let mut body = serde_json::json!({
        "apiVersion": "crucible.dev/v1alpha1", "kind": "Evaluation",
        "metadata": {"name": name},
        "spec": {
            "image": IMAGE,
            "command": ["python3", "-u", "/workspace/attack.py"],
            "source": {"inline": {"files": {"attack.py": format!("{PRELUDE}{script}")}}},
            "resources": {"cpu": "100m", "memory": "128Mi"},
            "timeout": "1m",
        }
    });
    if let (Some(base), Some(extra)) = (body["spec"].as_object_mut(), spec.as_object()) {
        base.extend(extra.clone());
    }
    serde_json::from_value(body).expect("attack manifest is an Evaluation")
}

fn egress_env(l: &Listeners, token: &str) -> serde_json::Value {
    serde_json::json!([
        {"name": "TOKEN", "value": token}, {"name": "HOST", "value": BRIDGE},
        {"name": "TCP_PORT", "value": l.tcp.to_string()},
        {"name": "UDP_PORT", "value": l.udp.to_string()},
        {"name": "DNS_PORT", "value": l.dns.to_string()},
        {"name": "ALLOWED_PORT", "value": l.allowed.to_string()},
        {"name": "UNLISTED_PORT", "value": l.unlisted.to_string()},
    ])
}

/// A check of one finished Evaluation: what it proved, or why the proof failed.
type Verdict = Result<String, String>;

struct Scenario {
    evaluation: Evaluation,
    expected: &'static str,
    verify: Box<dyn Fn(&EvaluationStatus) -> Verdict + Send + Sync>,
}

struct Row {
    scenario: String,
    expected: &'static str,
    observed: String,
    proved: Verdict,
}

fn metric(status: &EvaluationStatus, name: &str) -> Result<f64, String> {
    status
        .result
        .as_ref()
        .and_then(|r| r.metrics.get(name).copied())
        .ok_or_else(|| format!("no metric {name} in {:?}", status.result))
}

/// Every named check failed (non-zero errno); returns "name errno …" for the table.
fn all_failed(status: &EvaluationStatus, names: &[&str]) -> Verdict {
    let mut proof = Vec::new();
    for name in names {
        let code = metric(status, name)?;
        if code == 0.0 {
            return Err(format!("{name} succeeded"));
        }
        proof.push(format!("{name} errno {code}"));
    }
    Ok(proof.join(", "))
}

fn phase_reason(status: &EvaluationStatus, phase: Phase, reason: &str) -> Result<(), String> {
    let seen = (status.phase, status.reason.as_deref());
    if seen == (Some(phase), Some(reason)) {
        Ok(())
    } else {
        Err(format!(
            "expected {}/{reason}, got {seen:?}: {:?}",
            phase.as_str(),
            status.message
        ))
    }
}

fn tail(status: &EvaluationStatus) -> &str {
    status.log_tail.as_deref().unwrap_or_default()
}

fn observed(status: &EvaluationStatus) -> String {
    let phase = status.phase.map(Phase::as_str).unwrap_or("-");
    let reason = status.reason.as_deref().unwrap_or("-");
    match status.exit_code {
        Some(code) => format!("{phase}/{reason} (exit {code})"),
        None => format!("{phase}/{reason}"),
    }
}

/// What the node's cgroup says about the cpu-burn pod, filled in while it runs.
type Sample = Arc<Mutex<Option<Verdict>>>;

fn scenarios(l: &Listeners, cpu_sample: Sample) -> Vec<Scenario> {
    let succeeded = |status: &EvaluationStatus| phase_reason(status, Phase::Succeeded, "Passed");
    let seen = l.seen.clone();
    vec![
        Scenario {
            evaluation: attack(
                "egress",
                EGRESS,
                serde_json::json!({"env": egress_env(l, "sandbox")}),
            ),
            expected: "Succeeded; TCP, UDP, DNS to 10.88.0.1 fail; only lo",
            verify: Box::new(move |s| {
                succeeded(s)?;
                let proof = all_failed(s, &["tcp", "udp", "dns", "unlisted"])?;
                match metric(s, "interfaces")? {
                    1.0 => Ok(format!("{proof}; interfaces: lo only")),
                    n => Err(format!("{n} interfaces: {}", tail(s))),
                }
            }),
        },
        Scenario {
            evaluation: attack(
                "allowlist",
                ALLOWLIST,
                serde_json::json!({
                    "env": egress_env(l, "allowlist"),
                    // Room for both of the engine's windows (30 s + 60 s bounds) and the checks.
                    "timeout": "3m",
                    "sandbox": {"network": "Allowlist",
                                "egress": [{"cidr": format!("{BRIDGE}/32"), "ports": [l.allowed]}]},
                }),
            ),
            expected: "Succeeded; the allowlisted port answers, a second port of the same host does not",
            verify: Box::new(move |s| {
                succeeded(s)?;
                let allowed = metric(s, "allowed")?;
                if allowed != 0.0 {
                    return Err(format!("the allowed port did not answer (errno {allowed})"));
                }
                let received = seen.lock().map(|v| v.clone()).unwrap_or_default();
                if !received.iter().any(|r| r == "allowed:allowlist") {
                    return Err(format!(
                        "the allowed listener saw no connection: {received:?}"
                    ));
                }
                if received.iter().any(|r| r.starts_with("unlisted:allowlist")) {
                    return Err(format!(
                        "the unlisted port was reached from the sandbox: {received:?}"
                    ));
                }
                let early = metric(s, "unprotectedMs")?;
                if early != 0.0 {
                    return Err(format!(
                        "the unlisted port was reachable for the first {early} ms: the network gate let the evaluation start before its policy was in force"
                    ));
                }
                let proof = all_failed(s, &["unlisted"])?;
                let proof = match metric(s, "allowedBlockedMs")? {
                    0.0 => proof,
                    ms => format!("{proof}; the allowed port answered only after {ms} ms"),
                };
                Ok(format!(
                    "allowed port answered; {proof}; isolated from the first try (the network gate waited for the policy)"
                ))
            }),
        },
        Scenario {
            evaluation: attack("writes", WRITES, serde_json::json!({})),
            expected: "Succeeded; writes to /, /workspace, /etc fail, /tmp works",
            verify: Box::new(move |s| {
                succeeded(s)?;
                let proof = all_failed(s, &["root", "workspace", "etc"])?;
                match metric(s, "tmp")? {
                    0.0 => Ok(format!("{proof}; /tmp writable")),
                    e => Err(format!(
                        "/tmp not writable (errno {e}): the negatives prove nothing"
                    )),
                }
            }),
        },
        Scenario {
            evaluation: attack("privilege", PRIVILEGE, serde_json::json!({})),
            expected: "Succeeded; setuid, caps, mount, raw sockets, ptrace all denied",
            verify: Box::new(move |s| {
                succeeded(s)?;
                let proof = all_failed(
                    s,
                    &[
                        "setuid",
                        "setgid",
                        "mount",
                        "mountInNewNs",
                        "rawSocket",
                        "packetSocket",
                        "ptraceParent",
                    ],
                )?;
                for (name, want) in [
                    ("capEff", 0.0),
                    ("capPrm", 0.0),
                    ("capBnd", 0.0),
                    ("noNewPrivs", 1.0),
                    ("pid", 1.0),
                    ("foreignProcesses", 0.0),
                ] {
                    let got = metric(s, name)?;
                    if got != want {
                        return Err(format!("{name} = {got}, expected {want}: {}", tail(s)));
                    }
                }
                let su = metric(s, "suMaxEuid")?;
                if su == 0.0 {
                    return Err(format!("a setuid binary ran as root: {}", tail(s)));
                }
                Ok(format!(
                    "{proof}; CapEff=CapPrm=CapBnd=0 NoNewPrivs=1; setuid su ran with euid {su}; PID 1, no process outside its own tree"
                ))
            }),
        },
        Scenario {
            evaluation: attack(
                "fork-bomb",
                FORK_BOMB,
                serde_json::json!({"timeout": "45s", "resources": {"cpu": "200m", "memory": "128Mi"}}),
            ),
            expected: "Failed/OOMKilled before its 45 s timeout; node fine",
            verify: Box::new(move |s| {
                // The local kubelet sets no pod PID limit: the 128Mi memory limit contains it.
                phase_reason(s, Phase::Failed, "OOMKilled")?;
                let took = s.duration.as_deref().unwrap_or("?");
                Ok(format!(
                    "contained by the memory limit after {took}; the node stays Ready (last row)"
                ))
            }),
        },
        Scenario {
            evaluation: attack("memory-bomb", MEMORY_BOMB, serde_json::json!({})),
            expected: "Failed/OOMKilled",
            verify: Box::new(move |s| {
                phase_reason(s, Phase::Failed, "OOMKilled")?;
                let last = tail(s)
                    .lines()
                    .rev()
                    .find(|l| l.starts_with("allocated"))
                    .unwrap_or("none");
                Ok(format!("killed at the 128Mi limit; last line: {last}"))
            }),
        },
        Scenario {
            evaluation: attack(
                "disk-bomb",
                DISK_BOMB,
                serde_json::json!({"timeout": "90s", "resources": {"cpu": "100m", "memory": "128Mi", "ephemeralStorage": "512Mi"}}),
            ),
            expected: "Failed/Evicted, the kubelet's message kept",
            verify: Box::new(move |s| {
                phase_reason(s, Phase::Failed, "Evicted")?;
                let message = s.message.clone().unwrap_or_default();
                if !message.contains("tmp") {
                    return Err(format!("message does not name the /tmp volume: {message}"));
                }
                Ok(message)
            }),
        },
        Scenario {
            evaluation: attack(
                "cpu-burn",
                CPU_BURN,
                serde_json::json!({"timeout": "20s", "resources": {"cpu": "200m", "memory": "128Mi"}}),
            ),
            expected: "TimedOut; 2 burners throttled to the 200m limit",
            verify: Box::new(move |s| {
                phase_reason(s, Phase::TimedOut, "DeadlineExceeded")?;
                if !tail(s).contains("burn:") {
                    return Err(format!("the burners never reported: {}", tail(s)));
                }
                cpu_sample
                    .lock()
                    .map_err(|_| "sample lock poisoned".to_string())?
                    .clone()
                    .unwrap_or_else(|| Err("the node's cgroup was never sampled".into()))
            }),
        },
        Scenario {
            evaluation: attack(
                "big-output",
                BIG_OUTPUT,
                serde_json::json!({"timeout": "2m", "resources": {"cpu": "250m", "memory": "128Mi"}}),
            ),
            expected: "Succeeded; result after 200 MB of output kept",
            verify: Box::new(move |s| {
                succeeded(s)?;
                match metric(s, "bytes")? {
                    2e8 => Ok("result line found after 200 MB".into()),
                    b => Err(format!("bytes metric {b}")),
                }
            }),
        },
        Scenario {
            evaluation: attack(
                "many-files",
                MANY_FILES,
                serde_json::json!({"resources": {"cpu": "250m", "memory": "128Mi"}}),
            ),
            expected: "Succeeded; 10,000 files in /tmp",
            verify: Box::new(move |s| {
                succeeded(s)?;
                match metric(s, "files")? {
                    10000.0 => Ok("10000 files created and listed".into()),
                    n => Err(format!("{n} files: {}", tail(s))),
                }
            }),
        },
        Scenario {
            evaluation: attack(
                "forged-result",
                FORGER,
                serde_json::json!({
                    "scorer": {"image": IMAGE, "command": ["python3", "/workspace/score.py"]},
                    "source": {"inline": {"files": {
                        "attack.py": format!("{PRELUDE}{FORGER}"), "score.py": SCORER}}},
                }),
            ),
            expected: "Succeeded/NotPassed; the scorer's 0.25 wins over the forged 1",
            verify: Box::new(move |s| {
                phase_reason(s, Phase::Succeeded, "NotPassed")?;
                let result = s.result.as_ref().ok_or("no result")?;
                if result.score != 0.25
                    || result.summary.as_deref() != Some("scored by the trusted scorer")
                {
                    return Err(format!("not the scorer's result: {result:?}"));
                }
                match metric(s, "sawForgedTmp")? {
                    0.0 => Ok("score 0.25 from the scorer; forged stdout, termination log and /outputs ignored; scorer's /tmp is its own".into()),
                    _ => Err("the scorer saw the evaluated code's /tmp/result.json (shared /tmp)".into()),
                }
            }),
        },
    ]
}

/// Waits for `name` to finish, as a value instead of a panic so that one stuck scenario does
/// not hide the others' rows.
async fn finished(
    api: &Api<Evaluation>,
    name: &str,
    timeout: Duration,
) -> Result<EvaluationStatus, String> {
    let done = |e: &Evaluation| {
        e.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(Phase::is_finished)
    };
    match try_wait_for(api, name, timeout, done).await {
        Ok(ev) => ev.status.ok_or_else(|| "no status".into()),
        Err(last) => Err(format!(
            "not finished in time; last status: {:?}",
            last.and_then(|e| e.status)
        )),
    }
}

/// Samples the cpu-burn pod's CPU cgroup on the node (cgroup v1, `kubepods/pod<uid>`, as the
/// local cluster's kubelet lays it out) over a few seconds of its run: some periods must be
/// throttled and the usage must stay within the quota.
async fn sample_throttling(client: Client, ns: String, name: &str) -> Verdict {
    let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
    let running = |e: &Evaluation| e.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running);
    let pod_name = try_wait_for(&api, name, Duration::from_secs(90), running)
        .await
        .map_err(|_| "the cpu-burn run was never seen running".to_string())?
        .status
        .and_then(|s| s.pod_name)
        .unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let uid = pods
        .get(&pod_name)
        .await
        .map_err(|e| format!("pod {pod_name}: {e}"))?
        .metadata
        .uid
        .unwrap_or_default();
    let cpu = format!("/sys/fs/cgroup/cpu/kubepods/pod{uid}");
    let acct = format!("/sys/fs/cgroup/cpuacct/kubepods/pod{uid}/cpuacct.usage");
    let read = |path: &str| std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"));
    let stat = |key: &str| -> Result<u64, String> {
        let text = read(&format!("{cpu}/cpu.stat"))?;
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(str::trim))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {key} in {cpu}/cpu.stat"))
    };
    let number = |path: &str| -> Result<f64, String> {
        read(path)?
            .trim()
            .parse::<f64>()
            .map_err(|e| format!("{path}: {e}"))
    };
    let quota =
        number(&format!("{cpu}/cpu.cfs_quota_us"))? / number(&format!("{cpu}/cpu.cfs_period_us"))?;
    let (periods0, throttled0) = (stat("nr_periods ")?, stat("nr_throttled ")?);
    let (usage0, t0) = (number(&acct)?, Instant::now());
    // A measuring window, not a wait for a condition.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let periods = stat("nr_periods ")? - periods0;
    let throttled = stat("nr_throttled ")? - throttled0;
    let cores = (number(&acct)? - usage0) / 1e9 / t0.elapsed().as_secs_f64();
    let proof = format!(
        "node cgroup: quota {quota:.2} cores, used {cores:.2}, {throttled} of {periods} periods throttled"
    );
    if throttled == 0 || cores > quota * 1.1 + 0.02 {
        return Err(format!("not held to the limit: {proof}"));
    }
    Ok(proof)
}

/// The runc control: the same egress script from an ordinary pod must reach all three listeners.
async fn control_pod(client: &Client, ns: &str, l: &Listeners) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "egress-control"},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "control", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-u", "-c", format!("{PRELUDE}{EGRESS}")],
                "env": egress_env(l, "control"),
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}},
                "securityContext": restricted_security_context()
            }]
        }
    }))
    .expect("control pod manifest");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create control pod");
    pod
}

async fn control_row(client: &Client, ns: &str, l: &Listeners) -> Row {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let done = try_wait_for(
        &pods,
        "egress-control",
        Duration::from_secs(120),
        |p: &Pod| {
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        },
    )
    .await;
    let phase = match done {
        Ok(pod) => pod.status.and_then(|s| s.phase).unwrap_or_default(),
        Err(_) => "not finished".into(),
    };
    let log = pods
        .logs("egress-control", &LogParams::default())
        .await
        .unwrap_or_default();
    let result = log
        .lines()
        .find_map(|l| l.strip_prefix("CRUCIBLE_RESULT "))
        .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok());
    let seen = l.seen();
    let reached = ["tcp", "udp", "dns", "unlisted"]
        .into_iter()
        .all(|p| result.as_ref().is_some_and(|r| r["metrics"][p] == 0));
    let proved = if !reached {
        Err(format!(
            "the control pod did not reach every listener: {log}"
        ))
    } else if let Some(leak) = seen
        .iter()
        // the Allowlist scenario's own connections are judged by its row
        .find(|s| !s.contains("control") && !s.contains(":allowlist"))
    {
        Err(format!(
            "a listener received something not from the control pod: {leak}"
        ))
    } else {
        let own: Vec<&str> = seen
            .iter()
            .filter(|s| !s.contains(":allowlist"))
            .map(String::as_str)
            .collect();
        Ok(format!("listeners received only: {}", own.join(" ")))
    };
    Row {
        scenario: "egress control (runc pod)".into(),
        expected: "reaches the TCP, UDP, DNS and unlisted listeners; they see nothing else",
        observed: format!("pod {phase}"),
        proved,
    }
}

/// After the battery: the node is Ready and an ordinary evaluation succeeds.
async fn aftermath(client: &Client, ns: &str) -> Row {
    let api: Api<Evaluation> = Api::namespaced(client.clone(), ns);
    let ordinary = attack("ordinary", "report()\n", serde_json::json!({}));
    apply_evaluation(client, ns, &ordinary).await;
    let status = finished(&api, "ordinary", Duration::from_secs(90)).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let ready = nodes
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items.iter().all(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
        })
        .unwrap_or(false);
    let (observed_text, proved) = match status {
        Ok(s) => (
            observed(&s),
            phase_reason(&s, Phase::Succeeded, "Passed").and_then(|()| {
                if ready {
                    Ok("controller and node healthy after the battery".to_string())
                } else {
                    Err("a node is not Ready".into())
                }
            }),
        ),
        Err(e) => ("-".into(), Err(e)),
    };
    Row {
        scenario: "ordinary evaluation after".into(),
        expected: "Succeeded/Passed; node Ready",
        observed: observed_text,
        proved,
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "\nattack battery\n| scenario | expected | observed | proved |\n|---|---|---|---|\n",
    );
    for r in rows {
        let proved = match &r.proved {
            Ok(p) => format!("yes: {p}"),
            Err(e) => format!("NO: {e}"),
        };
        let cell = |s: &str| s.replace('|', "/").replace('\n', " ");
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            cell(&r.scenario),
            cell(r.expected),
            cell(&r.observed),
            cell(&proved)
        ));
    }
    out
}

#[tokio::test]
async fn every_attack_ends_as_expected_and_the_controller_stays_healthy() {
    with_temp_ns("battery", |client, ns| async move {
        // Room for every scenario at once (the default namespace cap is 10).
        apply_typed::<EvaluationQuota>(
            &client,
            &ns,
            &quota_manifest("battery", serde_json::json!({"maxRunning": 20})),
        )
        .await;
        let listeners = Listeners::open();
        control_pod(&client, &ns, &listeners).await;
        let cpu_sample: Sample = Arc::default();
        let scenarios = scenarios(&listeners, cpu_sample.clone());
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        for s in &scenarios {
            apply_evaluation(&client, &ns, &s.evaluation).await;
        }
        let sampler = tokio::spawn(sample_throttling(client.clone(), ns.clone(), "cpu-burn"));
        let statuses = futures::future::join_all(scenarios.iter().map(|s| {
            let name = s.evaluation.metadata.name.clone().unwrap_or_default();
            let api = api.clone();
            async move { finished(&api, &name, BATTERY_DEADLINE).await }
        }))
        .await;
        let sample = sampler
            .await
            .unwrap_or_else(|e| Err(format!("sampler: {e}")));
        if let Ok(mut slot) = cpu_sample.lock() {
            *slot = Some(sample);
        }
        let mut rows: Vec<Row> = scenarios
            .iter()
            .zip(statuses)
            .map(|(s, status)| Row {
                scenario: s.evaluation.metadata.name.clone().unwrap_or_default(),
                expected: s.expected,
                observed: status.as_ref().map(observed).unwrap_or_else(|_| "-".into()),
                proved: status.and_then(|st| (s.verify)(&st)),
            })
            .collect();
        rows.insert(1, control_row(&client, &ns, &listeners).await);
        rows.push(aftermath(&client, &ns).await);
        let summary = table(&rows);
        eprintln!("{summary}");
        let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("attack-battery.txt");
        let _ = std::fs::write(&file, &summary);
        let failed: Vec<_> = rows
            .iter()
            .filter(|r| r.proved.is_err())
            .map(|r| r.scenario.as_str())
            .collect();
        assert!(
            failed.is_empty(),
            "scenarios not proved: {failed:?}{summary}"
        );
    })
    .await;
}

/// A GPU Evaluation on a cluster without GPUs and without the nvproxy RuntimeClass fails
/// closed: `SandboxUnavailable` naming the class, and no pod was ever created.
#[tokio::test]
async fn gpu_evaluation_without_the_nvproxy_class_fails_closed() {
    with_temp_ns("gpu", |client, ns| async move {
        let classes: Api<k8s_openapi::api::node::v1::RuntimeClass> = Api::all(client.clone());
        assert!(
            classes
                .get_opt("gvisor-nvproxy")
                .await
                .expect("API")
                .is_none(),
            "this case needs a cluster without the gvisor-nvproxy RuntimeClass"
        );
        let (peak, done) = watch_peak(client.clone(), &ns, &format!("{MANAGED_LABEL}=true"));
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let gpu = attack(
            "gpu",
            "report()\n",
            serde_json::json!({"resources": {"cpu": "100m", "memory": "128Mi", "gpu": 1}}),
        );
        let applied = apply_evaluation(&client, &ns, &gpu).await;
        let finished = wait_finished(&api, "gpu", Duration::from_secs(60)).await;
        let status = finished.status.clone().expect("status");
        assert_eq!(
            (status.phase, status.reason.as_deref()),
            (Some(Phase::Failed), Some("SandboxUnavailable"))
        );
        let message = status.message.clone().unwrap_or_default();
        assert!(message.contains("gvisor-nvproxy"), "{message}");
        assert!(
            status.sandbox.is_none_or(|s| s.sandboxed),
            "never unsandboxed"
        );
        assert!(
            pods_of(&client, &ns, &applied).await.is_empty(),
            "no pod exists"
        );
        done.store(true, Ordering::SeqCst);
        assert_eq!(peak.load(Ordering::SeqCst), 0, "no pod was ever created");
    })
    .await;
}
