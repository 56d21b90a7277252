//! From the pod the controller plans to one step of a local run: the process as the kubelet
//! would start it, its mounts and limits, and the OCI runtime spec (`config.json`) runsc runs.
//! Pure: the sandbox rules are read from [`desired_pod`](crate::run::pod::desired_pod),
//! never restated here, so a local run is sandboxed exactly as the cluster's pod is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use crate::local::image::ImageConfig;
use crate::quantity;
use crate::run::pod::SANDBOX_UID;

/// CFS period of the cpu limit, as the kubelet sets it.
const CPU_PERIOD_US: u64 = 100_000;
/// Open files per process (the container runtimes' usual default).
const NOFILE: u64 = 1_048_576;

/// The process of one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// argv.
    pub args: Vec<String>,
    /// `NAME=value` entries, image first, then the container's (later ones win).
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
}

/// One mount of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mount {
    /// A private, size-limited tmpfs (the pod's `/tmp` emptyDir).
    Tmpfs {
        /// Mount point.
        destination: String,
        /// Size limit in bytes.
        size: u64,
    },
    /// A host directory (ConfigMap workspace, shared emptyDir, termination-message directory).
    Bind {
        /// Mount point.
        destination: String,
        /// Host directory.
        source: PathBuf,
        /// Whether the step sees it read-only.
        read_only: bool,
    },
}

/// Everything one container of the planned pod needs to run locally.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Container name (`evaluation`, `scorer`).
    pub name: String,
    /// Image reference.
    pub image: String,
    /// The process.
    pub process: Process,
    /// Mounts, in the container's order, plus the termination-message directory.
    pub mounts: Vec<Mount>,
    /// CPU limit in millicores.
    pub cpu_millis: Option<u64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Host file the termination message is read from, when the container has one.
    pub termination_file: Option<PathBuf>,
}

/// The process the kubelet would start: `command` replaces the image's entrypoint (and drops
/// its cmd), `args` replace the cmd; env is the image's, then the container's.
///
/// # Errors
/// A variable taken from a Secret or ConfigMap (`valueFrom`): there is no cluster to read it.
pub fn process(
    container: &Container,
    image: &ImageConfig,
    hostname: &str,
) -> Result<Process, String> {
    let mut args = match (&container.command, &container.args) {
        (Some(command), args) => command
            .clone()
            .into_iter()
            .chain(args.clone().unwrap_or_default())
            .collect(),
        (None, Some(args)) => image
            .entrypoint
            .iter()
            .cloned()
            .chain(args.clone())
            .collect(),
        (None, None) => image
            .entrypoint
            .iter()
            .chain(&image.cmd)
            .cloned()
            .collect::<Vec<_>>(),
    };
    if args.is_empty() {
        return Err("neither the spec nor the image names a command".into());
    }
    args.shrink_to_fit();
    let mut env: Vec<String> = image.env.clone();
    env.push(format!("HOSTNAME={hostname}"));
    for var in container.env.as_deref().unwrap_or_default() {
        if var.value_from.is_some() {
            return Err(format!(
                "env {} takes its value from the cluster (valueFrom), which a local run cannot read",
                var.name
            ));
        }
        let prefix = format!("{}=", var.name);
        env.retain(|e| !e.starts_with(&prefix));
        env.push(format!(
            "{prefix}{}",
            var.value.as_deref().unwrap_or_default()
        ));
    }
    let cwd = container
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone().filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".into());
    Ok(Process { args, env, cwd })
}

