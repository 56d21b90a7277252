use super::*;
use crate::crd::Evaluation;
use crate::crd::evaluation::Source;
use crate::crd::evaluation::{EgressRule, NetworkMode, Resources, Sandbox, Scorer};
use crate::labels::{EVALUATION_UID_LABEL, MANAGED_LABEL};
use crate::run::owner::owner;
use crate::run::workspace::desired_workspace;

fn build(spec: &EvaluationSpec, runtime_class: Option<&str>) -> Pod {
    build_with(spec, runtime_class, &Config::default())
}

fn build_with(spec: &EvaluationSpec, runtime_class: Option<&str>, config: &Config) -> Pod {
    let ev = Evaluation::test();
    let owner = owner(&ev).expect("owner");
    let workspace = desired_workspace(spec, &owner, None);
    desired_pod(
        spec,
        &owner,
        &Attempt {
            pod_name: "arith-0123456789",
            attempt_id: "0123456789",
            run_id: "run-0123456789",
            runtime_class,
            timeout_seconds: 600,
            workspace: workspace.as_ref(),
        },
        config,
    )
}

fn env_of(c: &Container) -> BTreeMap<String, String> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn pod_carries_every_sandbox_setting() {
    let pod = build(&Evaluation::test().spec, Some("gvisor"));
    let spec = pod.spec.expect("spec");
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.active_deadline_seconds, Some(600));
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.enable_service_links, Some(false));
    assert_eq!(spec.host_network, Some(false));
    assert_eq!(spec.host_pid, Some(false));
    assert_eq!(spec.host_ipc, Some(false));
    let psc = spec.security_context.expect("pod security context");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65534));
    assert_eq!(psc.run_as_group, Some(65534));
    assert_eq!(
        psc.seccomp_profile.expect("seccomp").type_,
        "RuntimeDefault"
    );
    assert!(spec.init_containers.is_none());
    assert_eq!(spec.containers.len(), 1);
    let c = &spec.containers[0];
    assert_eq!(c.name, EVALUATION_CONTAINER);
    let sc = c
        .security_context
        .clone()
        .expect("container security context");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65534));
    assert_eq!(
        sc.capabilities.expect("caps").drop,
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(sc.seccomp_profile.expect("seccomp").type_, "RuntimeDefault");
    let r = c.resources.clone().expect("resources");
    assert_eq!(r.requests, r.limits, "requests must equal limits");
    let limits = r.limits.expect("limits");
    assert_eq!(limits["cpu"].0, "1");
    assert_eq!(limits["memory"].0, "512Mi");
    assert_eq!(limits["ephemeral-storage"].0, "1Gi");
    assert!(!limits.contains_key("nvidia.com/gpu"));
    assert_eq!(c.termination_message_path.as_deref(), Some(RESULT_PATH));
    assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
    let volumes = spec.volumes.expect("volumes");
    let tmp = volumes
        .iter()
        .find(|v| v.name == "tmp")
        .expect("tmp volume");
    assert_eq!(
        tmp.empty_dir.as_ref().and_then(|e| e.size_limit.clone()),
        Some(Quantity("64Mi".into()))
    );
    let mounts = c.volume_mounts.clone().expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_path == "/tmp" && m.read_only.is_none())
    );
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_path == WORKSPACE_DIR && m.read_only == Some(true))
    );
}

#[test]
fn pod_is_owned_labelled_and_told_who_it_is() {
    let pod = build(&Evaluation::test().spec, Some("gvisor"));
    let owners = pod.metadata.owner_references.clone().expect("owner refs");
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "Evaluation");
    assert_eq!(owners[0].controller, Some(true));
    let labels = pod.metadata.labels.clone().expect("labels");
    assert_eq!(labels[MANAGED_LABEL], "true");
    assert_eq!(labels[RUN_LABEL], "0123456789");
    assert_eq!(labels[RUN_ID_LABEL], "run-0123456789");
    assert_eq!(
        labels[EVALUATION_UID_LABEL],
        "11111111-2222-3333-4444-555555555555"
    );
    let env = env_of(&pod.spec.expect("spec").containers[0]);
    assert_eq!(env["CRUCIBLE_EVALUATION"], "arith");
    assert_eq!(env["CRUCIBLE_NAMESPACE"], "team-a");
    assert_eq!(env["CRUCIBLE_RESULT_PATH"], RESULT_PATH);
}

