use super::*;
use crate::config::Config;
use crate::crd::Evaluation;
use crate::crd::bounds::{MAX_POD_SPEC_BYTES, json_len};
use crate::crd::evaluation::{EgressRule, NetworkMode, Sandbox, Scorer};
use crate::crd::model::{ModelBudget, RecordCalls};
use crate::labels::{EVALUATION_UID_LABEL, RUN_ID_LABEL};
use crate::run::owner::owner;
use crate::run::pod::{Attempt, desired_pod};
use crate::run::validate::{size_problems, validate};

fn model(name: &str, model: &str) -> ModelRef {
    ModelRef {
        name: name.into(),
        endpoint: "openai".into(),
        model: model.into(),
    }
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([(
        "app.kubernetes.io/name".to_string(),
        "crucible-gateway".to_string(),
    )])
}

fn gateway(labels: &BTreeMap<String, String>) -> Gateway<'_> {
    Gateway {
        base_url: "http://10.96.0.40:8080/",
        namespace: "crucible-system",
        pod_labels: labels,
        port: 8080,
    }
}

fn env_pairs(vars: &[EnvVar]) -> Vec<(&str, &str)> {
    vars.iter()
        .map(|v| (v.name.as_str(), v.value.as_deref().unwrap_or_default()))
        .collect()
}

#[test]
fn the_sandbox_gets_per_model_urls_tokens_and_ids_and_the_first_models_sdk_variables() {
    let (target, judge) = (
        model("target", "gpt-4.1-mini"),
        model("the-judge", "claude-x"),
    );
    let labels = labels();
    let vars = model_env(
        &[
            RunModel {
                model: &target,
                api: ModelApi::Openai,
            },
            RunModel {
                model: &judge,
                api: ModelApi::Anthropic,
            },
        ],
        &gateway(&labels),
        "team-a",
        "crt1.token",
    );
    assert_eq!(
        env_pairs(&vars),
        [
            (
                "CRUCIBLE_MODEL_TARGET_URL",
                "http://10.96.0.40:8080/ns/team-a/v1"
            ),
            ("CRUCIBLE_MODEL_TARGET_TOKEN", "crt1.token"),
            ("CRUCIBLE_MODEL_TARGET_MODEL", "gpt-4.1-mini"),
            ("OPENAI_BASE_URL", "http://10.96.0.40:8080/ns/team-a/v1"),
            ("OPENAI_API_KEY", "crt1.token"),
            (
                "CRUCIBLE_MODEL_THE_JUDGE_URL",
                "http://10.96.0.40:8080/ns/team-a"
            ),
            ("CRUCIBLE_MODEL_THE_JUDGE_TOKEN", "crt1.token"),
            ("CRUCIBLE_MODEL_THE_JUDGE_MODEL", "claude-x"),
        ]
    );
    assert!(vars.iter().all(|v| v.value_from.is_none()));
}

#[test]
fn an_anthropic_first_model_sets_the_anthropic_sdk_variables() {
    let target = model("target", "claude-x");
    let labels = labels();
    let vars = model_env(
        &[RunModel {
            model: &target,
            api: ModelApi::Anthropic,
        }],
        &gateway(&labels),
        "team-a",
        "crt1.token",
    );
    let pairs = env_pairs(&vars);
    assert!(pairs.contains(&("ANTHROPIC_BASE_URL", "http://10.96.0.40:8080/ns/team-a")));
    assert!(pairs.contains(&("ANTHROPIC_API_KEY", "crt1.token")));
    assert!(!pairs.iter().any(|(name, _)| name.starts_with("OPENAI_")));
}

fn pod(spec: &EvaluationSpec) -> Pod {
    let ev = Evaluation::test();
    desired_pod(
        spec,
        &owner(&ev).expect("owner"),
        &Attempt {
            pod_name: "arith-0",
            attempt_id: "0",
            run_id: "run-0",
            runtime_class: Some("gvisor"),
            timeout_seconds: 600,
            workspace: None,
        },
        &Config::default(),
    )
}