/// The step of container `container` of the planned `pod`. `volumes` maps the pod's volume
/// names to host directories (the workspace, shared emptyDirs); `termination_dir` is the host
/// directory mounted where the termination message is written.
///
/// # Errors
/// What the local kubelet cannot provide (a volume without a host directory, `valueFrom`).
pub fn step(
    pod: &Pod,
    container: &Container,
    image: &ImageConfig,
    volumes: &BTreeMap<String, PathBuf>,
    termination_dir: &Path,
) -> Result<Step, String> {
    let pod_spec = pod.spec.clone().unwrap_or_default();
    let hostname = pod.metadata.name.clone().unwrap_or_default();
    let process = process(container, image, &hostname)?;
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.as_deref().unwrap_or_default() {
        let volume = pod_spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| format!("volume {} is not in the pod", mount.name))?;
        let tmpfs = volume
            .empty_dir
            .as_ref()
            .filter(|_| mount.mount_path == "/tmp");
        if let Some(empty_dir) = tmpfs {
            let size = empty_dir
                .size_limit
                .as_ref()
                .and_then(quantity::value)
                .ok_or("the /tmp emptyDir has no size limit")?;
            mounts.push(Mount::Tmpfs {
                destination: mount.mount_path.clone(),
                size: size as u64,
            });
            continue;
        }
        let source = volumes
            .get(&mount.name)
            .ok_or_else(|| format!("volume {} has no local directory", mount.name))?;
        mounts.push(Mount::Bind {
            destination: mount.mount_path.clone(),
            source: source.clone(),
            read_only: mount.read_only == Some(true) || volume.config_map.is_some(),
        });
    }
    let termination_file = match container.termination_message_path.as_deref() {
        Some(path) => {
            let (dir, file) = path
                .rsplit_once('/')
                .filter(|(dir, file)| !dir.is_empty() && !file.is_empty())
                .ok_or_else(|| format!("termination message path {path:?} is not /dir/file"))?;
            mounts.push(Mount::Bind {
                destination: dir.to_string(),
                source: termination_dir.to_path_buf(),
                read_only: false,
            });
            Some(termination_dir.join(file))
        }
        None => None,
    };
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let limit = |name: &str| limits.and_then(|l| l.get(name)).and_then(quantity::value);
    Ok(Step {
        name: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        process,
        mounts,
        cpu_millis: limit("cpu").map(|c| (c * 1000.0).ceil() as u64),
        memory_bytes: limit("memory").map(|m| m as u64),
        termination_file,
    })
}

/// The OCI runtime spec of `step` on `rootfs` (read-only, shared by every run of the image):
/// uid/gid 65534, no capabilities, no new privileges, private namespaces (network: loopback
/// only), and the cpu/memory limits in cgroup `cgroup` when given (rootless runsc has none).
pub fn oci_config(step: &Step, rootfs: &Path, hostname: &str, cgroup: Option<&str>) -> Value {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    for mount in &step.mounts {
        mounts.push(match mount {
            Mount::Tmpfs { destination, size } => json!({
                "destination": destination, "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", format!("size={size}")],
            }),
            Mount::Bind {
                destination,
                source,
                read_only,
            } => json!({
                "destination": destination, "type": "bind", "source": source,
                "options": ["rbind", "nosuid", "nodev", if *read_only { "ro" } else { "rw" }],
            }),
        });
    }
    let mut resources = serde_json::Map::new();
    if let Some(bytes) = step.memory_bytes {
        resources.insert("memory".into(), json!({"limit": bytes}));
    }
    if let Some(millis) = step.cpu_millis {
        let quota = (millis * CPU_PERIOD_US / 1000).max(1000);
        resources.insert(
            "cpu".into(),
            json!({"quota": quota, "period": CPU_PERIOD_US}),
        );
    }
    let mut linux = json!({
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
    });
    if let Some(path) = cgroup {
        linux["cgroupsPath"] = json!(path);
        linux["resources"] = Value::Object(resources);
    }
    let no_caps: [&str; 0] = [];
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": SANDBOX_UID, "gid": SANDBOX_UID, "additionalGids": [SANDBOX_UID]},
            "args": step.process.args,
            "env": step.process.env,
            "cwd": step.process.cwd,
            "capabilities": {"bounding": no_caps, "effective": no_caps, "inheritable": no_caps, "permitted": no_caps, "ambient": no_caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": NOFILE, "soft": NOFILE}],
            "noNewPrivileges": true,
        },
        "root": {"path": rootfs, "readonly": true},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    })
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
