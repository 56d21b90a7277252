//! The local cluster's state directory (infrastructure/local: `$LAB`) and its processes: the
//! kubeconfig, reading a process's memory and CPU from /proc, and restarting
//! kube-controller-manager with extra flags and back the way `cluster.sh` starts it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Error, io_err, say};

/// Clock ticks per second of /proc/PID/stat times (USER_HZ: 100 on every Linux ABI).
const TICKS_PER_SECOND: u64 = 100;
/// How long a daemon gets to exit on SIGTERM before SIGKILL (cluster.sh waits as long).
const STOP_GRACE: Duration = Duration::from_secs(20);

/// `$LAB`: where `cluster.sh` keeps the kubeconfig, PID files and logs.
#[derive(Clone, Debug)]
pub struct Lab {
    pub root: PathBuf,
}

impl Lab {
    /// The admin kubeconfig (client certificate of system:masters).
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, Error> {
    status_kib(pid, "VmRSS:")
}

/// VmHWM (peak VmRSS since the start or the last [`reset_hwm`]) of a process in KiB.
pub fn hwm_kib(pid: u32) -> Result<u64, Error> {
    status_kib(pid, "VmHWM:")
}

/// Resets a process's VmHWM to its VmRSS now (`clear_refs` value 5, Linux 4.0 and later).
pub fn reset_hwm(pid: u32) -> Result<(), Error> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").map_err(io_err(&path))
}

fn status_kib(pid: u32, field: &str) -> Result<u64, Error> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    status_field(&text, field).ok_or_else(|| Error::Setup(format!("{path} has no {field} line")))
}

/// CPU time (user + system, all threads) a process has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration, Error> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let ticks = cpu_ticks(&text).ok_or_else(|| Error::Setup(format!("{path} is unreadable")))?;
    Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

fn status_field(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The fields after `comm` (which may hold spaces and parentheses) of /proc/PID/stat, from
/// field 3 (state) on.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat.rsplit_once(')')?.1.split_whitespace().collect())
}

fn cpu_ticks(stat: &str) -> Option<u64> {
    let fields = stat_fields(stat)?;
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the state.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Whether `pid` has exited (gone, or a zombie nobody has reaped yet).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_fields(&stat).is_none_or(|f| f.first() == Some(&"Z")),
        Err(_) => true,
    }
}

fn split_nul(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// How a process was started, read from /proc: to start it again the same way.
#[derive(Clone, Debug, PartialEq)]
struct Invocation {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

impl Invocation {
    fn of(pid: u32) -> Result<Invocation, Error> {
        let read = |what: &str| {
            let path = format!("/proc/{pid}/{what}");
            std::fs::read(&path).map_err(io_err(&path))
        };
        let env = split_nul(&read("environ")?)
            .into_iter()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.into(), v.into())))
            .collect();
        let cwd_path = format!("/proc/{pid}/cwd");
        Ok(Invocation {
            argv: split_nul(&read("cmdline")?),
            env,
            cwd: std::fs::read_link(&cwd_path).map_err(io_err(&cwd_path))?,
        })
    }
}

fn argv_of(pid: u32) -> Option<Vec<String>> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| split_nul(&b))
}

/// kube-controller-manager of the local cluster, restartable with extra flags. Remembers its
/// original invocation; [`ControllerManager::restore`] starts exactly that again.
#[derive(Debug)]
pub struct ControllerManager {
    pid_file: PathBuf,
    log: PathBuf,
    original: Invocation,
    /// The running process, `None` between stop and start.
    pid: Option<u32>,
    /// Runs with flags the original did not have.
    modified: bool,
}

const KCM: &str = "kube-controller-manager";
/// The flags [`ControllerManager::restart_with`] adds; refused in the original (a leftover of
/// an interrupted run would otherwise become the "original").
const CLIENT_FLAGS: [&str; 2] = ["--kube-api-qps", "--kube-api-burst"];