#[test]
fn unsandboxed_pod_has_no_runtime_class_but_keeps_the_hardening() {
    let pod = build(&Evaluation::test().spec, None);
    let spec = pod.spec.expect("spec");
    assert_eq!(spec.runtime_class_name, None);
    let sc = spec.containers[0].security_context.clone().expect("sc");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
}

#[test]
fn resources_and_gpus_come_from_the_spec() {
    let spec = Evaluation::test()
        .with_spec(|s| {
            s.resources = Some(Resources {
                cpu: Some(Quantity("250m".into())),
                memory: Some(Quantity("1Gi".into())),
                ephemeral_storage: None,
                gpu: Some(1),
            })
        })
        .spec;
    let pod = build(&spec, Some("gvisor"));
    let limits = pod.spec.expect("spec").containers[0]
        .resources
        .clone()
        .and_then(|r| r.limits)
        .expect("limits");
    assert_eq!(limits["cpu"].0, "250m");
    assert_eq!(limits["memory"].0, "1Gi");
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
}

#[test]
fn gpus_are_requested_equal_to_their_limit_in_every_container() {
    let spec = Evaluation::test()
        .with_spec(|s| {
            s.resources = Some(Resources {
                gpu: Some(2),
                ..Default::default()
            });
            s.scorer = Some(Scorer {
                image: "localhost/crucible/python:3.11".into(),
                ..Default::default()
            });
        })
        .spec;
    let pod = build(&spec, Some("gvisor-nvproxy"));
    let spec = pod.spec.expect("spec");
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor-nvproxy"));
    let containers: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .collect();
    assert_eq!(containers.len(), 2, "evaluation and scorer");
    for c in containers {
        let r = c.resources.clone().expect("resources");
        let (requests, limits) = (r.requests.expect("requests"), r.limits.expect("limits"));
        // Kubernetes refuses extended resources whose request differs from the limit.
        assert_eq!(requests["nvidia.com/gpu"].0, "2", "{}", c.name);
        assert_eq!(requests, limits, "{}", c.name);
    }
}

#[test]
fn scorer_runs_after_the_evaluation_and_alone_writes_the_result() {
    let spec = Evaluation::test()
        .with_spec(|s| {
            s.scorer = Some(Scorer {
                image: "localhost/crucible/python:3.11".into(),
                command: Some(vec!["python3".into(), "/workspace/score.py".into()]),
                ..Default::default()
            })
        })
        .spec;
    let pod = build(&spec, Some("gvisor"));
    let spec = pod.spec.expect("spec");
    let init = spec.init_containers.expect("init containers");
    assert_eq!(init[0].name, EVALUATION_CONTAINER);
    assert!(!env_of(&init[0]).contains_key("CRUCIBLE_RESULT_PATH"));
    assert_eq!(init[0].termination_message_path, None);
    let outputs = |c: &Container| {
        c.volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == OUTPUTS_DIR)
            .map(|m| m.read_only)
    };
    assert_eq!(outputs(&init[0]), Some(None), "evaluation writes /outputs");
    let scorer = &spec.containers[0];
    assert_eq!(scorer.name, SCORER_CONTAINER);
    assert_eq!(env_of(scorer)["CRUCIBLE_RESULT_PATH"], RESULT_PATH);
    assert_eq!(outputs(scorer), Some(Some(true)), "scorer reads /outputs");
    let tmp_volume = |c: &Container| {
        c.volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.mount_path == "/tmp")
            .map(|m| (m.name.clone(), m.read_only))
            .collect::<Vec<_>>()
    };
    let (eval_tmp, scorer_tmp) = (tmp_volume(&init[0]), tmp_volume(scorer));
    assert_eq!(eval_tmp.len(), 1, "{eval_tmp:?}");
    assert_eq!(scorer_tmp.len(), 1, "{scorer_tmp:?}");
    assert_ne!(
        eval_tmp[0].0, scorer_tmp[0].0,
        "the scorer has its own /tmp"
    );
    assert_eq!(scorer_tmp[0].1, None, "the scorer's /tmp is writable");
    let volumes = spec.volumes.clone().expect("volumes");
    let scorer_volume = volumes
        .iter()
        .find(|v| v.name == scorer_tmp[0].0)
        .expect("scorer tmp volume");
    assert_eq!(
        scorer_volume
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.clone()),
        Some(Config::default().tmp_size),
        "a bounded emptyDir"
    );
    let names: std::collections::BTreeSet<_> = volumes.iter().map(|v| &v.name).collect();
    assert_eq!(names.len(), volumes.len(), "volume names are unique");
    assert_eq!(
        scorer
            .security_context
            .clone()
            .and_then(|s| s.read_only_root_filesystem),
        Some(true)
    );
}

