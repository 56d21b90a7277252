//! Runs one step: under `runsc run` with the step's OCI bundle, or (`--unsandboxed`) as a plain
//! process tree in private namespaces with the same mounts and user. Streams the combined
//! stdout + stderr through the controller's [`LogScanner`] (bounded memory), and enforces the
//! deadline by killing the sandbox.

use std::io::{BufRead, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use crate::local::bundle::{self, Mount, Step};
use crate::local::files;
use crate::local::image::Image;
use crate::run::pod::SANDBOX_UID;
use crate::run::results::{LOG_WINDOW_BYTES, LogCapture, LogScanner};

/// How steps are run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// gVisor.
    Runsc {
        /// The runsc binary.
        binary: PathBuf,
        /// Not root: `--rootless`, no cgroups.
        rootless: bool,
    },
    /// No sandbox: private namespaces (`unshare`) and `chroot`, as root.
    Unsandboxed,
}

/// cgroup v1 memory hierarchy. runsc applies the memory limit itself on cgroup v2; on v1 the
/// kubelet owns the memory cgroup so that it can read the OOM-kill counter before removing it
/// (runsc deletes the cgroups it creates, counter included, when the sandbox ends).
const MEMORY_CGROUP_V1: &str = "/sys/fs/cgroup/memory";
/// Parent of every local run's cgroup.
const CGROUP_PARENT: &str = "crucible-run";

/// How a step ended.
#[derive(Debug)]
pub struct Exit {
    /// Exit code (128 + signal when killed).
    pub code: i32,
    /// Killed at the deadline.
    pub timed_out: bool,
    /// Killed by the kernel for exceeding its memory limit.
    pub oom_killed: bool,
    /// The combined output.
    pub log: LogCapture,
}

/// Why a step could not be started at all.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// Finds `runsc` on PATH.
pub fn find_runsc() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("runsc"))
        .find(|p| p.is_file())
}

/// Whether this process runs as root (the effective uid from /proc, no libc needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The step's output in its bundle directory when no log file is asked for.
const OUTPUT_FILE: &str = "output.log";

impl Isolation {
    /// Runs `step` in `dir` (its bundle directory) as container `id`, until it exits or
    /// `deadline`; the output goes to `log_file` when given (else into `dir`), and is
    /// scanned once the step has ended.
    ///
    /// # Errors
    /// The runtime could not be started.
    pub fn run(
        &self,
        step: &Step,
        image: &Image,
        dir: &Path,
        id: &str,
        deadline: Instant,
        log_file: Option<&Path>,
    ) -> Result<Exit, StartError> {
        let io = |what: &str, e: std::io::Error| StartError(format!("{what}: {e}"));
        files::fresh_dir(dir, 0o700).map_err(StartError)?;
        let mut memory = None;
        let hostname = id.rsplit_once('.').map_or(id, |(pod, _)| pod);
        let (mut command, state) = match self {
            Isolation::Runsc { binary, rootless } => {
                let cgroup = (!rootless).then(|| format!("/{CGROUP_PARENT}/{id}"));
                let mut config =
                    bundle::oci_config(step, &image.rootfs, hostname, cgroup.as_deref());
                if !rootless && let Some(bytes) = step.memory_bytes {
                    memory = MemoryCgroup::create(id, bytes);
                    if memory.is_some() {
                        // runsc leaves an existing cgroup's limits alone; ours is set.
                        if let Some(r) = config["linux"]["resources"].as_object_mut() {
                            r.remove("memory");
                        }
                    }
                }
                let bytes = serde_json::to_vec(&config).map_err(|e| StartError(e.to_string()))?;
                files::create_file(&dir.join("config.json"), 0o600, &bytes).map_err(StartError)?;
                let state = dir.join("runsc");
                let mut c = Command::new(binary);
                c.arg("--root")
                    .arg(&state)
                    .args(["--network=none", "--platform=ptrace"]);
                if *rootless {
                    c.args(["--rootless", "--ignore-cgroups"]);
                }
                c.arg("run").arg("--bundle").arg(dir).arg(id);
                (c, Some((binary.clone(), state, *rootless)))
            }
            Isolation::Unsandboxed => (unsandboxed_command(step, image, dir)?, None),
        };
        // Output goes to a file, as the kubelet's does: a pipe that fills while the reader is
        // slow can make gVisor return EAGAIN to the writer, and the program fails.
        let output = log_file.map_or_else(|| dir.join(OUTPUT_FILE), Path::to_path_buf);
        let writer = files::create_file(&output, 0o600, b"").map_err(StartError)?;
        let stderr = writer.try_clone().map_err(|e| io("output file", e))?;
        command.stdin(Stdio::null()).stdout(writer).stderr(stderr);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .map_err(|e| io(&format!("cannot start {:?}", command.get_program()), e))?;
        drop(command);
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        let mut child = child;
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (status, timed_out) = match rx.recv_timeout(timeout) {
            Ok(status) => (status, false),
            Err(_) => {
                kill(pid, state.as_ref(), id);
                (rx.recv().map_err(|e| StartError(e.to_string()))?, true)
            }
        };
        let status = status.map_err(|e| io("wait", e))?;
        if let Some((binary, state, _)) = &state {
            // Nothing is left behind even if runsc exited oddly (normally a no-op).
            let _ = Command::new(binary)
                .arg("--root")
                .arg(state)
                .args(["delete", "--force", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let log = scan(files::open_regular(&output).map_err(|e| io("output file", e))?);
        let code = status.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(9)
        });
        let oom_killed = memory.as_ref().is_some_and(MemoryCgroup::oom_killed);
        Ok(Exit {
            code,
            timed_out,
            oom_killed,
            log,
        })
    }
}

/// A cgroup v1 memory cgroup with the step's limit, removed when dropped.
struct MemoryCgroup {
    dir: PathBuf,
}

impl MemoryCgroup {
    /// `None` without a v1 memory hierarchy (runsc then sets the limit from the spec).
    fn create(id: &str, bytes: u64) -> Option<Self> {
        let root = Path::new(MEMORY_CGROUP_V1);
        if !root.join("memory.limit_in_bytes").exists() {
            return None;
        }
        let dir = root.join(CGROUP_PARENT).join(id);
        std::fs::create_dir_all(&dir).ok()?;
        let cgroup = MemoryCgroup { dir };
        std::fs::write(cgroup.dir.join("memory.limit_in_bytes"), bytes.to_string()).ok()?;
        Some(cgroup)
    }

