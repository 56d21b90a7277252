//! Starting and finishing a run.

use super::test_support::*;
use super::*;
use crate::crd::conditions::{self};
use crate::crd::evaluation::{Scorer, Source};
use crate::fixtures::{at, mk_container, mk_pod, running, terminated};
use crate::run::pod::{SAMPLES_CONTAINER, SCORER_CONTAINER};
use crate::run::results::LogScanner;

fn kinds(p: &Plan) -> Vec<&'static str> {
    p.create
        .iter()
        .map(|c| match c {
            Child::SandboxPolicy => "SandboxPolicy",
            Child::NetworkPolicy(_) => "NetworkPolicy",
            Child::ConfigMap(_) => "ConfigMap",
            Child::Pod(_) => "Pod",
        })
        .collect()
}

#[test]
fn first_reconcile_puts_the_namespace_policy_then_the_workspace_then_the_pod() {
    let ev = Evaluation::test();
    let p = run(&ev, &Observed::empty());
    // network None: the namespace's deny-all policy, no NetworkPolicy of its own.
    assert_eq!(kinds(&p), ["SandboxPolicy", "ConfigMap", "Pod"]);
    assert_eq!(p.status.phase, Some(Phase::Pending));
    assert_eq!(p.status.attempts, Some(1));
    assert_eq!(p.status.observed_generation, Some(1));
    assert_eq!(p.status.start_time, Some(at(0)));
    assert_eq!(
        p.status.pod_name.as_deref(),
        pod_of(&p).metadata.name.as_deref()
    );
    assert_eq!(p.status.sandbox.as_ref().map(|s| s.sandboxed), Some(true));
    assert_eq!(condition(&p, conditions::RECONCILING).0, "True");
    assert_eq!(condition(&p, conditions::ADMITTED).0, "True");
    assert_eq!(condition(&p, conditions::READY).0, "False");
    assert_eq!(condition(&p, conditions::STALLED).0, "False");
    assert_eq!(condition(&p, conditions::PASSED).0, "Unknown");
    assert_eq!(
        p.notes.iter().map(|n| n.reason).collect::<Vec<_>>(),
        ["Admitted"]
    );
    assert!(p.delete.is_empty());
}

#[test]
fn an_allowlist_run_brings_its_own_policy_before_the_pod() {
    let ev = Evaluation::test().with_spec(|s| {
        s.sandbox = Some(crate::crd::evaluation::Sandbox {
            network: Some(crate::crd::evaluation::NetworkMode::Allowlist),
            egress: Some(vec![crate::crd::evaluation::EgressRule {
                cidr: "10.88.0.1/32".into(),
                ports: Some(vec![8080]),
            }]),
            ..Default::default()
        })
    });
    let p = run(&ev, &Observed::empty());
    assert_eq!(kinds(&p), ["NetworkPolicy", "ConfigMap", "Pod"]);
    let Some(Child::NetworkPolicy(np)) = p.create.first() else {
        panic!("a NetworkPolicy first");
    };
    assert_eq!(np.metadata.name.as_deref(), Some("arith-sandbox"));
}

#[test]
fn the_run_records_the_digest_of_its_files_and_mounts_the_configmap_named_by_it() {
    let ev = Evaluation::test();
    let p = run(&ev, &Observed::empty());
    let cm = p
        .create
        .iter()
        .find_map(|c| match c {
            Child::ConfigMap(cm) => Some(cm.clone()),
            _ => None,
        })
        .expect("workspace");
    let digest = p
        .status
        .provenance
        .as_ref()
        .and_then(|p| p.source_digest.clone())
        .expect("sourceDigest");
    assert_eq!(
        digest,
        crate::run::workspace::content_digest(&cm),
        "status names the content"
    );
    let mounted = pod_of(&p)
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find_map(|v| v.config_map.as_ref()))
        .map(|c| c.name.clone());
    assert_eq!(mounted, cm.metadata.name);
    // Without a source: neither a ConfigMap nor a digest.
    let bare = Evaluation::test().with_spec(|s| s.source = None);
    let p = run(&bare, &Observed::empty());
    assert_eq!(kinds(&p), ["SandboxPolicy", "Pod"]);
    assert_eq!(p.status.provenance.and_then(|p| p.source_digest), None);
}