#[test]
fn an_allowlist_policy_covers_only_its_own_run() {
    let ev = Evaluation::test();
    let np = desired_network_policy(
        &ev.spec,
        &owner(&ev).expect("owner"),
        "arith-sandbox",
        "run-1",
        &[],
    );
    let spec = np.spec.expect("spec");
    assert_eq!(
        spec.policy_types,
        Some(vec!["Ingress".into(), "Egress".into()])
    );
    assert_eq!(spec.ingress, Some(vec![]));
    let selector = spec
        .pod_selector
        .and_then(|s| s.match_labels)
        .expect("selector");
    // A later run (say with network None) is not covered by this run's allowlist.
    assert_eq!(
        selector,
        BTreeMap::from([
            (
                EVALUATION_UID_LABEL.to_string(),
                "11111111-2222-3333-4444-555555555555".to_string()
            ),
            (RUN_ID_LABEL.to_string(), "run-1".to_string()),
        ])
    );
    assert!(np.metadata.owner_references.is_some());
}

#[test]
fn network_policy_allows_only_the_listed_egress() {
    let ev = Evaluation::test().with_spec(|s| {
        s.sandbox = Some(Sandbox {
            network: Some(NetworkMode::Allowlist),
            egress: Some(vec![EgressRule {
                cidr: "203.0.113.0/24".into(),
                ports: Some(vec![443]),
            }]),
            ..Default::default()
        })
    });
    let np = desired_network_policy(&ev.spec, &owner(&ev).expect("owner"), "x", "run-1", &[]);
    let egress = np.spec.and_then(|s| s.egress).expect("egress");
    assert_eq!(egress.len(), 1);
    let peer = &egress[0].to.as_ref().expect("to")[0];
    assert_eq!(
        peer.ip_block.as_ref().map(|b| b.cidr.as_str()),
        Some("203.0.113.0/24")
    );
    let port = &egress[0].ports.as_ref().expect("ports")[0];
    assert_eq!(port.port, Some(IntOrString::Int(443)));
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
}

/// The forbidden ranges (the controller's defaults: link-local, cloud metadata) are excepted
/// from an entry around them, so `0.0.0.0/0` does not reach 169.254.169.254.
#[test]
fn network_policy_excepts_the_forbidden_ranges() {
    let ev = Evaluation::test().with_spec(|s| {
        s.sandbox = Some(Sandbox {
            network: Some(NetworkMode::Allowlist),
            egress: Some(vec![
                EgressRule {
                    cidr: "0.0.0.0/0".into(),
                    ports: None,
                },
                EgressRule {
                    cidr: "::/0".into(),
                    ports: None,
                },
            ]),
            ..Default::default()
        })
    });
    let config = Config::default();
    let np = desired_network_policy(
        &ev.spec,
        &owner(&ev).expect("owner"),
        "x",
        "run-1",
        &config.forbidden_egress,
    );
    let egress = np.spec.and_then(|s| s.egress).expect("egress");
    let excepts: Vec<Option<Vec<String>>> = egress
        .iter()
        .map(|rule| {
            rule.to.as_ref().expect("to")[0]
                .ip_block
                .clone()
                .expect("ipBlock")
                .except
        })
        .collect();
    assert_eq!(
        excepts,
        [
            Some(vec!["169.254.0.0/16".to_string()]),
            Some(vec![
                "fe80::/10".to_string(),
                "fd00:ec2::254/128".to_string()
            ]),
        ]
    );
}

#[test]
fn the_workspace_is_mounted_read_only_with_each_file_at_its_path() {
    let ev = Evaluation::test().with_spec(|s| {
        s.source = Some(Source::Inline(crate::crd::evaluation::InlineSource {
            files: [
                ("eval.py".to_string(), "a".to_string()),
                ("lib/util.py".to_string(), "b".to_string()),
            ]
            .into(),
        }))
    });
    let workspace =
        desired_workspace(&ev.spec, &owner(&ev).expect("owner"), None).expect("workspace");
    let pod = build(&ev.spec, Some("gvisor"));
    let volume = pod
        .spec
        .and_then(|s| s.volumes)
        .into_iter()
        .flatten()
        .find(|v| v.name == "workspace")
        .and_then(|v| v.config_map)
        .expect("workspace volume");
    assert_eq!(Some(volume.name), workspace.config_map.metadata.name);
    assert_eq!(volume.default_mode, Some(0o444));
    assert_eq!(volume.items, Some(workspace.items));
}

