//! Drives one Evaluation (or a suite's children) through the controller's own pure
//! [`plan`](crate::evaluation::plan::plan): it plays API server and kubelet. It
//! answers `plan`'s questions (admitted; the sandbox exists; the git source at its commit),
//! runs the pod `plan` asks for, and reports the pod back as a kubelet would (container states,
//! exit codes, termination messages, `DeadlineExceeded`) with the log captured by the
//! controller's [`LogScanner`](crate::run::results::LogScanner). So every status field
//! (phase, reason, result, conditions, provenance, log tail) comes from the code that writes it
//! on the cluster.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::admission::Decision;
use crate::config::Config;
use crate::crd::evaluation::{Phase, Source};
use crate::crd::samples::SamplesStatus;
use crate::crd::suite::SuitePhase;
use crate::crd::{Evaluation, EvaluationSuite};
use crate::evaluation::plan::{self, Child, Observed, RuntimeClassCheck};
use crate::labels::RUN_ID_LABEL;
use crate::local::image::ImageStore;
use crate::local::samples as local_samples;
use crate::local::sandbox::{self, Isolation};
use crate::local::{bundle, files};
use crate::run::fetched::{FetchedSource, SourceProblem};
use crate::run::pod::SAMPLES_VOLUME;
use crate::run::pod::SANDBOX_UID;
use crate::run::results::{LogCapture, TERMINATION_MESSAGE_MAX};
use crate::samples::spec::SAMPLES_PATH;
use crate::source::{GitCache, GitRequest};
use crate::store::{BundleKey, Store};
use crate::suite;

/// Runs evaluations on this machine; shared by every concurrent run of one `crucible run`.
pub struct Kubelet {
    /// Planning settings (the controller's defaults; `allow_unsandboxed` for `--unsandboxed`).
    pub config: Config,
    /// Images.
    pub images: ImageStore,
    /// runsc or unsandboxed.
    pub isolation: Isolation,
    /// Git sources (file:// allowed: the files are this machine's own).
    pub git: GitCache,
    /// Keep run directories.
    pub keep: bool,
    /// Where run directories go.
    pub work_root: PathBuf,
    /// At most `--parallel` pods at once.
    pub slots: tokio::sync::Semaphore,
    /// Where samples bundles go (`--results`).
    pub results: Option<Store>,
    counter: AtomicU64,
}

/// A kubelet-like report of one pod, for the next `plan`.
struct Ran {
    pod: Pod,
    logs: BTreeMap<String, LogCapture>,
    /// What became of the samples of a pod that succeeded.
    samples: Option<Result<Option<SamplesStatus>, String>>,
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

impl Kubelet {
    /// A kubelet; `parallel` pods at once.
    pub fn new(
        config: Config,
        images: ImageStore,
        isolation: Isolation,
        git: GitCache,
        keep: bool,
        parallel: usize,
    ) -> Self {
        Kubelet {
            config,
            images,
            isolation,
            git,
            keep,
            work_root: std::env::temp_dir(),
            slots: tokio::sync::Semaphore::new(parallel.max(1)),
            results: None,
            counter: AtomicU64::new(0),
        }
    }

