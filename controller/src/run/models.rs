//! A run's models (docs/models.md): the checks on `spec.models`, `spec.budget` and
//! `spec.recordCalls`, the environment that points the sandbox at the model gateway, and the
//! run's own NetworkPolicy whose only egress is the gateway. Pure; the capability token is
//! minted by `gateway::grant` (the gateway's layer) and handed in here as a string.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::GatewaySettings;
use crate::crd::bounds::{
    MAX_MODEL_ID_LEN, MAX_MODEL_NAME_LEN, MAX_NAME_LEN, MAX_RUN_MODELS, MAX_TOKEN_BYTES,
    MAX_URL_LEN, shown,
};
use crate::crd::evaluation::EvaluationSpec;
use crate::crd::model::{ModelApi, ModelRef};
use crate::run::owner::Owner;
use crate::run::pod::{EVALUATION_CONTAINER, run_policy};

/// The label every namespace carries with its own name (Kubernetes ≥ 1.21).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The models `spec` lists (none when unset).
pub fn models(spec: &EvaluationSpec) -> &[ModelRef] {
    spec.models.as_deref().unwrap_or_default()
}

/// Bytes at most that the models of `spec` add to its pod spec ([`model_env`]: per model its
/// URL, the token and its id, and once more a URL and the token for the SDK's variables), the
/// URL as long as a git URL may be.
pub fn pod_bytes(spec: &EvaluationSpec) -> usize {
    const PER_VARIABLE: usize = 64;
    let models = models(spec);
    let sdk = if models.is_empty() {
        0
    } else {
        MAX_URL_LEN + MAX_TOKEN_BYTES + 2 * PER_VARIABLE
    };
    models.iter().fold(sdk, |sum, m| {
        sum.saturating_add(MAX_URL_LEN + MAX_TOKEN_BYTES + 3 * PER_VARIABLE)
            .saturating_add(m.model.len())
            .saturating_add(3 * m.name.len())
    })
}

/// Every size bound the model fields of `spec` exceed (the CRD schema says the same, but Helm
/// never upgrades a CRD).
pub fn size_problems(spec: &EvaluationSpec, problems: &mut Vec<String>) {
    let models = models(spec);
    if models.len() > MAX_RUN_MODELS {
        problems.push(format!(
            "spec.models: {} models, at most {MAX_RUN_MODELS} allowed",
            models.len()
        ));
    }
    for (i, m) in models.iter().enumerate() {
        for (field, text, max) in [
            ("name", &m.name, MAX_MODEL_NAME_LEN),
            ("endpoint", &m.endpoint, MAX_NAME_LEN),
            ("model", &m.model, MAX_MODEL_ID_LEN),
        ] {
            if text.len() > max {
                problems.push(format!(
                    "spec.models[{i}].{field}: {} bytes, at most {max} allowed",
                    text.len()
                ));
            }
        }
    }
}

/// Every problem of the model fields of `spec` beyond their sizes; `connected`: the controller
/// was given a model gateway.
pub fn problems(spec: &EvaluationSpec, connected: bool, problems: &mut Vec<String>) {
    let models = models(spec);
    let mut names = BTreeSet::new();
    for (i, m) in models.iter().enumerate() {
        if !is_model_name(&m.name) {
            problems.push(format!(
                "spec.models[{i}].name: {} must be lower-case letters, digits and '-', starting \
                 with a letter and not ending with '-'",
                shown(&m.name)
            ));
        } else if !names.insert(m.name.as_str()) {
            problems.push(format!(
                "spec.models[{i}].name: {} is listed twice",
                shown(&m.name)
            ));
        }
        if m.endpoint.trim().is_empty() {
            problems.push(format!("spec.models[{i}].endpoint must not be empty"));
        }
        if m.model.trim().is_empty() {
            problems.push(format!("spec.models[{i}].model must not be empty"));
        }
    }
    if let Some(budget) = &spec.budget {
        for (field, value) in [("calls", budget.calls), ("tokens", budget.tokens)] {
            if value.is_some_and(|v| v < 0) {
                problems.push(format!("spec.budget.{field} must not be negative"));
            }
        }
        if budget.cost_usd.is_some_and(|c| !c.is_finite() || c < 0.0) {
            problems.push("spec.budget.costUSD must be a finite number of at least 0".into());
        }
    }
    if models.is_empty() {
        for (field, set) in [
            ("budget", spec.budget.is_some()),
            ("recordCalls", spec.record_calls.is_some()),
        ] {
            if set {
                problems.push(format!(
                    "spec.{field} applies to model calls only: spec.models is empty"
                ));
            }
        }
        return;
    }
    // Without a gateway a run with models would start without its models: refuse it where the
    // user looks instead.
    if !connected {
        problems.push(
            "spec.models: this controller is not connected to a model gateway (its operator \
             sets --gateway-service and --gateway-token-key-file, docs/models.md); remove \
             spec.models, spec.budget and spec.recordCalls"
                .into(),
        );
    }
}