/// docs/images.md: a private registry is reached through the namespace's `default`
/// ServiceAccount, whose `imagePullSecrets` the API server copies into a pod that names
/// neither; both containers ask for their image only when the node lacks it.
#[test]
fn pod_uses_the_namespace_default_service_account() {
    let spec = Evaluation::test()
        .with_spec(|s| {
            s.scorer = Some(Scorer {
                image: "registry.example.com/team-a/scorer:1".into(),
                ..Default::default()
            })
        })
        .spec;
    let pod = build(&spec, Some("gvisor")).spec.expect("spec");
    assert_eq!(pod.service_account_name, None);
    assert_eq!(pod.service_account, None);
    assert_eq!(pod.image_pull_secrets, None);
    let containers = pod.init_containers.iter().flatten().chain(&pod.containers);
    let policies: Vec<_> = containers
        .map(|c| (c.name.as_str(), c.image_pull_policy.as_deref()))
        .collect();
    assert_eq!(
        policies,
        [
            (EVALUATION_CONTAINER, Some("IfNotPresent")),
            (SCORER_CONTAINER, Some("IfNotPresent"))
        ]
    );
}

#[test]
fn only_the_reporting_step_can_write_samples_and_every_step_knows_epochs_and_seed() {
    let mounts_samples = |c: &Container| {
        c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == crate::samples::spec::SAMPLES_DIR && m.read_only.is_none())
    };
    let alone = Evaluation::test().with_spec(|s| s.epochs = Some(3)).spec;
    let pod = build(&alone, Some("gvisor"));
    let spec = pod.spec.expect("spec");
    let evaluation = &spec.containers[0];
    let env = env_of(evaluation);
    assert_eq!(
        env["CRUCIBLE_SAMPLES_PATH"],
        crate::samples::spec::SAMPLES_PATH
    );
    assert_eq!(env["CRUCIBLE_EPOCHS"], "3");
    let seed = crate::samples::spec::seed(&alone, "run-0123456789").to_string();
    assert_eq!(env["CRUCIBLE_SEED"], seed, "derived from the run id");
    assert!(mounts_samples(evaluation));
    let samples = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "samples")
        .expect("samples volume");
    assert!(
        samples
            .empty_dir
            .as_ref()
            .is_some_and(|e| e.size_limit.is_some())
    );

    let scored = Evaluation::test()
        .with_spec(|s| {
            s.seed = Some(42);
            s.scorer = Some(Scorer {
                image: "localhost/crucible/python:3.11".into(),
                ..Default::default()
            });
        })
        .spec;
    let pod = build(&scored, Some("gvisor"));
    let spec = pod.spec.expect("spec");
    let evaluated = &spec.init_containers.as_ref().expect("init")[0];
    let scorer = &spec.containers[0];
    // A forged samples file by the evaluated code has nowhere to go.
    assert!(!mounts_samples(evaluated));
    assert!(!env_of(evaluated).contains_key("CRUCIBLE_SAMPLES_PATH"));
    assert_eq!(env_of(evaluated)["CRUCIBLE_SEED"], "42");
    assert_eq!(env_of(evaluated)["CRUCIBLE_EPOCHS"], "1");
    assert!(mounts_samples(scorer));
    assert_eq!(
        env_of(scorer)["CRUCIBLE_SAMPLES_PATH"],
        crate::samples::spec::SAMPLES_PATH
    );
    assert_eq!(env_of(scorer)["CRUCIBLE_SEED"], "42");
}