    /// Runs `ev` to a finished status (it must have a namespace and uid).
    pub async fn evaluation(self: &Arc<Self>, mut ev: Evaluation) -> Evaluation {
        let sandboxed = matches!(self.isolation, Isolation::Runsc { .. });
        let mut obs = Observed {
            now: now(),
            pods: Vec::new(),
            runtime_class: Some(if sandboxed {
                RuntimeClassCheck::Present
            } else {
                RuntimeClassCheck::Missing
            }),
            logs: BTreeMap::new(),
            stop: None,
            source: None,
            head: None,
        };
        if let Some(Source::Git(git)) = &ev.spec.source {
            obs.source = Some(self.fetch(git).await);
        }
        let mut samples = None;
        loop {
            // A slot first, so that `startTime` (set by the plan that starts a pod) and the
            // duration do not count the wait for other runs.
            let permit = self.slots.acquire().await;
            obs.now = now();
            let planned = match plan::plan(&ev, &obs, &Decision::Admit, &self.config) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("crucible: {}: {e}", ev.name_any());
                    return ev;
                }
            };
            let finished = planned.status.phase.is_some_and(Phase::is_finished);
            ev.status = Some(planned.status);
            if finished {
                if let (Some(outcome), Some(status)) = (samples, ev.status.as_mut()) {
                    local_samples::record(status, outcome, ev.metadata.generation, &obs.now);
                }
                return ev;
            }
            let mut pod = None;
            let mut workspace = None;
            for child in planned.create {
                match child {
                    Child::Pod(p) => pod = Some(*p),
                    Child::ConfigMap(c) => workspace = Some(*c),
                    // No cluster network: the local sandbox has none at all.
                    Child::NetworkPolicy(_) | Child::SandboxPolicy => {}
                }
            }
            let Some(pod) = pod else {
                eprintln!("crucible: {}: the plan started no pod", ev.name_any());
                return ev;
            };
            let kubelet = self.clone();
            let of = ev.clone();
            let ran =
                tokio::task::spawn_blocking(move || kubelet.run_pod(pod, workspace.as_ref(), &of))
                    .await;
            drop(permit);
            match ran {
                Ok(ran) => {
                    obs.pods = vec![ran.pod];
                    obs.logs = ran.logs;
                    samples = ran.samples;
                }
                Err(e) => {
                    eprintln!("crucible: {}: {e}", ev.name_any());
                    return ev;
                }
            }
        }
    }

    /// Runs a suite: the controller's suite plan decides which children start (within
    /// `parallelism`, stopping at `maxFailures`) and the suite's status, re-planned whenever a
    /// child finishes. Returns the suite and its children.
    pub async fn suite(
        self: &Arc<Self>,
        mut s: EvaluationSuite,
    ) -> (EvaluationSuite, Vec<Evaluation>) {
        let mut children: Vec<Evaluation> = Vec::new();
        let mut running = FuturesUnordered::new();
        loop {
            let planned = suite::plan::plan(&s, &children, &now());
            let done = planned.status.phase != Some(SuitePhase::Running);
            s.status = Some(planned.status);
            for mut child in planned.apply {
                if children.iter().any(|c| c.name_any() == child.name_any()) {
                    continue;
                }
                child.metadata.uid = Some(uid(&child.name_any()));
                child.metadata.generation = Some(1);
                child.metadata.creation_timestamp = Some(now());
                // Counts as started (Pending) for the next plan's parallelism.
                child.status = Some(crate::crd::EvaluationStatus {
                    phase: Some(Phase::Pending),
                    ..Default::default()
                });
                children.push(child.clone());
                child.status = None;
                let kubelet = self.clone();
                running.push(async move { kubelet.evaluation(child).await });
            }
            if running.is_empty() && (done || children.is_empty()) {
                return (s, children);
            }
            let Some(finished) = running.next().await else {
                return (s, children);
            };
            if let Some(slot) = children
                .iter_mut()
                .find(|c| c.name_any() == finished.name_any())
            {
                *slot = finished;
            }
        }
    }

    /// Reads a git source with the controller's git code (the run pins its commit).
    async fn fetch(
        &self,
        git: &crate::crd::evaluation::GitSource,
    ) -> Result<FetchedSource, SourceProblem> {
        if let Some(secret) = &git.secret_ref {
            return Err(SourceProblem {
                reason: "SecretNotFound",
                message: format!(
                    "Secret {} (spec.source.git.secretRef) cannot be read without a cluster",
                    secret.name
                ),
                transient: false,
            });
        }
        let request = GitRequest {
            url: git.url.clone(),
            reference: git.r#ref.clone(),
            path: git.path.clone(),
            credentials: None,
        };
        self.git
            .fetch(request, self.config.max_source_bytes)
            .await
            .map(FetchedSource::from)
            .map_err(|e| SourceProblem::from(&e))
    }

    /// Runs the planned pod: its init containers, then its containers, as the kubelet does
    /// (a failing step ends the pod), within the pod's `activeDeadlineSeconds`.
    fn run_pod(&self, mut pod: Pod, workspace: Option<&ConfigMap>, ev: &Evaluation) -> Ran {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = pod.name_any();
        let dir = work_dir(&self.work_root, n, &name);
        let spec = pod.spec.clone().unwrap_or_default();
        let deadline = Instant::now()
            + Duration::from_secs(
                u64::try_from(spec.active_deadline_seconds.unwrap_or(600)).unwrap_or(600),
            );
        let mut status = PodStatus {
            phase: Some("Pending".into()),
            start_time: Some(now()),
            ..Default::default()
        };
        let mut logs = BTreeMap::new();
        let mut statuses: Vec<(bool, ContainerStatus)> = Vec::new();
        let prepared = prepare_volumes(&dir, &pod, workspace);
        let steps = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (true, c))
            .chain(spec.containers.iter().map(|c| (false, c)));
        let mut failed = false;
        let mut timed_out = false;
        for (init, container) in steps {
            let mut container_status = ContainerStatus {
                name: container.name.clone(),
                image: container.image.clone().unwrap_or_default(),
                ..Default::default()
            };
            let waiting = |reason: &str, message: String| ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some(message),
                }),
                ..Default::default()
            };
            let volumes = match &prepared {
                Ok(v) => v,
                Err(message) => {
                    container_status.state = Some(waiting("CreateContainerError", message.clone()));
                    statuses.push((init, container_status));
                    break;
                }
            };
            let image = match self.images.get(container_status.image.as_str()) {
                Ok(image) => image,
                Err(e) => {
                    eprintln!("crucible: {e}");
                    container_status.state = Some(waiting("ErrImageNeverPull", e.to_string()));
                    statuses.push((init, container_status));
                    break;
                }
            };
            container_status.image_id = image.digest.clone();
            let termination_dir = dir.join("termination").join(&container.name);
            let step = mkdir_owned(&termination_dir)
                .and_then(|()| {
                    bundle::step(&pod, container, &image.config, volumes, &termination_dir)
                })
                .and_then(|step| {
                    // The kubelet mounts an existing, empty file; so does this (rootless runsc
                    // could not create one owned by the sandbox user).
                    if let Some(file) = &step.termination_file {
                        files::create_file(file, 0o666, b"")?;
                    }
                    Ok(step)
                });
            let step = match step {
                Ok(step) => step,
                Err(message) => {
                    container_status.state = Some(waiting("CreateContainerConfigError", message));
                    statuses.push((init, container_status));
                    break;
                }
            };
            let started = now();
            status.phase = Some("Running".into());
            // Unique across concurrent `crucible run`s too: it names the cgroup.
            let id = format!("{name}.{}-{}-{n}", container.name, std::process::id());
            let log_file = self
                .keep
                .then(|| dir.join(format!("{}.log", container.name)));
            let exit = self.isolation.run(
                &step,
                &image,
                &dir.join(&container.name),
                &id,
                deadline,
                log_file.as_deref(),
            );
            let exit = match exit {
                Ok(exit) => exit,
                Err(e) => {
                    container_status.state = Some(waiting("CreateContainerError", e.to_string()));
                    statuses.push((init, container_status));
                    break;
                }
            };
            let message = step
                .termination_file
                .as_deref()
                .and_then(read_termination_message);
            container_status.state = Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: exit.code,
                    reason: Some(
                        match (exit.code, exit.oom_killed) {
                            (0, _) => "Completed",
                            (_, true) => "OOMKilled",
                            _ => "Error",
                        }
                        .into(),
                    ),
                    message,
                    started_at: Some(started),
                    finished_at: Some(now()),
                    ..Default::default()
                }),
                ..Default::default()
            });
            logs.insert(container.name.clone(), exit.log);
            statuses.push((init, container_status));
            if exit.timed_out {
                timed_out = true;
                break;
            }
            if exit.code != 0 {
                failed = true;
                break;
            }
        }
        let all_ran = statuses.len()
            == spec.init_containers.iter().flatten().count() + spec.containers.len()
            && statuses
                .iter()
                .all(|(_, c)| c.state.as_ref().is_some_and(|s| s.terminated.is_some()));
        if timed_out {
            status.phase = Some("Failed".into());
            status.reason = Some("DeadlineExceeded".into());
            status.message =
                Some("Pod was active on the node longer than the specified deadline".into());
        } else if failed {
            status.phase = Some("Failed".into());
        } else if all_ran {
            status.phase = Some("Succeeded".into());
        }
        let (init, main): (Vec<_>, Vec<_>) = statuses.into_iter().partition(|(init, _)| *init);
        status.init_container_statuses = Some(init.into_iter().map(|(_, c)| c).collect());
        status.container_statuses = Some(main.into_iter().map(|(_, c)| c).collect());
        let samples = match (&self.results, &prepared) {
            (Some(store), Ok(volumes)) if all_ran && !failed && !timed_out => {
                self.samples(store, volumes, &pod, ev)
            }
            _ => None,
        };
        pod.status = Some(status);
        if self.keep {
            eprintln!("crucible: kept {}", dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ran { pod, logs, samples }
    }

    /// Validates and stores what the pod's reporting step wrote to its samples volume.
    fn samples(
        &self,
        store: &Store,
        volumes: &BTreeMap<String, PathBuf>,
        pod: &Pod,
        ev: &Evaluation,
    ) -> Option<Result<Option<SamplesStatus>, String>> {
        let file = volumes
            .get(SAMPLES_VOLUME)?
            .join(Path::new(SAMPLES_PATH).file_name()?);
        let run_id = pod.labels().get(RUN_ID_LABEL)?;
        let namespace = ev.namespace().unwrap_or_default();
        let key = BundleKey {
            namespace: &namespace,
            evaluation: &ev.name_any(),
            run_id,
        };
        // On a blocking thread of the runtime (spawn_blocking), so waiting here is allowed.
        let outcome = tokio::runtime::Handle::current()
            .block_on(local_samples::collect(&file, &ev.spec, store, &key));
        Some(outcome)
    }
}