#[test]
fn a_new_run_with_other_files_removes_the_previous_runs_configmap() {
    let (ev, _) = started();
    let old = ev
        .status
        .as_ref()
        .and_then(|s| s.provenance.clone())
        .and_then(|p| p.source_digest)
        .expect("digest");
    let old_name = crate::run::workspace::workspace_name(
        "arith",
        "11111111-2222-3333-4444-555555555555",
        &old,
    );
    let edited = ev.clone().at_generation(2).with_spec(|s| {
        s.source = Some(Source::Inline(crate::crd::evaluation::InlineSource {
            files: [("eval.py".to_string(), "print(2)".to_string())].into(),
        }))
    });
    let p = run(&edited, &Observed::empty());
    assert!(
        p.delete.contains(&(ChildKind::ConfigMap, old_name.clone())),
        "{:?}",
        p.delete
    );
    // Same files (a rerun): kept and reused.
    let rerun = ev.clone().annotated(crate::labels::RERUN_ANNOTATION, "1");
    let p = run(&rerun, &Observed::empty());
    assert!(
        !p.delete.iter().any(|(k, _)| *k == ChildKind::ConfigMap),
        "{:?}",
        p.delete
    );
    // A suite's child never deletes the shared one.
    let child = Evaluation::test().child_of("s", "a", "uid-a");
    let child = after(&child, &run(&child, &Observed::empty()));
    let edited = child.at_generation(2).with_spec(|s| s.source = None);
    let p = run(&edited, &Observed::empty());
    assert!(
        !p.delete.iter().any(|(k, _)| *k == ChildKind::ConfigMap),
        "{:?}",
        p.delete
    );
}

#[test]
fn invalid_spec_creates_nothing_and_stalls() {
    let ev = Evaluation::test().with_spec(|s| s.timeout = Some("0s".into()));
    let p = run(&ev, &Observed::empty());
    assert!(p.create.is_empty());
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.status.reason.as_deref(), Some("InvalidSpec"));
    assert_eq!(
        condition(&p, conditions::STALLED),
        ("True".into(), "InvalidSpec".into())
    );
    assert_eq!(condition(&p, conditions::READY).0, "False");
    assert_eq!(condition(&p, conditions::RECONCILING).0, "False");
    assert_eq!(p.notes[0].reason, "InvalidSpec");
    assert_eq!(p.notes[0].severity, Severity::Warning);
}

/// Until the gateway is wired, a run with models must not start without them.
#[test]
fn a_run_with_models_creates_nothing_and_says_why() {
    let ev = Evaluation::test().with_spec(|s| {
        s.models = Some(vec![crate::crd::model::ModelRef {
            name: "target".into(),
            endpoint: "openai".into(),
            model: "gpt-4.1-mini".into(),
        }])
    });
    let p = run(&ev, &Observed::empty());
    assert!(p.create.is_empty(), "{:?}", kinds(&p));
    assert_eq!(p.status.reason.as_deref(), Some("InvalidSpec"));
    let message = p.status.message.as_deref().unwrap_or_default();
    assert!(message.contains("spec.models"), "{message}");
}

#[test]
fn missing_runtime_class_fails_closed() {
    let obs = Observed {
        runtime_class: Some(RuntimeClassCheck::Missing),
        ..Observed::empty()
    };
    let p = run(&Evaluation::test(), &obs);
    assert!(p.create.is_empty(), "no children without the sandbox");
    assert_eq!(p.status.reason.as_deref(), Some("SandboxUnavailable"));
    assert_eq!(
        condition(&p, conditions::STALLED),
        ("True".into(), "SandboxUnavailable".into())
    );
    assert_eq!(p.notes[0].reason, "SandboxUnavailable");
}

#[test]
fn allow_unsandboxed_runs_without_runtime_class_and_says_so() {
    let obs = Observed {
        runtime_class: Some(RuntimeClassCheck::Missing),
        ..Observed::empty()
    };
    let config = Config {
        allow_unsandboxed: true,
        ..Config::default()
    };
    let p = plan(&Evaluation::test(), &obs, &Decision::Admit, &config).expect("plan");
    assert_eq!(
        pod_of(&p)
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.clone()),
        None
    );
    assert_eq!(p.status.sandbox.as_ref().map(|s| s.sandboxed), Some(false));
    // Said by the Admitted Event itself, as a Warning: no extra Event.
    assert_eq!(p.notes.len(), 1, "{:?}", p.notes);
    assert_eq!(
        (p.notes[0].reason, p.notes[0].severity),
        ("Admitted", Severity::Warning)
    );
    assert!(p.notes[0].message.contains("WITHOUT gVisor"));
}

/// Between two containers (the evaluation finished, the next one not started yet) the pod
/// reads as waiting: a run that was Running stays Running and announces nothing, instead of
/// going back to Pending with a second `Admitted` Event for the same pod (seen on 1.37 after a
/// leader failover).
#[test]
fn a_running_run_whose_pod_waits_between_containers_stays_running() {
    let (ev, name) = started();
    let running_pod = mk_pod(
        &name,
        "Running",
        vec![mk_container("evaluation", running())],
    );
    let ran = after(&ev, &run(&ev, &with_pods(vec![running_pod])));
    assert_eq!(
        ran.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Running)
    );
    let between = mk_pod(
        &name,
        "Pending",
        vec![mk_container(
            "evaluation",
            crate::fixtures::waiting("PodInitializing"),
        )],
    );
    let obs = Observed {
        now: at(31),
        ..with_pods(vec![between])
    };
    let p = run(&ran, &obs);
    assert_eq!(p.status.phase, Some(Phase::Running));
    assert!(
        p.notes.iter().all(|n| n.reason != "Admitted"),
        "{:?}",
        p.notes
    );
}