impl ControllerManager {
    /// The running kube-controller-manager of `lab`, by its PID file, checked like
    /// `cluster.sh` does (argv\[0\] is the binary, the command line names `$LAB`).
    pub fn find(lab: &Lab) -> Result<ControllerManager, Error> {
        let pid_file = lab.root.join("run").join(format!("{KCM}.pid"));
        let text = std::fs::read_to_string(&pid_file).map_err(io_err(&pid_file))?;
        let pid: u32 = text
            .trim()
            .parse()
            .map_err(|_| Error::Setup(format!("{}: not a PID: {text:?}", pid_file.display())))?;
        let original = Invocation::of(pid)?;
        let lab_root = lab.root.display().to_string();
        let ours = original
            .argv
            .first()
            .is_some_and(|a| a.ends_with(&format!("/{KCM}")))
            && original.argv.iter().any(|a| a.contains(&lab_root));
        if !ours {
            return Err(Error::Setup(format!(
                "PID {pid} of {} is not the cluster's {KCM}: {:?}",
                pid_file.display(),
                original.argv
            )));
        }
        if original
            .argv
            .iter()
            .any(|a| CLIENT_FLAGS.iter().any(|f| a.starts_with(f)))
        {
            return Err(Error::Setup(format!(
                "{KCM} (PID {pid}) already runs with {}, probably left by an interrupted \
                 benchmark; restart it as cluster.sh does (kill {pid}; cluster.sh up)",
                CLIENT_FLAGS.join("/")
            )));
        }
        Ok(ControllerManager {
            pid_file,
            log: lab.root.join("logs").join(format!("{KCM}.log")),
            original,
            pid: Some(pid),
            modified: false,
        })
    }

    /// Restarts with `--kube-api-qps=QPS --kube-api-burst=BURST` after the original flags.
    pub async fn restart_with(&mut self, qps: u32, burst: u32) -> Result<(), Error> {
        let mut argv = self.original.argv.clone();
        argv.push(format!("{}={qps}", CLIENT_FLAGS[0]));
        argv.push(format!("{}={burst}", CLIENT_FLAGS[1]));
        self.stop().await?;
        self.modified = true;
        self.start(&argv).await
    }

    /// Back to the original invocation, if it is not what runs now.
    pub async fn restore(&mut self) -> Result<(), Error> {
        if !self.modified && self.pid.is_some() {
            return Ok(());
        }
        self.stop().await?;
        let argv = self.original.argv.clone();
        self.start(&argv).await?;
        self.modified = false;
        Ok(())
    }

    /// Whether the running process has the original command line (read from /proc).
    pub fn is_original(&self) -> bool {
        self.pid
            .is_some_and(|pid| !exited(pid) && argv_of(pid) == Some(self.original.argv.clone()))
    }