#[test]
fn the_evaluation_container_gets_the_models_and_the_users_same_names_lose() {
    let spec = Evaluation::test()
        .with_spec(|s| s.env = Some(vec![var("OPENAI_API_KEY", "sk-real-provider-key")]))
        .spec;
    let mut pod = pod(&spec);
    add_model_env(
        &mut pod,
        &[
            var("OPENAI_API_KEY", "crt1.token"),
            var("CRUCIBLE_MODEL_TARGET_MODEL", "m"),
        ],
    );
    let container = &pod.spec.expect("spec").containers[0];
    let env = container.env.as_deref().unwrap_or_default();
    let keys: Vec<_> = env
        .iter()
        .filter(|e| e.name == "OPENAI_API_KEY")
        .map(|e| e.value.as_deref())
        .collect();
    assert_eq!(keys, [Some("crt1.token")]);
    assert!(env.iter().any(|e| e.name == "CRUCIBLE_MODEL_TARGET_MODEL"));
}

#[test]
fn with_a_scorer_only_the_evaluated_code_gets_the_models() {
    let spec = Evaluation::test()
        .with_spec(|s| {
            s.scorer = Some(Scorer {
                image: "scorer".into(),
                ..Default::default()
            })
        })
        .spec;
    let mut pod = pod(&spec);
    add_model_env(&mut pod, &[var("OPENAI_API_KEY", "crt1.token")]);
    let spec = pod.spec.expect("spec");
    let has_key = |c: &k8s_openapi::api::core::v1::Container| {
        c.env.iter().flatten().any(|e| e.name == "OPENAI_API_KEY")
    };
    let evaluation = &spec.init_containers.as_deref().expect("init")[0];
    assert_eq!(evaluation.name, EVALUATION_CONTAINER);
    assert!(has_key(evaluation));
    assert!(!has_key(&spec.containers[0]));
}

#[test]
fn the_runs_policy_allows_egress_to_the_gateways_pods_and_port_only() {
    let ev = Evaluation::test();
    let labels = labels();
    let np = gateway_network_policy(
        &owner(&ev).expect("owner"),
        "arith-models",
        "run-1",
        &gateway(&labels),
    );
    assert!(np.metadata.owner_references.is_some());
    let spec = np.spec.expect("spec");
    assert_eq!(
        spec.policy_types,
        Some(vec!["Ingress".into(), "Egress".into()])
    );
    assert_eq!(spec.ingress, Some(vec![]));
    assert_eq!(
        spec.pod_selector.and_then(|s| s.match_labels),
        Some(BTreeMap::from([
            (
                EVALUATION_UID_LABEL.to_string(),
                "11111111-2222-3333-4444-555555555555".to_string()
            ),
            (RUN_ID_LABEL.to_string(), "run-1".to_string()),
        ]))
    );
    let selector = |labels: BTreeMap<String, String>| {
        Some(LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        })
    };
    assert_eq!(
        spec.egress,
        Some(vec![NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: selector(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    "crucible-system".to_string()
                )])),
                pod_selector: selector(labels.clone()),
                ip_block: None,
            }]),
            ports: Some(vec![NetworkPolicyPort {
                protocol: Some("TCP".into()),
                port: Some(IntOrString::Int(8080)),
                end_port: None,
            }]),
        }])
    );
}

#[test]
fn a_gateway_without_pod_labels_gets_no_egress_at_all() {
    let ev = Evaluation::test();
    let none = BTreeMap::new();
    let np = gateway_network_policy(&owner(&ev).expect("owner"), "x", "run-1", &gateway(&none));
    assert_eq!(np.spec.and_then(|s| s.egress), Some(vec![]));
}

fn with_models(edit: impl FnOnce(&mut EvaluationSpec)) -> EvaluationSpec {
    Evaluation::test()
        .with_spec(|s| {
            s.models = Some(vec![model("target", "gpt-4.1-mini")]);
            edit(s);
        })
        .spec
}

fn problems_of(spec: &EvaluationSpec) -> Vec<String> {
    validate(spec, &Config::default()).expect_err("invalid")
}

#[test]
fn model_names_must_be_variable_safe_and_unique() {
    let spec = with_models(|s| {
        s.models = Some(vec![
            model("target", "a"),
            model("target", "b"),
            model("Judge", "c"),
            model("x-", "d"),
            model("9x", "e"),
        ])
    });
    let problems = problems_of(&spec);
    assert!(
        problems[0].contains("spec.models[1].name: \"target\" is listed twice"),
        "{problems:?}"
    );
    for i in 2..5 {
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("spec.models[{i}].name:"))
                    && p.contains("lower-case")),
            "{i}: {problems:?}"
        );
    }
}