    /// Whether the kernel killed a process of the cgroup for exceeding the limit.
    fn oom_killed(&self) -> bool {
        std::fs::read_to_string(self.dir.join("memory.oom_control"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .is_some_and(|n| n > 0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Reads the output (every writer closed) through a [`LogScanner`] as the controller reads a
/// pod's log: the whole lines of its last [`LOG_WINDOW_BYTES`].
fn scan(file: std::fs::File) -> LogCapture {
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, file);
    let start = reader
        .get_ref()
        .metadata()
        .map_or(0, |m| m.len().saturating_sub(LOG_WINDOW_BYTES));
    // From the byte before the window, skip to the end of that line: the window starts on a
    // whole line.
    if start > 0
        && (reader.seek(SeekFrom::Start(start - 1)).is_err() || reader.skip_until(b'\n').is_err())
    {
        return LogCapture::default();
    }
    let mut scanner = LogScanner::default();
    loop {
        match reader.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(chunk) => {
                let n = chunk.len();
                scanner.feed(chunk);
                reader.consume(n);
            }
        }
    }
    LogCapture {
        whole: start == 0,
        ..scanner.finish()
    }
}

/// Ends a step at its deadline: `runsc kill` + `delete --force` for a sandbox, SIGKILL to the
/// process group otherwise.
fn kill(pid: u32, runsc: Option<&(PathBuf, PathBuf, bool)>, id: &str) {
    let quiet = |c: &mut Command| {
        let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
    };
    if let Some((binary, state, _)) = runsc {
        quiet(
            Command::new(binary)
                .arg("--root")
                .arg(state)
                .args(["kill", "--all", id, "KILL"]),
        );
        quiet(
            Command::new(binary)
                .arg("--root")
                .arg(state)
                .args(["delete", "--force", id]),
        );
    }
    quiet(Command::new("kill").args(["-s", "KILL", "--", &format!("-{pid}")]));
}

/// Shell-quotes one word.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The unsandboxed twin of the OCI bundle: `unshare` gives private mount, pid, network (only
/// `lo`), ipc and uts namespaces; [`unsandboxed_script`] builds the mounts and drops to 65534.
/// No gVisor: the host kernel runs the code.
fn unsandboxed_command(step: &Step, image: &Image, dir: &Path) -> Result<Command, StartError> {
    if !is_root() {
        return Err(StartError(
            "--unsandboxed needs root (it builds the sandbox's mounts with unshare and chroot)"
                .into(),
        ));
    }
    let root = dir.join("root");
    files::fresh_dir(&root, 0o700).map_err(StartError)?;
    let script = unsandboxed_script(step, &image.rootfs, &root);
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--pid",
            "--net",
            "--ipc",
            "--uts",
            "--fork",
            "--kill-child",
            "--",
        ])
        .args(["/bin/sh", "-c", &script]);
    Ok(command)
}

/// The script run in the private namespaces: mounts the image's `rootfs` read-only at `root`
/// with the same /tmp, workspace, outputs and result mounts, every one `nosuid` (a setuid file
/// in the image or written to a volume grants nothing); then `prlimit` sets the memory limit
/// (as the address-space rlimit; open files stay as inherited: raising them needs
/// CAP_SYS_RESOURCE), `setpriv --no-new-privs` forbids gaining privileges by exec, and
/// `chroot --userspec` drops to 65534.
fn unsandboxed_script(step: &Step, rootfs: &Path, root: &Path) -> String {
    let r = quote(&root.to_string_lossy());
    let mut script = vec![
        "set -e".to_string(),
        "mount --make-rprivate /".into(),
        format!("mount --bind {} {r}", quote(&rootfs.to_string_lossy())),
        format!("mount -t proc -o nosuid,nodev,noexec proc {r}/proc"),
        format!("mount -t tmpfs -o size=64m,mode=755,nosuid,noexec tmpfs {r}/dev"),
    ];
    for dev in ["null", "zero", "random", "urandom"] {
        script.push(format!(
            "touch {r}/dev/{dev}; mount --bind /dev/{dev} {r}/dev/{dev}; mount -o remount,bind,nosuid,noexec {r}/dev/{dev}"
        ));
    }
    for mount in &step.mounts {
        match mount {
            Mount::Tmpfs { destination, size } => script.push(format!(
                "mount -t tmpfs -o size={size},mode=1777,nosuid,nodev tmpfs {r}{}",
                quote(destination)
            )),
            Mount::Bind {
                destination,
                source,
                read_only,
            } => {
                let target = format!("{r}{}", quote(destination));
                script.push(format!(
                    "mount --bind {} {target}",
                    quote(&source.to_string_lossy())
                ));
                let ro = if *read_only { ",ro" } else { "" };
                script.push(format!("mount -o remount,bind,nosuid,nodev{ro} {target}"));
            }
        }
    }
    script.push(format!("mount -o remount,bind,ro,nosuid,nodev {r}"));
    let mut exec = "exec prlimit".to_string();
    if let Some(bytes) = step.memory_bytes {
        exec.push_str(&format!(" --as={bytes}"));
    }
    // chroot resets the directory to /: env -C restores the working directory inside.
    exec.push_str(&format!(
        " -- setpriv --no-new-privs -- chroot --userspec={SANDBOX_UID}:{SANDBOX_UID} {r} /usr/bin/env -i -C {}",
        quote(&step.process.cwd)
    ));
    for var in &step.process.env {
        exec.push(' ');
        exec.push_str(&quote(var));
    }
    for arg in &step.process.args {
        exec.push(' ');
        exec.push_str(&quote(arg));
    }
    script.push(exec);
    script.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsandboxed_steps_get_no_new_privileges_and_nosuid_mounts() {
        let step = Step {
            name: "evaluation".into(),
            image: "img".into(),
            process: bundle::Process {
                args: vec!["python".into()],
                env: vec![],
                cwd: "/workspace".into(),
            },
            mounts: vec![
                Mount::Tmpfs {
                    destination: "/tmp".into(),
                    size: 1024,
                },
                Mount::Bind {
                    destination: "/workspace".into(),
                    source: "/run/ws".into(),
                    read_only: true,
                },
                Mount::Bind {
                    destination: "/outputs".into(),
                    source: "/run/out".into(),
                    read_only: false,
                },
            ],
            cpu_millis: None,
            memory_bytes: Some(1 << 20),
            termination_file: None,
        };
        let script = unsandboxed_script(&step, Path::new("/images/rootfs"), Path::new("/run/root"));
        let lines: Vec<&str> = script.lines().collect();
        // Every mount ends nosuid: a filesystem mount says so, a bind is remounted so.
        for (i, line) in lines.iter().enumerate() {
            for command in line.split("; ") {
                if command.starts_with("mount -t") {
                    assert!(command.contains("nosuid"), "{command}");
                }
                if let Some(bind) = command.strip_prefix("mount --bind ") {
                    let target = bind.split(' ').nth(1).expect("a target");
                    let remounted = lines[i..].iter().flat_map(|l| l.split("; ")).any(|c| {
                        c.starts_with("mount -o remount,bind,")
                            && c.contains("nosuid")
                            && c.ends_with(&format!(" {target}"))
                    });
                    assert!(remounted, "{target} is not remounted nosuid:\n{script}");
                }
            }
        }
        let exec = lines.last().expect("an exec line");
        let nnp = exec
            .find("setpriv --no-new-privs")
            .expect("no_new_privs is set");
        assert!(nnp < exec.find("chroot").expect("chroot"), "{exec}");
        assert!(script.contains("remount,bind,nosuid,nodev,ro '/run/root''/workspace'"));
    }

    #[test]
    fn the_output_is_searched_in_the_same_window_as_a_pod_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("output.log");
        let result = "CRUCIBLE_RESULT {\"score\": 1}\n";
        let teardown = "teardown line\n".repeat(1500);
        std::fs::write(&path, format!("start\n{result}{teardown}")).expect("write");
        let log = scan(files::open_regular(&path).expect("open"));
        assert!(log.result_line.is_some() && log.whole, "{log:?}");
        // A result further back than the window is not read, as on a cluster.
        let filler = "x".repeat(1023) + "\n";
        let mut text = String::from(result);
        for _ in 0..(LOG_WINDOW_BYTES / 1024 + 2) {
            text.push_str(&filler);
        }
        std::fs::write(&path, text).expect("write");
        let log = scan(files::open_regular(&path).expect("open"));
        assert_eq!(log.result_line, None);
        assert!(!log.whole);
        assert!(
            log.searched <= LOG_WINDOW_BYTES && log.searched.is_multiple_of(1024),
            "{}",
            log.searched
        );
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("/a b"), "'/a b'");
    }
}
