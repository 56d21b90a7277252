//! Builds the children of a run: the sandbox pod and, for `network: Allowlist`, its own
//! NetworkPolicy (`network: None` pods are isolated by the namespace's deny-all policy, which
//! the Evaluation controller's `sandbox_policy` keeps; the workspace ConfigMap is
//! [`super::workspace`]'s). Pure and total: every sandbox rule of docs/sandbox.md
//! is set here, and the unit tests below assert each one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, Pod,
    PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::cidr::{self, Cidr};
use crate::config::{Config, NetworkGate, SamplesContainer};
use crate::crd::evaluation::{EvaluationSpec, NetworkMode};
use crate::labels::{RUN_ID_LABEL, RUN_LABEL};
use crate::network_gate;
use crate::run::liveness::GPU_RESOURCE;
use crate::run::owner::Owner;
use crate::run::workspace::Workspace;
use crate::samples;

/// The unprivileged user and group every sandbox runs as ("nobody").
pub const SANDBOX_UID: i64 = 65534;
/// Name of the container that runs the evaluated code.
pub const EVALUATION_CONTAINER: &str = "evaluation";
/// Name of the trusted scorer container.
pub const SCORER_CONTAINER: &str = "scorer";
/// Termination-message path, exported as `CRUCIBLE_RESULT_PATH`.
pub const RESULT_PATH: &str = "/crucible/result.json";
/// Mount point of the source files.
pub const WORKSPACE_DIR: &str = "/workspace";
/// Where the evaluated code leaves output for the scorer.
pub const OUTPUTS_DIR: &str = "/outputs";
/// Seconds a cancelled or superseded sandbox gets to exit: enough to flush output, short enough
/// that cancel takes effect "within seconds".
const TERMINATION_GRACE_SECONDS: i64 = 5;
/// The evaluation container's writable /tmp.
const TMP_VOLUME: &str = "tmp";
/// The scorer's own writable /tmp, never shared with the evaluated code.
const SCORER_TMP_VOLUME: &str = "scorer-tmp";
/// Where the reporting step (the scorer when there is one) writes its samples.
pub const SAMPLES_VOLUME: &str = "samples";
pub use crate::samples::spec::SAMPLES_CONTAINER;
/// CPU of the samples container (request and limit).
const SAMPLES_CPU: &str = "20m";
/// CPU of the network gate (request and limit): a connect every 100 ms.
const GATE_CPU: &str = "20m";
/// Memory of the network gate (request and limit): our binary, no async runtime.
const GATE_MEMORY: &str = "32Mi";
/// Memory of the samples container (request and limit): our binary and a zstd stream.
const SAMPLES_MEMORY: &str = "64Mi";

/// One attempt's pod: what it is called and how it is sandboxed.
#[derive(Clone, Debug)]
pub struct Attempt<'a> {
    /// Pod name.
    pub pod_name: &'a str,
    /// Attempt id, the `crucible.dev/run` label.
    pub attempt_id: &'a str,
    /// Run id, the `crucible.dev/run-id` label: the pod holds this run's admission.
    pub run_id: &'a str,
    /// RuntimeClass; `None` only when running unsandboxed was explicitly allowed.
    pub runtime_class: Option<&'a str>,
    /// `activeDeadlineSeconds`.
    pub timeout_seconds: i64,
    /// The workspace, when the spec has a source.
    pub workspace: Option<&'a Workspace>,
}