#[test]
fn running_pod_moves_to_running_and_requeues_before_the_deadline() {
    let (ev, name) = started();
    let obs = Observed {
        now: at(30),
        ..with_pods(vec![mk_pod(
            &name,
            "Running",
            vec![mk_container("evaluation", running())],
        )])
    };
    let p = run(&ev, &obs);
    assert_eq!(p.status.phase, Some(Phase::Running));
    assert_eq!(condition(&p, conditions::RUNNING).0, "True");
    assert_eq!(p.notes[0].reason, "Started");
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(p.requeue, Requeue::After(MAX_RESYNC));
    let short = ev.clone().with_spec(|s| s.timeout = Some("1m".into()));
    // The spec changed: a new run. Use a fresh one with a short timeout instead.
    let short_started = after(&short, &run(&short, &Observed::empty()));
    let name = short_started
        .status
        .as_ref()
        .and_then(|s| s.pod_name.clone())
        .expect("pod");
    let obs = Observed {
        now: at(30),
        ..with_pods(vec![mk_pod(
            &name,
            "Running",
            vec![mk_container("evaluation", running())],
        )])
    };
    assert_eq!(
        run(&short_started, &obs).requeue,
        Requeue::After(Duration::from_secs(60 + 15 - 30))
    );
}

#[test]
fn finished_pod_succeeds_records_everything_then_deletes_the_pod() {
    let (ev, name) = started();
    let obs = Observed {
        now: at(12),
        logs: log("working\nall done\n"),
        ..with_pods(vec![succeeded_pod(
            &name,
            r#"{"score": 0.93, "metrics": {"n": 100}}"#,
        )])
    };
    let p = run(&ev, &obs);
    let s = &p.status;
    assert_eq!(s.phase, Some(Phase::Succeeded));
    assert_eq!(
        s.result.as_ref().map(|r| (r.score, r.passed)),
        Some((0.93, true))
    );
    assert_eq!(s.exit_code, Some(0));
    assert_eq!(s.duration.as_deref(), Some("12s"));
    assert_eq!(s.completion_time, Some(at(12)));
    assert_eq!(s.log_tail.as_deref(), Some("working\nall done\n"));
    let prov = s.provenance.as_ref().expect("provenance");
    assert_eq!(prov.image_id.as_deref(), Some("sha256:abc"));
    assert!(
        prov.spec_hash
            .as_deref()
            .is_some_and(|h| h.starts_with("sha256:"))
    );
    assert!(prov.result_digest.is_some());
    assert_eq!(
        condition(&p, conditions::READY),
        ("True".into(), "Passed".into())
    );
    assert_eq!(condition(&p, conditions::STALLED).0, "False");
    assert_eq!(condition(&p, conditions::RECONCILING).0, "False");
    assert_eq!(condition(&p, conditions::PASSED).0, "True");
    assert_eq!(p.delete, [(ChildKind::Pod, name)]);
    assert_eq!(p.notes[0].reason, "Succeeded");
}