/// A uid for an object that never saw an API server: unique per process and name.
pub fn uid(name: &str) -> String {
    let text = format!(
        "{}\n{name}\n{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let hex = crate::digest::sha256_hex(text.as_bytes());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The run directory of the `n`th pod: under `root` (shared: `/tmp`), named unpredictably, and
/// created fresh (0700) by the caller, so no other user can plant it or look inside.
fn work_dir(root: &Path, n: u64, name: &str) -> PathBuf {
    use std::hash::BuildHasher;
    let random = std::hash::RandomState::new().hash_one(n);
    root.join(format!(
        "crucible-run.{}.{n}.{random:016x}.{name}",
        std::process::id()
    ))
}

/// The termination message as the kubelet reads it: at most 4 KiB from the start. The sandbox
/// owns the directory the file is in: a symlink or a FIFO put in its place is not read (and
/// said so), or it would read a host file as root, or hang.
fn read_termination_message(path: &Path) -> Option<String> {
    match files::read_bounded(path, TERMINATION_MESSAGE_MAX as u64) {
        Ok(bytes) => (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            eprintln!(
                "crucible: the result file {} is not read: {e}",
                path.display()
            );
            None
        }
    }
}

/// A fresh directory the sandbox user can write: owned by 65534 as root; world-writable
/// otherwise (rootless runsc maps the caller to the sandbox's root, so host ownership does not
/// carry). Its parents are in the private run directory.
fn mkdir_owned(dir: &Path) -> Result<(), String> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    files::fresh_dir(dir, 0o755)?;
    let uid = u32::try_from(SANDBOX_UID).unwrap_or(65534);
    if !sandbox::is_root() || std::os::unix::fs::chown(dir, Some(uid), Some(uid)).is_err() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Creates the run directory `dir` (fresh, 0700) and in it the host directories of the pod's
/// volumes: the workspace ConfigMap written out read-only (its items say which key goes to
/// which path), every other emptyDir an empty directory the sandbox user owns (`/tmp` is a
/// tmpfs inside the sandbox instead).
fn prepare_volumes(
    dir: &Path,
    pod: &Pod,
    workspace: Option<&ConfigMap>,
) -> Result<BTreeMap<String, PathBuf>, String> {
    files::fresh_dir(dir, 0o700)?;
    let mut out = BTreeMap::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = dir.join("volumes").join(&volume.name);
        if let Some(source) = &volume.config_map {
            let cm = workspace.ok_or("the workspace ConfigMap was not planned")?;
            for item in source.items.iter().flatten() {
                let bytes = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&item.key))
                    .map(|s| s.as_bytes().to_vec())
                    .or_else(|| {
                        cm.binary_data
                            .as_ref()
                            .and_then(|d| d.get(&item.key))
                            .map(|b| b.0.clone())
                    })
                    .ok_or_else(|| format!("the workspace has no key {}", item.key))?;
                // The kubelet refuses paths that leave the volume; so does this.
                let relative = Path::new(&item.path);
                if !relative
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(format!("workspace path {:?} leaves the volume", item.path));
                }
                let file = path.join(relative);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("{}: {e}", parent.display()))?;
                }
                files::create_file(&file, 0o444, &bytes)?;
            }
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        } else if volume.empty_dir.is_some() {
            mkdir_owned(&path)?;
        }
        out.insert(volume.name.clone(), path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, KeyToPath, PodSpec, Volume};

    fn pod(path: &str) -> (Pod, ConfigMap) {
        let pod = Pod {
            spec: Some(PodSpec {
                volumes: Some(vec![Volume {
                    name: "workspace".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        items: Some(vec![KeyToPath {
                            key: "k".into(),
                            path: path.into(),
                            mode: None,
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let cm = ConfigMap {
            data: Some([("k".to_string(), "print(1)".to_string())].into()),
            ..Default::default()
        };
        (pod, cm)
    }

    #[test]
    fn workspace_files_are_written_read_only_and_cannot_leave_the_volume() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (p, cm) = pod("lib/eval.py");
        let volumes = prepare_volumes(&dir.path().join("run"), &p, Some(&cm)).expect("prepared");
        let file = volumes["workspace"].join("lib/eval.py");
        assert_eq!(std::fs::read_to_string(&file).expect("written"), "print(1)");
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o444);
        for (i, bad) in ["../escape.py", "/abs.py"].into_iter().enumerate() {
            let (p, cm) = pod(bad);
            let run = dir.path().join(format!("bad{i}"));
            let err = prepare_volumes(&run, &p, Some(&cm)).expect_err(bad);
            assert!(err.contains("leaves the volume"), "{err}");
            assert!(!run.join("volumes/escape.py").exists());
        }
    }

    #[test]
    fn run_directories_are_unpredictable_and_never_reused() {
        let root = tempfile::tempdir().expect("tempdir");
        let first = work_dir(root.path(), 1, "pod");
        assert_ne!(first, work_dir(root.path(), 1, "pod"));
        // One planted where a run directory goes is refused, not used.
        std::fs::create_dir(&first).expect("planted");
        let (p, cm) = pod("eval.py");
        let err =
            prepare_volumes(&first, &p, Some(&cm)).expect_err("an existing one is not reused");
        assert!(err.contains("exists"), "{err}");
        assert!(!first.join("volumes").exists());
    }

    #[test]
    fn a_symlinked_result_file_is_not_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("shadow");
        std::fs::write(&secret, r#"{"score": 1, "summary": "host secret"}"#).expect("write");
        let result = dir.path().join("result.json");
        std::os::unix::fs::symlink(&secret, &result).expect("symlink");
        assert_eq!(read_termination_message(&result), None);
    }

    #[test]
    fn termination_messages_are_read_as_the_kubelet_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("result.json");
        assert_eq!(read_termination_message(&path), None);
        std::fs::write(&path, "").expect("write");
        assert_eq!(read_termination_message(&path), None);
        std::fs::write(&path, "x".repeat(10_000)).expect("write");
        assert_eq!(
            read_termination_message(&path).map(|m| m.len()),
            Some(TERMINATION_MESSAGE_MAX)
        );
    }
}
