//! Drives one Evaluation (or a suite's children) through the controller's own pure
//! [`plan`](crate::lifecycle::plan): it plays API server and kubelet. It
//! answers `plan`'s questions (admitted; the sandbox exists; the git source at its commit),
//! runs the pod `plan` asks for, and reports the pod back as a kubelet would (container states,
//! exit codes, termination messages, `DeadlineExceeded`) with the log captured by the
//! controller's [`LogScanner`](crate::run::results::LogScanner). So every status field
//! (phase, reason, result, conditions, provenance, log tail) comes from the code that writes it
//! on the cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::{ConfigMap, Container, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::admission::Decision;
use crate::config::Config;
use crate::crd::evaluation::{Phase, Source};
use crate::crd::samples::SamplesStatus;
use crate::crd::suite::SuitePhase;
use crate::crd::{Evaluation, EvaluationSuite};
use crate::labels::RUN_ID_LABEL;
use crate::lifecycle::samples::Samples;
use crate::lifecycle::{self, Child, Observed, RuntimeClassCheck};
use crate::local::image::ImageStore;
use crate::local::pod_status::{self, Containers, Ended};
use crate::local::samples as local_samples;
use crate::local::sandbox::{self, Isolation};
use crate::local::{bundle, files, rundir};
use crate::run::fetched::{FetchedSource, SourceProblem};
use crate::run::pod::SAMPLES_VOLUME;
use crate::run::results::LogCapture;
use crate::samples::Collected;
use crate::samples::spec::SAMPLES_PATH;
use crate::source::{GitCache, GitRequest};
use crate::store::{BundleKey, Store};

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

/// Where one pod's containers run: its run directory and volumes, its number, its deadline.
struct Place<'a> {
    pod: &'a Pod,
    volumes: &'a BTreeMap<String, PathBuf>,
    dir: &'a Path,
    n: u64,
    deadline: Instant,
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
            // Local runs have no gateway yet: validation refuses runs with models.
            model_endpoints: BTreeMap::new(),
            daily_budget: Default::default(),
            samples: None,
            usage: None,
        };
        if let Some(Source::Git(git)) = &ev.spec.source {
            obs.source = Some(self.fetch(git).await);
        }
        loop {
            // A slot first, so that `startTime` (set by the plan that starts a pod) and the
            // duration do not count the wait for other runs.
            let permit = self.slots.acquire().await;
            obs.now = now();
            let planned = match lifecycle::plan(&ev, &obs, &Decision::Admit, &self.config) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("crucible: {}: {e}", ev.name_any());
                    return ev;
                }
            };
            let finished = planned.status.phase.is_some_and(Phase::is_finished);
            ev.status = Some(planned.status);
            if finished {
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
                    obs.samples = ran.samples.map(|outcome| {
                        Samples::Done(outcome.map(|samples| {
                            samples.map(|samples| {
                                Box::new(Collected {
                                    samples,
                                    comparison: None,
                                })
                            })
                        }))
                    });
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
            let planned = lifecycle::suite::plan(&s, &children, &now());
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
        let dir = rundir::work_dir(&self.work_root, n, &pod.name_any());
        let spec = pod.spec.clone().unwrap_or_default();
        let deadline = Instant::now()
            + Duration::from_secs(
                u64::try_from(spec.active_deadline_seconds.unwrap_or(600)).unwrap_or(600),
            );
        let start_time = now();
        let mut logs = BTreeMap::new();
        let mut containers = Containers::default();
        let prepared = rundir::prepare_volumes(&dir, &pod, workspace);
        let steps = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (true, c))
            .chain(spec.containers.iter().map(|c| (false, c)));
        for (init, container) in steps {
            let mut status = ContainerStatus {
                name: container.name.clone(),
                image: container.image.clone().unwrap_or_default(),
                ..Default::default()
            };
            let ran = match &prepared {
                Ok(volumes) => {
                    let place = Place {
                        pod: &pod,
                        volumes,
                        dir: &dir,
                        n,
                        deadline,
                    };
                    self.run_container(&place, container, &mut status)
                }
                Err(message) => Err(("CreateContainerError", message.clone())),
            };
            let exit = match ran {
                Ok(exit) => exit,
                Err((reason, message)) => {
                    status.state = Some(pod_status::waiting(reason, message));
                    containers.statuses.push((init, status));
                    break;
                }
            };
            containers.started = true;
            logs.insert(container.name.clone(), exit.log);
            containers.statuses.push((init, status));
            containers.timed_out = exit.timed_out;
            containers.failed = !exit.timed_out && exit.code != 0;
            if exit.timed_out || exit.code != 0 {
                break;
            }
        }
        let samples = match (&self.results, &prepared) {
            (Some(store), Ok(volumes)) if containers.succeeded(&spec) => {
                self.samples(store, volumes, &pod, ev)
            }
            _ => None,
        };
        pod.status = Some(containers.pod_status(&spec, start_time));
        if self.keep {
            eprintln!("crucible: kept {}", dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ran { pod, logs, samples }
    }

    /// Runs one container of the pod at `place` in its sandbox, filling in `status` (its image
    /// and end state). A container that cannot be started gives the kubelet's `waiting` reason
    /// and message.
    fn run_container(
        &self,
        place: &Place<'_>,
        container: &Container,
        status: &mut ContainerStatus,
    ) -> Result<sandbox::Exit, (&'static str, String)> {
        let image = self.images.get(status.image.as_str()).map_err(|e| {
            eprintln!("crucible: {e}");
            ("ErrImageNeverPull", e.to_string())
        })?;
        status.image_id = image.digest.clone();
        let termination_dir = place.dir.join("termination").join(&container.name);
        let step = rundir::mkdir_owned(&termination_dir)
            .and_then(|()| {
                bundle::step(
                    place.pod,
                    container,
                    &image.config,
                    place.volumes,
                    &termination_dir,
                )
            })
            .and_then(|step| {
                // The kubelet mounts an existing, empty file; so does this (rootless runsc
                // could not create one owned by the sandbox user).
                if let Some(file) = &step.termination_file {
                    files::create_file(file, 0o666, b"")?;
                }
                Ok(step)
            })
            .map_err(|message| ("CreateContainerConfigError", message))?;
        let started = now();
        // Unique across concurrent `crucible run`s too: it names the cgroup.
        let id = format!(
            "{}.{}-{}-{}",
            place.pod.name_any(),
            container.name,
            std::process::id(),
            place.n
        );
        let log_file = self
            .keep
            .then(|| place.dir.join(format!("{}.log", container.name)));
        let exit = self
            .isolation
            .run(
                &step,
                &image,
                &place.dir.join(&container.name),
                &id,
                place.deadline,
                log_file.as_deref(),
            )
            .map_err(|e| ("CreateContainerError", e.to_string()))?;
        let message = step
            .termination_file
            .as_deref()
            .and_then(rundir::read_termination_message);
        status.state = Some(pod_status::terminated(Ended {
            code: exit.code,
            oom_killed: exit.oom_killed,
            message,
            started,
            finished: now(),
        }));
        Ok(exit)
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