    /// The PID of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    async fn stop(&mut self) -> Result<(), Error> {
        let Some(pid) = self.pid else { return Ok(()) };
        terminate(pid, STOP_GRACE).await?;
        self.pid = None;
        Ok(())
    }

    /// Starts `argv` as `cluster.sh` does: `setsid`, output appended to the daemon's log, the
    /// PID recorded in its PID file (so `cluster.sh down` stops it). Started from a shell that
    /// exits at once, so the daemon is not this process's child and outlives it, and holds none
    /// of this process's descriptors (under `flock LOCK crucible-bench`, it would hold the lock).
    async fn start(&mut self, argv: &[String]) -> Result<(), Error> {
        let out = bash(r#"log=$1; shift; /usr/bin/setsid "$@" >>"$log" 2>&1 </dev/null & echo $!"#)
            .arg(&self.log)
            .args(argv)
            .env_clear()
            .envs(self.original.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.original.cwd)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err("/bin/bash (starting kube-controller-manager)"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let pid: u32 = text.trim().parse().map_err(|_| {
            Error::Setup(format!(
                "starting {KCM} printed no PID: {text:?} {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        })?;
        std::fs::write(&self.pid_file, pid.to_string()).map_err(io_err(&self.pid_file))?;
        self.pid = Some(pid);
        // The PID is setsid's until it execs the daemon; a daemon that dies at once shows here.
        let deadline = Instant::now() + Duration::from_secs(5);
        while argv_of(pid).as_deref() != Some(argv) {
            if exited(pid) || Instant::now() >= deadline {
                return Err(Error::Setup(format!(
                    "{KCM} (PID {pid}) did not start; see {}",
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let flags = match argv.get(self.original.argv.len()..) {
            Some(extra) if !extra.is_empty() => format!("with {}", extra.join(" ")),
            _ => "as it was".to_string(),
        };
        say(format!("{KCM} started (PID {pid}) {flags}"));
        Ok(())
    }
}

/// Closes every descriptor above stderr that the shell inherited. Rust opens its own with
/// close-on-exec, but whoever started the benchmark may not have (flock(1) passes its lock).
const CLOSE_INHERITED: &str = r#"for fd in $(ls /proc/$$/fd); do if [ "$fd" -gt 2 ] && [ -L "/proc/$$/fd/$fd" ]; then eval "exec $fd>&-"; fi; done"#;

/// `/bin/bash -c SCRIPT bash`, the script run after [`CLOSE_INHERITED`]; arguments added to the
/// command are the script's `$1`…; `exec "$@"` keeps the PID for the program it runs.
pub fn bash(script: &str) -> Command {
    let mut command = Command::new("/bin/bash");
    command
        .arg("-c")
        .arg(format!("{CLOSE_INHERITED}; {script}"))
        .arg("bash");
    command
}

/// SIGTERM, up to `grace` to exit, then SIGKILL.
pub async fn terminate(pid: u32, grace: Duration) -> Result<(), Error> {
    signal(pid, "-TERM")?;
    let deadline = Instant::now() + grace;
    while !exited(pid) {
        if Instant::now() >= deadline {
            signal(pid, "-KILL")?;
            let hard = Instant::now() + Duration::from_secs(5);
            while !exited(pid) {
                if Instant::now() >= hard {
                    return Err(Error::Setup(format!("PID {pid} survives SIGKILL")));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn signal(pid: u32, sig: &str) -> Result<(), Error> {
    // No libc (unsafe is forbidden): kill(1) sends it. It fails only if the process is gone.
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map(|_| ())
        .map_err(io_err("kill"))
}

/// The path as given when it exists, an error naming it otherwise.
pub fn existing(path: &Path, what: &str) -> Result<PathBuf, Error> {
    if path.exists() {
        Ok(path.to_path_buf())
    } else {
        Err(Error::Setup(format!(
            "{what} {} does not exist",
            path.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_cpu_from_proc_text() {
        let status = "Name:\tcrucible\nVmPeak:\t  90000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   19046 kB\nThreads:\t9\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(19_046));
        assert_eq!(status_field(status, "VmHWM:"), Some(20_480));
        assert_eq!(status_field("Name:\tx\n", "VmRSS:"), None);
        // comm with a space and a parenthesis; utime 250, stime 410 ticks.
        let stat = "4242 (my (proc) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 410 0 0 20 0 9";
        assert_eq!(cpu_ticks(stat), Some(660));
        assert_eq!(stat_fields(stat).unwrap()[0], "S");
        assert_eq!(cpu_ticks("4242 (short) S 1"), None);
    }

    #[test]
    fn proc_lists_split_on_nul() {
        assert_eq!(split_nul(b"/bin/kcm\0--v=1\0"), ["/bin/kcm", "--v=1"]);
        assert!(split_nul(b"").is_empty());
    }

    #[test]
    fn children_do_not_inherit_descriptors() {
        let fds = |inner: &str| {
            // An outer shell opens fd 7 without close-on-exec, as flock(1) passes its lock.
            let out = Command::new("/bin/bash")
                .args(["-c", r#"exec 7</dev/null; "$@""#, "bash"])
                .args(bash(inner).get_program().to_str())
                .args(bash(inner).get_args().filter_map(|a| a.to_str()))
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        let listed = fds(r#"exec ls /proc/self/fd"#);
        let listed: Vec<&str> = listed.split_whitespace().collect();
        assert!(
            listed.contains(&"1") && !listed.contains(&"7"),
            "{listed:?}"
        );
        // Without the prelude fd 7 is there: the test can tell.
        let out = Command::new("/bin/bash")
            .args(["-c", r#"exec 7</dev/null; ls /proc/self/fd"#])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .any(|f| f == "7")
        );
    }

    #[test]
    fn this_process_is_readable_and_running() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        // A peak 64 MiB above the current RSS comes back down to it when reset (by more than
        // half of that: the kernel's RSS counters lag a little).
        let big = vec![1u8; 64 << 20];
        let peak = hwm_kib(me).unwrap();
        drop(std::hint::black_box(big));
        reset_hwm(me).unwrap();
        let after = hwm_kib(me).unwrap();
        assert!(
            after + (32 << 10) < peak,
            "VmHWM {after} KiB not reset from {peak} KiB"
        );
        assert!(cpu_time(me).is_ok());
        assert!(!exited(me));
        assert!(Invocation::of(me).unwrap().argv[0].contains("crucible_bench"));
    }
}