/// With a results store, the pod's first init container is the samples container: a native
/// sidecar (stopped by the kubelet after the steps) running our binary, hardened like the
/// steps, reading the samples volume only, with no environment at all; the run's admission
/// does not count it. Without a store there is none.
#[test]
fn with_a_results_store_the_pod_carries_a_hardened_samples_sidecar() {
    let config = Config {
        samples: Some(SamplesContainer {
            image: "localhost/crucible/controller:dev".into(),
            max_output: 1234,
        }),
        ..Config::default()
    };
    for spec in [
        Evaluation::test().spec,
        Evaluation::test()
            .with_spec(|s| {
                s.scorer = Some(Scorer {
                    image: "scorer:1".into(),
                    ..Default::default()
                })
            })
            .spec,
    ] {
        let pod = build_with(&spec, Some("gvisor"), &config);
        let inits = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.clone())
            .expect("init containers");
        let sidecar = &inits[0];
        assert_eq!(sidecar.name, SAMPLES_CONTAINER);
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            sidecar.image.as_deref(),
            Some("localhost/crucible/controller:dev")
        );
        assert_eq!(
            sidecar.args,
            Some(vec![
                "samples-emit".into(),
                "--max-output=1234".into(),
                format!("--max-bytes={}", crate::config::SampleLimits::BYTES),
            ])
        );
        assert_eq!(sidecar.env, None, "nothing of the run, no secret");
        let resources = sidecar.resources.clone().expect("resources");
        assert_eq!(
            resources.requests, resources.limits,
            "requests = limits: the pod stays Guaranteed"
        );
        assert_eq!(sidecar.security_context, Some(container_security()));
        let mounts = sidecar.volume_mounts.clone().expect("mounts");
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].name, SAMPLES_VOLUME);
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(
            crate::run::liveness::request_of(&pod),
            crate::run::liveness::request_of(&build(&spec, Some("gvisor"))),
            "the run's admission does not count it"
        );
    }
    let without = build(&Evaluation::test().spec, Some("gvisor"));
    assert!(without.spec.expect("spec").init_containers.is_none());
}

#[test]
fn a_pod_with_a_network_starts_with_the_network_gate_and_only_then_the_rest() {
    let gate = NetworkGate {
        image: "localhost/crucible/controller:dev".into(),
        target: "10.88.0.1:40123".parse().expect("addr"),
        timeout: std::time::Duration::from_secs(60),
    };
    let config = Config {
        network_gate: Some(gate.clone()),
        samples: Some(SamplesContainer {
            image: gate.image.clone(),
            max_output: 1234,
        }),
        ..Config::default()
    };
    let allowlist = Evaluation::test()
        .with_spec(|s| {
            s.sandbox = Some(Sandbox {
                network: Some(NetworkMode::Allowlist),
                ..Default::default()
            });
            s.scorer = Some(Scorer {
                image: "scorer:1".into(),
                ..Default::default()
            });
        })
        .spec;
    let models = Evaluation::test()
        .with_spec(|s| {
            s.models = Some(vec![crate::crd::model::ModelRef {
                name: "target".into(),
                endpoint: "openai".into(),
                model: "gpt-4.1-mini".into(),
            }])
        })
        .spec;
    for spec in [&allowlist, &models] {
        let pod = build_with(spec, Some("gvisor-net"), &config);
        let inits = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.clone())
            .expect("init containers");
        let names: Vec<&str> = inits.iter().map(|c| c.name.as_str()).collect();
        let expected: &[&str] = if spec.scorer.is_some() {
            &[
                network_gate::CONTAINER,
                SAMPLES_CONTAINER,
                EVALUATION_CONTAINER,
            ]
        } else {
            &[network_gate::CONTAINER, SAMPLES_CONTAINER]
        };
        assert_eq!(
            names, expected,
            "the gate first, then the sidecar and the steps"
        );
        let first = &inits[0];
        assert_eq!(
            first.restart_policy, None,
            "an init container that must end"
        );
        assert_eq!(first.image.as_deref(), Some(gate.image.as_str()));
        assert_eq!(
            first.args,
            Some(vec![
                "network-gate".into(),
                "--target=10.88.0.1:40123".into(),
                "--timeout=60s".into(),
            ])
        );
        assert_eq!(first.env, None, "nothing of the run, no secret");
        assert_eq!(first.security_context, Some(container_security()));
        let resources = first.resources.clone().expect("resources");
        assert_eq!(resources.requests, resources.limits);
        assert_eq!(
            crate::run::liveness::request_of(&pod),
            crate::run::liveness::request_of(&build(spec, Some("gvisor-net"))),
            "the run's admission does not count it"
        );
    }
    // No network interface, nothing to wait for; no gate configured, no gate.
    let none = build_with(&Evaluation::test().spec, Some("gvisor"), &config);
    let inits = none.spec.and_then(|s| s.init_containers).expect("sidecar");
    assert!(inits.iter().all(|c| c.name != network_gate::CONTAINER));
    let ungated = build(&allowlist, Some("gvisor-net"));
    let inits = ungated
        .spec
        .and_then(|s| s.init_containers)
        .expect("scorer's");
    assert!(inits.iter().all(|c| c.name != network_gate::CONTAINER));
}