fn is_model_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes.last().is_some_and(|b| *b != b'-')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Where the sandbox reaches the model gateway.
#[derive(Clone, Debug)]
pub struct Gateway<'a> {
    /// Base URL as the sandbox calls it, without a trailing `/`, e.g. `http://10.96.0.40:8080`.
    /// An address, not a DNS name: the sandbox has no DNS (its only egress is the gateway).
    pub base_url: &'a str,
    /// Namespace of the gateway's pods.
    pub namespace: &'a str,
    /// Labels that select the gateway's pods.
    pub pod_labels: &'a BTreeMap<String, String>,
    /// Port of the gateway's pods that serves calls (the pods', not the Service's: a
    /// NetworkPolicy sees traffic after the Service's translation).
    pub port: i32,
}

impl<'a> From<&'a GatewaySettings> for Gateway<'a> {
    fn from(settings: &'a GatewaySettings) -> Self {
        Gateway {
            base_url: &settings.base_url,
            namespace: &settings.namespace,
            pod_labels: &settings.pod_labels,
            port: settings.port,
        }
    }
}

/// A model of the run with the wire protocol of its endpoint.
#[derive(Clone, Copy, Debug)]
pub struct RunModel<'a> {
    /// The entry of `spec.models`.
    pub model: &'a ModelRef,
    /// `spec.api` of its ModelEndpoint.
    pub api: ModelApi,
}

/// The variables the evaluation container gets for the run's models: per model
/// `CRUCIBLE_MODEL_<NAME>_URL`, `_TOKEN` and `_MODEL` (its id), and for the first model the
/// variables the official SDK of its protocol reads, so unmodified agent code calls the gateway.
/// `token` is the run's capability token; no provider key is ever among them.
pub fn model_env(
    models: &[RunModel<'_>],
    gateway: &Gateway<'_>,
    namespace: &str,
    token: &str,
) -> Vec<EnvVar> {
    let mut vars = Vec::new();
    for (i, m) in models.iter().enumerate() {
        let url = api_url(gateway, namespace, m.api);
        let prefix = format!(
            "CRUCIBLE_MODEL_{}",
            m.model.name.to_uppercase().replace('-', "_")
        );
        vars.push(var(&format!("{prefix}_URL"), &url));
        vars.push(var(&format!("{prefix}_TOKEN"), token));
        vars.push(var(&format!("{prefix}_MODEL"), &m.model.model));
        if i == 0 {
            let (base, key) = match m.api {
                ModelApi::Openai => ("OPENAI_BASE_URL", "OPENAI_API_KEY"),
                ModelApi::Anthropic => ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"),
            };
            vars.push(var(base, &url));
            vars.push(var(key, token));
        }
    }
    vars
}

/// The URL the SDK of `api` takes as its base: OpenAI's SDK appends `/chat/completions` to a
/// base ending in `/v1`, Anthropic's appends `/v1/messages` itself.
fn api_url(gateway: &Gateway<'_>, namespace: &str, api: ModelApi) -> String {
    let base = gateway.base_url.trim_end_matches('/');
    match api {
        ModelApi::Openai => format!("{base}/ns/{namespace}/v1"),
        ModelApi::Anthropic => format!("{base}/ns/{namespace}"),
    }
}

fn var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// Adds `vars` to the evaluation container of `pod` (the evaluated code; the scorer is not
/// given the models), replacing any variable of the same name the user set: the controller's
/// values always win, and one name appears once.
pub fn add_model_env(pod: &mut Pod, vars: &[EnvVar]) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let containers = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten());
    for container in containers.filter(|c| c.name == EVALUATION_CONTAINER) {
        let env = container.env.get_or_insert_with(Vec::new);
        env.retain(|e| !vars.iter().any(|v| v.name == e.name));
        env.extend(vars.iter().cloned());
    }
}

/// The NetworkPolicy of a run with models: no ingress, and egress only to the gateway's pods on
/// their calls' port; nothing else, not even DNS (and nothing at all when `gateway` names no pod
/// labels). It selects the pods of run `run_id` only, like
/// an `Allowlist` run's policy (`pod::desired_network_policy`).
pub fn gateway_network_policy(
    owner: &Owner,
    name: &str,
    run_id: &str,
    gateway: &Gateway<'_>,
) -> NetworkPolicy {
    let to_gateway = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                gateway.namespace.to_string(),
            )])),
            match_expressions: None,
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(gateway.pod_labels.clone()),
            match_expressions: None,
        }),
        ip_block: None,
    };
    // An empty selector would pick every pod of the gateway's namespace: allow nothing then.
    let egress = if gateway.pod_labels.is_empty() {
        Vec::new()
    } else {
        vec![NetworkPolicyEgressRule {
            to: Some(vec![to_gateway]),
            ports: Some(vec![NetworkPolicyPort {
                protocol: Some("TCP".into()),
                port: Some(IntOrString::Int(gateway.port)),
                end_port: None,
            }]),
        }]
    };
    run_policy(owner, name, run_id, egress)
}

#[cfg(test)]
#[path = "models_tests.rs"]
mod tests;