#[test]
fn a_finished_run_is_never_started_again() {
    let (ev, name) = started();
    let obs = Observed {
        now: at(12),
        ..with_pods(vec![succeeded_pod(&name, r#"{"score": 1}"#)])
    };
    let done = after(&ev, &run(&ev, &obs));
    // A restarted controller sees the finished status and no pod: nothing to do.
    let again = run(
        &done,
        &Observed {
            now: at(500),
            ..Observed::empty()
        },
    );
    assert!(again.create.is_empty());
    assert!(again.notes.is_empty());
    assert_eq!(
        Some(&again.status),
        done.status.as_ref(),
        "status write is a no-op"
    );
    assert_eq!(again.requeue, Requeue::AwaitChange);
}

#[test]
fn below_threshold_has_one_name_in_status_conditions_and_a_warning_event() {
    let (ev, name) = started();
    let ev = ev.with_spec(|s| s.pass_threshold = Some(0.95));
    // passThreshold is part of the run: changing it started a new run; take its pod.
    let ev = after(&ev, &run(&ev, &Observed::empty()));
    let name2 = ev
        .status
        .as_ref()
        .and_then(|s| s.pod_name.clone())
        .expect("pod");
    assert_ne!(name, name2);
    let p = run(
        &ev,
        &with_pods(vec![succeeded_pod(&name2, r#"{"score": 0.9}"#)]),
    );
    assert_eq!(p.status.phase, Some(Phase::Succeeded));
    assert_eq!(p.status.reason.as_deref(), Some(conditions::NOT_PASSED));
    for (kind, status) in [
        (conditions::STALLED, "True"),
        (conditions::READY, "False"),
        (conditions::PASSED, "False"),
    ] {
        assert_eq!(
            condition(&p, kind),
            (status.into(), conditions::NOT_PASSED.into()),
            "{kind}"
        );
    }
    let note = p.notes.last().expect("the outcome's Event");
    assert_eq!(
        (note.severity, note.reason),
        (Severity::Warning, conditions::NOT_PASSED)
    );
}

#[test]
fn gpu_runs_use_the_nvproxy_class_and_fail_closed_without_it() {
    let ev = Evaluation::test().with_spec(|s| {
        s.resources = Some(crate::crd::evaluation::Resources {
            gpu: Some(2),
            ..Default::default()
        })
    });
    let p = run(&ev, &Observed::empty());
    let spec = pod_of(&p).spec.clone().expect("pod spec");
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor-nvproxy"));
    let resources = spec.containers[0].resources.clone().expect("resources");
    assert_eq!(
        resources
            .limits
            .as_ref()
            .map(|l| l["nvidia.com/gpu"].0.as_str()),
        Some("2")
    );
    assert_eq!(
        p.status.sandbox.and_then(|s| s.runtime_class_name),
        Some("gvisor-nvproxy".into())
    );

    let missing = Observed {
        runtime_class: Some(RuntimeClassCheck::Missing),
        ..Observed::empty()
    };
    let p = run(&ev, &missing);
    assert!(
        p.create.is_empty(),
        "no GPU pod without the nvproxy sandbox"
    );
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.status.reason.as_deref(), Some("SandboxUnavailable"));
    let message = p.status.message.unwrap_or_default();
    assert!(message.contains("gvisor-nvproxy"), "{message}");
}

#[test]
fn a_pod_no_node_can_take_says_why_until_it_is_placed() {
    use k8s_openapi::api::core::v1::PodCondition;
    let (ev, name) = started();
    let mut pod = mk_pod(&name, "Pending", vec![]);
    if let Some(status) = pod.status.as_mut() {
        status.conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.".into()),
            ..Default::default()
        }]);
    }
    let waiting = run(&ev, &with_pods(vec![pod]));
    assert_eq!(waiting.status.phase, Some(Phase::Pending));
    assert_eq!(
        waiting.status.message.as_deref(),
        Some("waiting for a node: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    );
    let placed = mk_pod(
        &name,
        "Running",
        vec![mk_container("evaluation", running())],
    );
    let later = run(&after(&ev, &waiting), &with_pods(vec![placed]));
    assert_eq!(later.status.phase, Some(Phase::Running));
    assert_eq!(later.status.message, None);
}

/// Issue 22: the scorer's own log is the evidence of a scoring that went wrong, and only then
/// is it kept (a passing run's status stays small).
#[test]
fn the_scorers_log_is_kept_only_when_the_run_did_not_succeed() {
    let ev = Evaluation::test().with_spec(|s| {
        s.scorer = Some(Scorer {
            image: "img".into(),
            ..Default::default()
        })
    });
    let first = run(&ev, &Observed::empty());
    let name = first.status.pod_name.clone().expect("pod name");
    let ev = after(&ev, &first);
    let scored = |message: Option<&str>| {
        let mut pod = mk_pod(
            &name,
            "Succeeded",
            vec![mk_container("scorer", terminated(0, "Completed", message))],
        );
        if let Some(status) = pod.status.as_mut() {
            status.init_container_statuses = Some(vec![mk_container(
                "evaluation",
                terminated(0, "Completed", None),
            )]);
        }
        pod
    };
    let mut logs = log("answer\n");
    let mut scanner = LogScanner::default();
    scanner.feed(b"scored 3 of 4\n");
    logs.insert(SCORER_CONTAINER.to_string(), scanner.finish());
    let observed = |pod| Observed {
        logs: logs.clone(),
        ..with_pods(vec![pod])
    };
    let passed = run(&ev, &observed(scored(Some(r#"{"score": 0.75}"#)))).status;
    assert_eq!(passed.phase, Some(Phase::Succeeded));
    assert_eq!(passed.scorer_log_tail, None);
    // No result from the scorer: the run fails, and keeps both logs.
    let invalid = run(&ev, &observed(scored(None))).status;
    assert_eq!(invalid.reason.as_deref(), Some("InvalidResult"));
    assert_eq!(invalid.log_tail.as_deref(), Some("answer\n"));
    assert_eq!(invalid.scorer_log_tail.as_deref(), Some("scored 3 of 4\n"));
}

/// A pod whose steps succeeded, with a samples container (stopped or not).
fn succeeded_with_samples(name: &str, message: &str, sidecar_stopped: bool) -> Pod {
    let mut pod = succeeded_pod(name, message);
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.init_containers = Some(vec![k8s_openapi::api::core::v1::Container {
        name: SAMPLES_CONTAINER.into(),
        ..Default::default()
    }]);
    let state = if sidecar_stopped {
        terminated(0, "Completed", None)
    } else {
        running()
    };
    pod.status
        .get_or_insert_with(Default::default)
        .init_container_statuses = Some(vec![mk_container(SAMPLES_CONTAINER, state)]);
    pod
}

/// The pod's steps succeeded: its samples are needed once its samples container stopped; the
/// run waits, Running, with its pod kept, until they are stored; then it finishes with them.
#[test]
fn a_run_waits_for_its_samples_keeping_its_pod_then_finishes_with_them() {
    let (ev, name) = started();
    let result = r#"{"score": 1}"#;
    let sidecar_running = vec![succeeded_with_samples(&name, result, false)];
    let needed = samples_needed(&ev, &sidecar_running).expect("samples needed");
    assert_eq!((needed.pod.as_str(), needed.ready), (name.as_str(), false));
    let stopped = vec![succeeded_with_samples(&name, result, true)];
    assert!(samples_needed(&ev, &stopped).is_some_and(|n| n.ready));
    assert_eq!(
        samples_needed(&ev, &[succeeded_pod(&name, result)]),
        None,
        "a pod without a samples container"
    );
    let mut failed = succeeded_with_samples(&name, result, true);
    failed.status.as_mut().expect("status").phase = Some("Failed".into());
    assert_eq!(
        samples_needed(&ev, &[failed]),
        None,
        "a failed pod has none"
    );

    let waiting = Observed {
        samples: Some(samples::Samples::Pending),
        ..with_pods(stopped.clone())
    };
    let p = run(&ev, &waiting);
    assert_eq!(p.status.phase, Some(Phase::Running));
    assert!(
        p.status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("samples"))
    );
    assert!(
        p.delete.is_empty(),
        "the pod is kept until the samples are stored"
    );
    assert_eq!(
        p.requeue,
        Requeue::AwaitChange,
        "the transfer's end reconciles"
    );

    let stats = crate::crd::samples::SamplesStatus {
        count: 3,
        ids: 3,
        mean: 1.0,
        ci95: Some(crate::crd::samples::Interval {
            low: 0.9,
            high: 1.1,
        }),
        ..Default::default()
    };
    let done = Observed {
        samples: Some(samples::Samples::Done(Ok(Some(Box::new(
            crate::samples::Collected {
                samples: stats.clone(),
                comparison: Some(crate::crd::samples::ComparisonStatus {
                    pairs: 3,
                    delta: 0.25,
                    ..Default::default()
                }),
            },
        ))))),
        ..with_pods(stopped.clone())
    };
    let p = run(&after(&ev, &run(&ev, &waiting)), &done);
    assert_eq!(p.status.phase, Some(Phase::Succeeded));
    assert_eq!(p.status.samples, Some(stats.clone()));
    assert_eq!(
        p.status.comparison.map(|c| (c.pairs, c.delta)),
        Some((3, 0.25))
    );
    assert_eq!(
        p.status.shown_score.as_deref(),
        Some("1 ±0.1"),
        "the score is the samples' mean: the column shows its interval"
    );
    let other_mean = Observed {
        samples: Some(samples::Samples::Done(Ok(Some(Box::new(
            crate::samples::Collected {
                samples: crate::crd::samples::SamplesStatus { mean: 0.5, ..stats },
                comparison: None,
            },
        ))))),
        ..with_pods(stopped.clone())
    };
    assert_eq!(
        run(&ev, &other_mean).status.shown_score.as_deref(),
        Some("1"),
        "a reported score that is not the samples' mean has no interval"
    );
    assert_eq!(p.delete, [(ChildKind::Pod, name.clone())]);

    let skipped = Observed {
        samples: Some(samples::Samples::Skipped("no results store".into())),
        ..with_pods(stopped.clone())
    };
    let p = run(&ev, &skipped);
    assert_eq!(
        p.status.phase,
        Some(Phase::Succeeded),
        "the run keeps its result"
    );
    assert_eq!(p.status.samples, None);
    assert!(
        p.status
            .message
            .as_deref()
            .is_some_and(|m| m.ends_with("its samples were not stored: no results store")),
        "{:?}",
        p.status.message
    );

    let refused = Observed {
        samples: Some(samples::Samples::Done(Err(
            "samples line 1: id is missing".into()
        ))),
        ..with_pods(stopped)
    };
    let p = run(&ev, &refused);
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.status.reason.as_deref(), Some("InvalidResult"));
    assert_eq!(p.status.result, None);
}

mod models {
    use super::*;
    use crate::crd::ModelEndpoint;
    use crate::crd::model::ModelRef;
    use crate::gateway::token::SigningKey;
    use crate::run::pod::EVALUATION_CONTAINER;
    use std::collections::BTreeMap;

    fn with_models() -> Evaluation {
        Evaluation::test().with_spec(|s| {
            s.models = Some(vec![ModelRef {
                name: "target".into(),
                endpoint: "stand-in".into(),
                model: "stand-in-small".into(),
            }]);
        })
    }

    fn endpoint(models: &[&str]) -> Observed {
        with_endpoint(ModelEndpoint::ready_test(models))
    }

    fn with_endpoint(endpoint: ModelEndpoint) -> Observed {
        Observed {
            model_endpoints: [("stand-in".to_string(), Some(endpoint))].into(),
            ..Observed::empty()
        }
    }

    fn env(p: &Plan) -> BTreeMap<String, String> {
        let pod = pod_of(p);
        let spec = pod.spec.as_ref().expect("spec");
        let container = spec
            .containers
            .iter()
            .find(|c| c.name == EVALUATION_CONTAINER)
            .expect("evaluation container");
        container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn a_run_with_models_gets_the_gateway_its_token_and_a_policy_to_the_gateway_only() {
        let config = Config::with_gateway();
        let ev = with_models();
        let p = plan(
            &ev,
            &endpoint(&["stand-in-small"]),
            &Decision::Admit,
            &config,
        )
        .expect("plan");
        assert_eq!(
            kinds(&p),
            ["SandboxPolicy", "NetworkPolicy", "ConfigMap", "Pod"]
        );
        let env = env(&p);
        assert_eq!(
            env.get("OPENAI_BASE_URL").map(String::as_str),
            Some("http://10.96.0.40:80/ns/team-a/v1")
        );
        let token = env.get("OPENAI_API_KEY").expect("the token");
        assert_eq!(env.get("CRUCIBLE_MODEL_TARGET_TOKEN"), Some(token));
        let key = SigningKey::new(&[7; 32]).expect("key");
        let claims = key
            .verify(token, at(0).0.as_second())
            .expect("a valid token");
        assert_eq!(claims.namespace, "team-a");
        assert_eq!(claims.evaluation, "arith");
        assert_eq!(Some(claims.run.as_str()), p.status.run_id.as_deref());
        assert_eq!(claims.models, ["stand-in-small"]);
        // It expires when the controller stops the pod at the latest.
        let timeout = i64::try_from(config.default_timeout.as_secs()).expect("secs");
        let grace = i64::try_from(DEADLINE_GRACE.as_secs()).expect("secs");
        assert_eq!(claims.expires, at(0).0.as_second() + timeout + grace);
        // The token is in the pod only: neither status nor Events carry it.
        let status = serde_json::to_string(&p.status).expect("json");
        assert!(!status.contains(token.as_str()));
        assert!(p.notes.iter().all(|n| !n.message.contains(token.as_str())));
        // Its policy allows TCP to the gateway's pods on their port and nothing else.
        let Some(Child::NetworkPolicy(np)) = p
            .create
            .iter()
            .find(|c| matches!(c, Child::NetworkPolicy(_)))
        else {
            panic!("no NetworkPolicy");
        };
        let spec = np.spec.as_ref().expect("spec");
        let egress = spec.egress.as_ref().expect("egress");
        assert_eq!(egress.len(), 1);
        let to = egress[0].to.as_ref().expect("to");
        let gateway = config.gateway.as_ref().expect("gateway");
        assert_eq!(
            to[0]
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref()),
            Some(&gateway.pod_labels)
        );
        assert_eq!(
            egress[0].ports.as_ref().and_then(|p| p[0].port.clone()),
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080))
        );
        assert_eq!(spec.ingress.as_deref(), Some(&[][..]));
        // And it runs in the sandbox with a network.
        assert_eq!(
            pod_of(&p)
                .spec
                .as_ref()
                .and_then(|s| s.runtime_class_name.as_deref()),
            Some(config.allowlist_runtime_class.as_str())
        );
    }

    #[test]
    fn a_model_its_namespace_has_no_endpoint_for_fails_without_children() {
        let config = Config::with_gateway();
        for (obs, says) in [
            (
                Observed::empty(),
                "ModelEndpoint \"stand-in\" does not exist",
            ),
            (
                endpoint(&["other"]),
                "does not list model \"stand-in-small\"",
            ),
        ] {
            let p = plan(&with_models(), &obs, &Decision::Admit, &config).expect("plan");
            assert!(p.create.is_empty(), "{:?}", kinds(&p));
            assert_eq!(p.status.phase, Some(Phase::Failed));
            assert_eq!(p.status.reason.as_deref(), Some("ModelEndpointUnavailable"));
            let message = p.status.message.clone().unwrap_or_default();
            assert!(message.contains(says), "{message}");
        }
    }

    #[test]
    fn a_run_whose_endpoint_is_not_ready_waits_queued_without_children_or_a_slot() {
        let config = Config::with_gateway();
        let not_ready = ModelEndpoint::ready_test(&["stand-in-small"]);
        // Not Ready, Ready for an older spec, not looked at yet: the run waits for each.
        for (endpoint, says) in [
            (
                not_ready
                    .clone()
                    .with_ready("False", "HostNotAllowed", Some(1)),
                "ModelEndpoint \"stand-in\" is not Ready: HostNotAllowed",
            ),
            (
                not_ready.clone().with_ready("True", "Ready", Some(0)),
                "has not been checked yet",
            ),
            (
                ModelEndpoint {
                    status: None,
                    ..not_ready.clone()
                },
                "has not been checked yet",
            ),
        ] {
            let p = plan(
                &with_models(),
                &with_endpoint(endpoint),
                &Decision::Admit,
                &config,
            )
            .expect("plan");
            assert!(p.create.is_empty(), "{:?}", kinds(&p));
            assert!(!p.in_queue, "a run waiting for its endpoint holds no place");
            assert_eq!(p.status.phase, Some(Phase::Queued));
            assert_eq!(p.status.reason.as_deref(), Some("ModelEndpointNotReady"));
            let queue = p.status.queue.as_ref().and_then(|q| q.reason.clone());
            assert!(
                queue.as_deref().is_some_and(|r| r.contains(says)),
                "{queue:?}"
            );
            assert_eq!(
                p.requeue,
                Requeue::AwaitChange,
                "the endpoint's change wakes it"
            );
        }
    }

    #[test]
    fn without_a_gateway_a_run_with_models_is_refused_as_before() {
        let p = plan(
            &with_models(),
            &endpoint(&["stand-in-small"]),
            &Decision::Admit,
            &Config::default(),
        )
        .expect("plan");
        assert!(p.create.is_empty());
        assert_eq!(p.status.reason.as_deref(), Some("InvalidSpec"));
        assert!(
            p.status
                .message
                .as_deref()
                .is_some_and(|m| m.contains("not connected to a model gateway"))
        );
    }
}

mod revocation {
    use super::*;
    use crate::crd::ModelEndpoint;
    use crate::crd::model::ModelRef;

    /// A run with models whose first attempt started under a gateway, and its pod's name.
    fn started_with_models(config: &Config) -> (Evaluation, String) {
        let ev = Evaluation::test().with_spec(|s| {
            s.models = Some(vec![ModelRef {
                name: "target".into(),
                endpoint: "stand-in".into(),
                model: "m".into(),
            }]);
        });
        let obs = Observed {
            model_endpoints: [(
                "stand-in".to_string(),
                Some(ModelEndpoint::ready_test(&["m"])),
            )]
            .into(),
            ..Observed::empty()
        };
        let p = plan(&ev, &obs, &Decision::Admit, config).expect("plan");
        let pod = p.status.pod_name.clone().expect("started");
        (after(&ev, &p), pod)
    }

    #[test]
    fn a_run_with_models_that_ends_is_named_for_revocation_once() {
        let config = Config::with_gateway();
        let (ev, pod) = started_with_models(&config);
        let status = ev.status.clone().expect("status");
        let finishing = Observed {
            now: at(10),
            ..with_pods(vec![succeeded_pod(&pod, r#"{"score": 1}"#)])
        };
        let done = plan(&ev, &finishing, &Decision::Admit, &config).expect("plan");
        assert_eq!(done.status.phase, Some(Phase::Succeeded));
        let timeout = i64::try_from(config.default_timeout.as_secs()).expect("secs");
        let grace = i64::try_from(DEADLINE_GRACE.as_secs()).expect("secs");
        assert_eq!(
            ended_model_run(&ev, &done, &config),
            Some((
                status.run_id.clone().expect("run"),
                at(0).0.as_second() + timeout + grace
            ))
        );
        // Once: the finished run's next reconcile names nothing.
        let finished = after(&ev, &done);
        let again = plan(&finished, &finishing, &Decision::Admit, &config).expect("plan");
        assert_eq!(ended_model_run(&finished, &again, &config), None);
        // A run still running names nothing.
        let running = with_pods(vec![mk_pod(
            &pod,
            "Running",
            vec![mk_container("evaluation", running())],
        )]);
        let still = plan(&ev, &running, &Decision::Admit, &config).expect("plan");
        assert_eq!(still.status.phase, Some(Phase::Running));
        assert_eq!(ended_model_run(&ev, &still, &config), None);
        // Nor does a run without models.
        let (plain, plain_pod) = started();
        let plain_done = plan(
            &plain,
            &with_pods(vec![succeeded_pod(&plain_pod, r#"{"score": 1}"#)]),
            &Decision::Admit,
            &config,
        )
        .expect("plan");
        assert_eq!(plain_done.status.phase, Some(Phase::Succeeded));
        assert_eq!(ended_model_run(&plain, &plain_done, &config), None);
    }

    fn used(refused: Option<crate::gateway::budget::Exceeded>) -> crate::gateway::tally::RunUsage {
        use crate::gateway::budget::Spent;
        use crate::gateway::ledger::ModelSpent;
        let spent = Spent {
            calls: 2,
            input_tokens: 6,
            output_tokens: 9,
            cost_usd: 0.5,
        };
        crate::gateway::tally::RunUsage {
            spent,
            by_model: vec![ModelSpent {
                model: "m".into(),
                served_model: Some("m-2026".into()),
                spent,
            }],
            refused,
        }
    }

    #[test]
    fn a_run_refused_for_its_budget_ends_budget_exceeded_with_its_result_and_usage() {
        use crate::crd::conditions::{READY, STALLED, find};
        use crate::gateway::budget::Exceeded;
        use crate::gateway::notice::UsageAnswer;
        let config = Config::with_gateway();
        let (ev, pod) = started_with_models(&config);
        let (run, expires) = usage_needed(&ev, &config).expect("a started run is asked");
        assert_eq!(Some(run), ev.status.as_ref().and_then(|s| s.run_id.clone()));
        assert!(expires > at(0).0.as_second());
        // While it runs, its usage shows.
        let running = Observed {
            usage: Some(UsageAnswer::Latest(Some(Ok(used(None))))),
            ..with_pods(vec![mk_pod(
                &pod,
                "Running",
                vec![mk_container("evaluation", running())],
            )])
        };
        let still = plan(&ev, &running, &Decision::Admit, &config).expect("plan");
        let shown = still.status.usage.clone().expect("usage while running");
        assert_eq!(
            (shown.calls, shown.by_model[0].name.as_str()),
            (2, "target")
        );
        // Its pod ends: the run waits for usage asked from then on (an earlier answer may
        // miss the refusal of its last call), woken by the answer.
        let ended = with_pods(vec![succeeded_pod(&pod, r#"{"score": 1}"#)]);
        assert!(pod_ended(&after(&ev, &still), &ended.pods));
        assert!(!pod_ended(&after(&ev, &still), &running.pods));
        let waiting = Observed {
            now: at(10),
            usage: Some(UsageAnswer::Latest(Some(Ok(used(None))))),
            ..ended.clone()
        };
        let waits = plan(&after(&ev, &still), &waiting, &Decision::Admit, &config).expect("plan");
        assert!(!waits.status.phase.is_some_and(Phase::is_finished));
        assert_eq!(waits.requeue, Requeue::AwaitChange);
        assert!(waits.delete.is_empty(), "its pod is kept");
        // It ends: a call was refused, so BudgetExceeded, its passing result kept, not Ready.
        let finishing = Observed {
            now: at(10),
            usage: Some(UsageAnswer::Final(Ok(used(Some(Exceeded::Calls(2)))))),
            ..ended
        };
        let done = plan(&after(&ev, &still), &finishing, &Decision::Admit, &config).expect("plan");
        let status = &done.status;
        assert_eq!(
            (status.phase, status.reason.as_deref()),
            (Some(Phase::Failed), Some("BudgetExceeded"))
        );
        assert_eq!(
            status.result.as_ref().map(|r| (r.score, r.passed)),
            Some((1.0, true))
        );
        assert_eq!(status.usage.as_ref().map(|u| u.calls), Some(2));
        assert!(!status.passed());
        let ready = find(&status.conditions, READY).expect("Ready");
        let stalled = find(&status.conditions, STALLED).expect("Stalled");
        assert_eq!(
            (ready.status.as_str(), stalled.reason.as_str()),
            ("False", "BudgetExceeded")
        );
        // Without a refusal the same pod succeeds; a finished run is asked no more.
        let fine = Observed {
            usage: Some(UsageAnswer::Final(Ok(used(None)))),
            ..finishing.clone()
        };
        let ok = plan(&after(&ev, &still), &fine, &Decision::Admit, &config).expect("plan");
        assert_eq!(ok.status.phase, Some(Phase::Succeeded));
        assert_eq!(usage_needed(&after(&ev, &ok), &config), None);
        // A run without models is never asked.
        let (plain, _) = started();
        assert_eq!(usage_needed(&plain, &config), None);
    }
}
