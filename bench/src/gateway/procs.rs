//! The processes the gateway benchmark starts (stand-in providers, `crucible gateway`,
//! LiteLLM's proxy): each in a process group of its own, the whole group killed when dropped,
//! so nothing they fork outlives the benchmark, on error or on a signal alike.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process group the benchmark started; killed when dropped.
pub struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` as `name` in a group of its own, its output to `log`.
    pub fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> Result<Self, String> {
        let out = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", command.get_program()))?;
        Ok(Self { name, child, log })
    }

    /// Its PID (also its group's id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits until it listens on `addr`; an error says why not, with the end of its log.
    pub async fn wait_listening(
        &mut self,
        addr: SocketAddr,
        within: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before listening{}",
                    self.name,
                    self.tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} does not listen on {addr} after {within:?}{}",
                    self.name,
                    self.tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The last lines of its log, to show with an error.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let last = lines[lines.len().saturating_sub(15)..].join("\n  ");
        if last.is_empty() {
            String::new()
        } else {
            format!("; the end of its log ({}):\n  {last}", self.log.display())
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // No libc (unsafe is denied): kill(1) signals the whole group, then the leader is
        // reaped. SIGKILL: the benchmark has its figures; nothing of it may outlive it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (released for the process about to take it).
pub fn free_port() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// Resident memory of `pid` and every process below it, in KiB (LiteLLM may serve from a
/// child); `None` when `pid` is gone.
pub fn resident_kib(pid: u32) -> Option<u64> {
    let own = vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)?;
    Some(
        own + children(pid)
            .into_iter()
            .filter_map(resident_kib)
            .sum::<u64>(),
    )
}

/// `VmRSS` of a `/proc/PID/status` text, in KiB.
fn vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The direct children of `pid`, from every thread's `children` list.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// CPU time `pid` has used (user and system), in clock ticks; `None` when it is gone.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command (which may hold spaces) start after its closing `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(field(11)? + field(12)?)
}

/// Waits, at most `within`, until `pid` is quiet (under a tenth of a CPU over a fifth of a
/// second): a subject that fell behind its load works off what it had queued before the next
/// subject is measured, instead of during it. Whether it got quiet.
pub async fn settle(pid: u32, within: Duration) -> bool {
    const WINDOW: Duration = Duration::from_millis(200);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let Some(before) = cpu_ticks(pid) else {
            return false;
        };
        tokio::time::sleep(WINDOW).await;
        // 100 ticks a second on Linux: 2 ticks in 200 ms is a tenth of a CPU.
        if cpu_ticks(pid).is_some_and(|after| after.saturating_sub(before) <= 2) {
            return true;
        }
    }
    false
}

/// Writes `text` to `dir/name`; the path.
pub fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tgw\nVmPeak:\t  9000 kB\nVmRSS:\t    12345 kB\nThreads:\t3\n";
        assert_eq!(vm_rss(status), Some(12_345));
        assert_eq!(vm_rss("Name:\tgw\n"), None);
    }

    #[tokio::test]
    async fn a_busy_process_is_not_quiet_and_an_idle_one_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut busy = Command::new("/bin/sh");
        busy.args(["-c", "while :; do :; done"]);
        let busy = Process::spawn("busy", &mut busy, dir.path().join("busy")).expect("spawn");
        assert!(!settle(busy.id(), Duration::from_millis(600)).await);
        let mut idle = Command::new("sleep");
        idle.arg("30");
        let idle = Process::spawn("idle", &mut idle, dir.path().join("idle")).expect("spawn");
        assert!(settle(idle.id(), Duration::from_secs(5)).await);
        assert!(cpu_ticks(idle.id()).is_some());
    }

    #[test]
    fn a_process_tree_is_counted_and_killed_with_its_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A shell that forks a child and waits: the tree has two processes.
        let mut command = Command::new("/bin/sh");
        command.args(["-c", "sleep 30 & wait"]);
        let process = Process::spawn("sh", &mut command, dir.path().join("log")).expect("spawn");
        let pid = process.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while children(pid).is_empty() {
            assert!(Instant::now() < deadline, "the child never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
        let child = children(pid)[0];
        let own = resident_kib(pid).expect("alive");
        assert!(own > resident_kib(child).expect("alive"));
        drop(process);
        // The child was in the group: gone too (a zombie until init reaps it has no VmRSS).
        let deadline = Instant::now() + Duration::from_secs(10);
        while resident_kib(child).is_some() {
            assert!(Instant::now() < deadline, "the group's child survived");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