#[test]
fn budget_and_record_calls_need_models_and_sane_limits() {
    let spec = Evaluation::test()
        .with_spec(|s| {
            s.budget = Some(ModelBudget {
                calls: Some(-1),
                tokens: None,
                cost_usd: Some(f64::NAN),
            });
            s.record_calls = Some(RecordCalls::Full);
        })
        .spec;
    assert_eq!(
        problems_of(&spec),
        [
            "spec.budget.calls must not be negative",
            "spec.budget.costUSD must be a finite number of at least 0",
            "spec.budget applies to model calls only: spec.models is empty",
            "spec.recordCalls applies to model calls only: spec.models is empty",
        ]
    );
}

#[test]
fn models_cannot_be_combined_with_an_allowlist() {
    let spec = with_models(|s| {
        s.sandbox = Some(Sandbox {
            network: Some(NetworkMode::Allowlist),
            egress: Some(vec![EgressRule {
                cidr: "203.0.113.0/24".into(),
                ports: None,
            }]),
            ..Default::default()
        })
    });
    assert!(
        problems_of(&spec)
            .iter()
            .any(|p| p.starts_with("spec.sandbox.network: Allowlist cannot be combined")),
    );
}

/// Without a gateway a run with models is refused (no pod) rather than started without its
/// models; with one it is valid and runs in the sandbox that has a network.
#[test]
fn a_run_with_models_needs_a_gateway_and_the_networked_sandbox() {
    let spec = with_models(|s| {
        s.budget = Some(ModelBudget {
            calls: Some(10),
            ..Default::default()
        })
    });
    let problems = problems_of(&spec);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("not connected to a model gateway"));
    let config = Config::with_gateway();
    assert_eq!(validate(&spec, &config), Ok(()));
    assert_eq!(
        crate::run::validate::runtime_class(&spec, &config),
        config.allowlist_runtime_class
    );
    assert_eq!(
        crate::run::validate::runtime_class(&Evaluation::test().spec, &config),
        config.runtime_class
    );
    let gpu = with_models(|s| {
        s.resources = Some(crate::crd::evaluation::Resources {
            gpu: Some(1),
            ..Default::default()
        })
    });
    let problems = validate(&gpu, &config).expect_err("models with a GPU");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("spec.models is not available with spec.resources.gpu")),
        "{problems:?}"
    );
}

#[test]
fn too_many_or_too_long_models_are_size_problems() {
    let spec = with_models(|s| {
        s.models = Some(
            (0..=MAX_RUN_MODELS)
                .map(|i| model(&format!("m{i}"), &"x".repeat(MAX_MODEL_ID_LEN + i)))
                .collect(),
        )
    });
    let problems = size_problems(&spec);
    assert_eq!(
        problems[0],
        format!(
            "spec.models: {} models, at most {MAX_RUN_MODELS} allowed",
            MAX_RUN_MODELS + 1
        )
    );
    assert_eq!(
        problems[1],
        format!(
            "spec.models[1].model: {} bytes, at most {MAX_MODEL_ID_LEN} allowed",
            MAX_MODEL_ID_LEN + 1
        )
    );
}

#[test]
fn the_pod_estimate_covers_the_largest_model_env() {
    let spec = with_models(|s| {
        s.models = Some(
            (0..MAX_RUN_MODELS)
                .map(|i| model(&format!("model-{i:0>24}"), &"x".repeat(MAX_MODEL_ID_LEN)))
                .collect(),
        )
    });
    let base_url = format!("http://{}", "h".repeat(MAX_URL_LEN - 200));
    let labels = labels();
    let gateway = Gateway {
        base_url: &base_url,
        ..gateway(&labels)
    };
    let token = "t".repeat(MAX_TOKEN_BYTES);
    let run: Vec<_> = models(&spec)
        .iter()
        .map(|model| RunModel {
            model,
            api: ModelApi::Openai,
        })
        .collect();
    let vars = model_env(&run, &gateway, &"n".repeat(63), &token);
    let estimate = pod_bytes(&spec);
    assert!(
        json_len(&vars) <= estimate,
        "{} > {estimate}",
        json_len(&vars)
    );
    assert!(estimate < MAX_POD_SPEC_BYTES / 2, "{estimate}");
    assert_eq!(pod_bytes(&Evaluation::test().spec), 0);
}