/// The sandbox pod of one attempt.
pub fn desired_pod(
    spec: &EvaluationSpec,
    owner: &Owner,
    attempt: &Attempt<'_>,
    config: &Config,
) -> Pod {
    let resources = resources(spec, config);
    let base_env = vec![
        env("CRUCIBLE_EVALUATION", &owner.name),
        env("CRUCIBLE_NAMESPACE", &owner.namespace),
    ];
    // Each container gets its own /tmp first, then these.
    let mut shared_mounts = Vec::new();
    let mut volumes = vec![
        scratch_volume(TMP_VOLUME, config),
        scratch_volume(SAMPLES_VOLUME, config),
    ];
    // Epochs and seed steer the evaluated code; only the reporting step may write samples.
    let run_env: Vec<EnvVar> = samples::spec::env(spec, attempt.run_id)
        .iter()
        .map(|(name, value)| env(name, value))
        .collect();
    let reporting_env = [
        env("CRUCIBLE_RESULT_PATH", RESULT_PATH),
        env("CRUCIBLE_SAMPLES_PATH", samples::spec::SAMPLES_PATH),
    ];
    let samples_mount = VolumeMount {
        name: SAMPLES_VOLUME.into(),
        mount_path: samples::spec::SAMPLES_DIR.into(),
        ..Default::default()
    };
    if let Some(workspace) = attempt.workspace {
        shared_mounts.push(read_only("workspace", WORKSPACE_DIR));
        volumes.push(Volume {
            name: "workspace".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: workspace
                    .config_map
                    .metadata
                    .name
                    .clone()
                    .unwrap_or_default(),
                items: Some(workspace.items.clone()),
                default_mode: Some(0o444),
                optional: Some(false),
            }),
            ..Default::default()
        });
    }
    let mut eval_mounts = vec![tmp_mount(TMP_VOLUME)];
    eval_mounts.extend(shared_mounts.iter().cloned());
    let working_dir = attempt.workspace.map(|_| WORKSPACE_DIR.to_string());
    let mut evaluation = Container {
        name: EVALUATION_CONTAINER.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: spec.command.clone(),
        args: spec.args.clone(),
        working_dir: working_dir.clone(),
        resources: Some(resources.clone()),
        security_context: Some(container_security()),
        termination_message_policy: Some("File".into()),
        ..Default::default()
    };
    let (init_containers, containers) = match &spec.scorer {
        None => {
            evaluation.env = Some(chain_env(
                &base_env,
                &[&run_env[..], &reporting_env[..]].concat(),
                spec.env.as_deref(),
            ));
            evaluation.termination_message_path = Some(RESULT_PATH.into());
            eval_mounts.push(samples_mount);
            evaluation.volume_mounts = Some(eval_mounts);
            (None, vec![evaluation])
        }
        Some(scorer) => {
            volumes.push(scratch_volume("outputs", config));
            // The trusted scorer must not read what the evaluated code planted in /tmp.
            volumes.push(scratch_volume(SCORER_TMP_VOLUME, config));
            let outputs_env = env("CRUCIBLE_OUTPUTS", OUTPUTS_DIR);
            evaluation.env = Some(chain_env(
                &base_env,
                &[&run_env[..], std::slice::from_ref(&outputs_env)].concat(),
                spec.env.as_deref(),
            ));
            eval_mounts.push(VolumeMount {
                name: "outputs".into(),
                mount_path: OUTPUTS_DIR.into(),
                ..Default::default()
            });
            evaluation.volume_mounts = Some(eval_mounts);
            let mut scorer_mounts = vec![tmp_mount(SCORER_TMP_VOLUME)];
            scorer_mounts.extend(shared_mounts);
            scorer_mounts.push(read_only("outputs", OUTPUTS_DIR));
            scorer_mounts.push(samples_mount);
            let scorer = Container {
                name: SCORER_CONTAINER.into(),
                image: Some(scorer.image.clone()),
                image_pull_policy: Some("IfNotPresent".into()),
                command: scorer.command.clone(),
                args: scorer.args.clone(),
                working_dir,
                env: Some(chain_env(
                    &base_env,
                    &[&run_env[..], &[outputs_env], &reporting_env[..]].concat(),
                    scorer.env.as_deref(),
                )),
                resources: Some(resources),
                security_context: Some(container_security()),
                termination_message_path: Some(RESULT_PATH.into()),
                termination_message_policy: Some("File".into()),
                volume_mounts: Some(scorer_mounts),
                ..Default::default()
            };
            (Some(vec![evaluation]), vec![scorer])
        }
    };
    // The samples container comes first among the steps, as a native sidecar: it runs beside
    // them and is stopped after them. Before everything, the network gate: no container of
    // ours or the user's starts before the pod's NetworkPolicy is in force.
    let gate = config
        .network_gate
        .as_ref()
        .filter(|_| has_network(spec))
        .map(gate_container);
    let sidecar = config
        .samples
        .as_ref()
        .map(|sidecar| samples_container(sidecar, config.sample_limits.max_bytes));
    let init_containers: Vec<Container> = gate
        .into_iter()
        .chain(sidecar)
        .chain(init_containers.into_iter().flatten())
        .collect();
    let init_containers = (!init_containers.is_empty()).then_some(init_containers);
    Pod {
        metadata: owner.meta(
            attempt.pod_name,
            &[
                (RUN_LABEL, attempt.attempt_id),
                (RUN_ID_LABEL, attempt.run_id),
            ],
        ),
        spec: Some(PodSpec {
            runtime_class_name: attempt.runtime_class.map(str::to_string),
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(attempt.timeout_seconds),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(SANDBOX_UID),
                run_as_group: Some(SANDBOX_UID),
                seccomp_profile: Some(runtime_default()),
                ..Default::default()
            }),
            init_containers,
            containers,
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    }
}

/// Whether the pod of `spec` has a network interface: `Allowlist`, or models (a run with models
/// reaches the gateway).
pub fn has_network(spec: &EvaluationSpec) -> bool {
    let allowlist = spec.sandbox.as_ref().and_then(|s| s.network) == Some(NetworkMode::Allowlist);
    allowlist || spec.models.as_ref().is_some_and(|m| !m.is_empty())
}

/// A run's own NetworkPolicy (an `Allowlist` run's, and the sandbox canary's): no ingress,
/// egress only to the allowlist (none without one), never to a `forbidden` range: one inside
/// an entry is excepted from it, an entry inside one allows nothing (validation refuses it).
/// It selects the pods of run `run_id` only, so that a later run of the Evaluation with
/// `network: None` is never covered by an allowlist it no longer has (policies add up).
pub fn desired_network_policy(
    spec: &EvaluationSpec,
    owner: &Owner,
    name: &str,
    run_id: &str,
    forbidden: &[Cidr],
) -> NetworkPolicy {
    let rules = spec
        .sandbox
        .as_ref()
        .and_then(|s| s.egress.clone())
        .unwrap_or_default();
    let egress = rules
        .into_iter()
        .filter_map(|rule| {
            let entry: Cidr = rule.cidr.parse().ok()?;
            let except = cidr::carve(&entry, forbidden).ok()?;
            Some((rule, except))
        })
        .map(|(rule, except)| NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: rule.cidr,
                    except: (!except.is_empty())
                        .then(|| except.iter().map(ToString::to_string).collect()),
                }),
                ..Default::default()
            }]),
            ports: rule.ports.map(|ports| {
                ports
                    .into_iter()
                    .map(|p| NetworkPolicyPort {
                        protocol: Some("TCP".into()),
                        port: Some(IntOrString::Int(p)),
                        end_port: None,
                    })
                    .collect()
            }),
        })
        .collect();
    run_policy(owner, name, run_id, egress)
}

/// The NetworkPolicy `name` of run `run_id`: its pods only, no ingress, egress only by `egress`
/// (an Allowlist run's entries, or a run with models' route to the gateway).
pub(crate) fn run_policy(
    owner: &Owner,
    name: &str,
    run_id: &str,
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: owner.meta(name, &[]),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(owner.run_selector(run_id)),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![]),
            egress: Some(egress),
        }),
    }
}

fn resources(spec: &EvaluationSpec, config: &Config) -> ResourceRequirements {
    let r = spec.resources.clone().unwrap_or_default();
    let mut amounts = BTreeMap::from([
        (
            "cpu".to_string(),
            r.cpu.unwrap_or_else(|| config.default_cpu.clone()),
        ),
        (
            "memory".to_string(),
            r.memory.unwrap_or_else(|| config.default_memory.clone()),
        ),
        (
            "ephemeral-storage".to_string(),
            r.ephemeral_storage
                .unwrap_or_else(|| config.default_ephemeral_storage.clone()),
        ),
    ]);
    if let Some(gpu) = r.gpu.filter(|g| *g > 0) {
        amounts.insert(GPU_RESOURCE.to_string(), Quantity(gpu.to_string()));
    }
    // Requests equal limits: Guaranteed QoS, and admission can count exactly what a run uses.
    ResourceRequirements {
        requests: Some(amounts.clone()),
        limits: Some(amounts),
        ..Default::default()
    }
}

/// The pod's `samples` container: our binary from the controller's image, the samples volume
/// read-only, no token, no network (the pod has none), small fixed resources that no quota
/// counts (the run's admission counts its own steps). The kubelet stops it once the steps have
/// ended; it then prints the samples file on its log (`transfer::emit`).
/// Requests = limits, as every container of the pod: the pod stays Guaranteed.
fn fixed_resources(cpu: &str, memory: &str) -> ResourceRequirements {
    let amounts = BTreeMap::from([
        ("cpu".to_string(), Quantity(cpu.into())),
        ("memory".to_string(), Quantity(memory.into())),
    ]);
    ResourceRequirements {
        requests: Some(amounts.clone()),
        limits: Some(amounts),
        ..Default::default()
    }
}

/// The trusted `network-gate` init container ([`crate::network_gate`]): its failure message
/// is its termination message.
fn gate_container(gate: &NetworkGate) -> Container {
    Container {
        name: network_gate::CONTAINER.into(),
        image: Some(gate.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec![
            network_gate::CONTAINER.into(),
            format!("--target={}", gate.target),
            format!("--timeout={}s", gate.timeout.as_secs().max(1)),
        ]),
        resources: Some(fixed_resources(GATE_CPU, GATE_MEMORY)),
        security_context: Some(container_security()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

fn samples_container(sidecar: &SamplesContainer, max_bytes: u64) -> Container {
    Container {
        name: SAMPLES_CONTAINER.into(),
        image: Some(sidecar.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec![
            "samples-emit".into(),
            format!("--max-output={}", sidecar.max_output),
            format!("--max-bytes={max_bytes}"),
        ]),
        restart_policy: Some("Always".into()),
        // gVisor runs the pod in one sandbox cgroup, so once the steps have ended the sidecar
        // has the pod's CPU for its work.
        resources: Some(fixed_resources(SAMPLES_CPU, SAMPLES_MEMORY)),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![read_only(SAMPLES_VOLUME, samples::spec::SAMPLES_DIR)]),
        ..Default::default()
    }
}

fn container_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(SANDBOX_UID),
        run_as_group: Some(SANDBOX_UID),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// A writable emptyDir of `--tmp-size`.
fn scratch_volume(name: &str, config: &Config) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(config.tmp_size.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn tmp_mount(volume: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }
}

fn read_only(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The user's variables first, then the controller's, so the controller's always win.
fn chain_env(base: &[EnvVar], extra: &[EnvVar], user: Option<&[EnvVar]>) -> Vec<EnvVar> {
    user.unwrap_or_default()
        .iter()
        .chain(base)
        .chain(extra)
        .cloned()
        .collect()
}

#[cfg(test)]
#[path = "pod_tests.rs"]
mod tests;
