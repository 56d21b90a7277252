//! The canary pod and its NetworkPolicy, built by the same pure builders as every evaluation's
//! children (so the canary has exactly the sandbox of a real run). The pod runs the probe
//! ([`super::report`]) from the controller's own image: `crucible canary-probe`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use crate::config::Config;
use crate::crd::evaluation::{EgressRule, EvaluationSpec, NetworkMode, Resources, Sandbox};
use crate::labels::CANARY_LABEL;
use crate::run::models::{Gateway, gateway_network_policy};
use crate::run::owner::Owner;
use crate::run::pod::{Attempt, desired_network_policy, desired_pod};

use super::report::CONNECT_ENV;
use super::verdict::GREETING;

/// `app.kubernetes.io/component` of canary pods and policies: what start-up cleanup selects.
pub const COMPONENT: &str = "sandbox-canary";
/// Annotation naming the RuntimeClass a canary proves (a class name can exceed a label value).
pub const RUNTIME_CLASS_ANNOTATION: &str = "crucible.dev/canary-runtime-class";
/// The subcommand of the `crucible` binary that the canary pod runs ([`super::report::main`]).
pub const SUBCOMMAND: &str = "canary-probe";

/// One canary run's identity and targets.
#[derive(Clone, Debug)]
pub struct Run<'a> {
    /// Pod and NetworkPolicy name.
    pub name: &'a str,
    /// Unique id of the run (the `crucible.dev/canary` label).
    pub id: &'a str,
    /// System namespace.
    pub namespace: &'a str,
    /// The controller's pod, when it is in that namespace: the garbage collector removes a
    /// canary its controller left behind.
    pub owner: Option<&'a OwnerReference>,
    /// The RuntimeClass under test.
    pub runtime_class: &'a str,
    /// The network mode it serves.
    pub network: NetworkMode,
    /// The listener port the NetworkPolicy allows with `Allowlist`.
    pub listener: SocketAddr,
    /// A listener port no rule allows (`Allowlist` only).
    pub unlisted: SocketAddr,
    /// The model gateway (`Allowlist` only, when the controller has one), and its address: the
    /// pod gets the NetworkPolicy of runs with models too, and connects to it.
    pub gateway: Option<(Gateway<'a>, SocketAddr)>,
    /// Probe image: one whose entrypoint is this version's `crucible` binary (the controller's
    /// own image).
    pub image: &'a str,
    /// `activeDeadlineSeconds`.
    pub timeout_seconds: i64,
}

impl Run<'_> {
    /// The `host:port` targets the probe connects to.
    pub fn targets(&self) -> Vec<SocketAddr> {
        match self.network {
            NetworkMode::None => vec![self.listener],
            NetworkMode::Allowlist => [self.listener, self.unlisted]
                .into_iter()
                .chain(self.gateway.as_ref().map(|(_, addr)| *addr))
                .collect(),
        }
    }

    fn spec(&self) -> EvaluationSpec {
        let connect = self
            .targets()
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let egress = (self.network == NetworkMode::Allowlist).then(|| {
            let bits = if self.listener.is_ipv4() { 32 } else { 128 };
            vec![EgressRule {
                cidr: format!("{}/{bits}", self.listener.ip()),
                ports: Some(vec![i32::from(self.listener.port())]),
            }]
        });
        EvaluationSpec {
            image: self.image.to_string(),
            // The image's entrypoint is the binary, as for the controller's own pod.
            command: None,
            args: Some(vec![SUBCOMMAND.into()]),
            env: Some(vec![EnvVar {
                name: CONNECT_ENV.into(),
                value: Some(connect),
                value_from: None,
            }]),
            resources: Some(Resources {
                cpu: Some(Quantity("100m".into())),
                memory: Some(Quantity("128Mi".into())),
                ephemeral_storage: Some(Quantity("128Mi".into())),
                gpu: None,
            }),
            sandbox: Some(Sandbox {
                runtime_class_name: None,
                network: Some(self.network),
                egress,
            }),
            ..Default::default()
        }
    }

    /// Canary metadata instead of an evaluation's: no managed label and no Evaluation owner, so
    /// neither the orphan sweep nor admission ever counts a canary pod.
    fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.to_string()),
            namespace: Some(self.namespace.to_string()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".into(), "crucible".into()),
                ("app.kubernetes.io/component".into(), COMPONENT.into()),
                ("app.kubernetes.io/managed-by".into(), "crucible".into()),
                ("app.kubernetes.io/part-of".into(), "crucible".into()),
                (CANARY_LABEL.into(), self.id.into()),
            ])),
            annotations: Some(BTreeMap::from([(
                RUNTIME_CLASS_ANNOTATION.into(),
                self.runtime_class.into(),
            )])),
            owner_references: self.owner.map(|o| vec![o.clone()]),
            ..Default::default()
        }
    }

    fn owner(&self) -> Owner {
        Owner {
            name: self.name.to_string(),
            namespace: self.namespace.to_string(),
            uid: self.id.to_string(),
            reference: OwnerReference::default(),
            suite: None,
            suite_reference: None,
        }
    }

    /// The canary pod: an evaluation pod of the spec above, with canary metadata.
    pub fn pod(&self, config: &Config) -> Pod {
        let attempt = Attempt {
            pod_name: self.name,
            attempt_id: self.id,
            run_id: self.id,
            runtime_class: Some(self.runtime_class),
            timeout_seconds: self.timeout_seconds,
            workspace: None,
        };
        let mut pod = desired_pod(&self.spec(), &self.owner(), &attempt, config);
        pod.metadata = self.meta();
        pod
    }

    /// The canary's NetworkPolicy, created before its pod as for a real run: deny all, or
    /// allow egress to the listener port only.
    pub fn network_policy(&self) -> NetworkPolicy {
        // The controller's own listener is the one destination (nothing is forbidden to it).
        let policy = desired_network_policy(&self.spec(), &self.owner(), self.name, self.id, &[]);
        self.canary_policy(policy, self.name.to_string())
    }

    /// With a gateway, the second policy of the canary's pod: the one every run with models
    /// gets (egress to the gateway's pods only). Policies add up, so the pod may reach the
    /// listener port and the gateway, and nothing else.
    pub fn gateway_policy(&self) -> Option<NetworkPolicy> {
        let (gateway, _) = self.gateway.as_ref()?;
        let name = self.gateway_policy_name();
        let policy = gateway_network_policy(&self.owner(), &name, self.id, gateway);
        Some(self.canary_policy(policy, name))
    }

    /// Name of [`Self::gateway_policy`].
    pub fn gateway_policy_name(&self) -> String {
        format!("{}-gateway", self.name)
    }

    /// `policy` with canary metadata, named `name`, selecting this run's pod by its label.
    fn canary_policy(&self, mut policy: NetworkPolicy, name: String) -> NetworkPolicy {
        policy.metadata = ObjectMeta {
            name: Some(name),
            ..self.meta()
        };
        if let Some(spec) = policy.spec.as_mut() {
            spec.pod_selector = Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(CANARY_LABEL.into(), self.id.into())])),
                ..Default::default()
            });
        }
        policy
    }
}

/// The `IP:PORT` of a gateway's base URL (`http://IP:PORT`, as the controller resolves it).
pub fn gateway_address(base_url: &str) -> Option<SocketAddr> {
    base_url
        .strip_prefix("http://")?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// What the listener writes to every connection in the run with `nonce`.
pub fn greeting(nonce: &str) -> String {
    format!("{GREETING} {nonce}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Evaluation;
    use crate::run::owner::owner;

    fn run(network: NetworkMode) -> Run<'static> {
        Run {
            name: "crucible-canary-0123456789",
            id: "0123456789",
            namespace: "crucible-system",
            owner: None,
            runtime_class: "gvisor",
            network,
            listener: "10.88.0.1:40001".parse().expect("addr"),
            unlisted: "10.88.0.1:40002".parse().expect("addr"),
            gateway: None,
            image: "localhost/crucible/controller:dev",
            timeout_seconds: 120,
        }
    }

    /// The canary pod has the sandbox of a real evaluation's pod: only metadata, the command
    /// and the resources differ.
    #[test]
    fn the_canary_pod_is_sandboxed_exactly_like_an_evaluation() {
        let config = Config::default();
        let canary = run(NetworkMode::None).pod(&config);
        let ev = Evaluation::test();
        let real = desired_pod(
            &ev.spec,
            &owner(&ev).expect("owner"),
            &Attempt {
                pod_name: "x",
                attempt_id: "x",
                run_id: "x",
                runtime_class: Some("gvisor"),
                timeout_seconds: 120,
                workspace: None,
            },
            &config,
        );
        let (mut c, mut r) = (
            canary.spec.clone().expect("spec"),
            real.spec.clone().expect("spec"),
        );
        for spec in [&mut c, &mut r] {
            let container = &mut spec.containers[0];
            container.command = None;
            container.args = None;
            container.env = None;
            container.resources = None;
            container.image = None;
            container.working_dir = None;
        }
        assert_eq!(c, r);
        assert_eq!(c.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(c.automount_service_account_token, Some(false));
        let labels = canary.metadata.labels.expect("labels");
        assert!(!labels.contains_key(crate::labels::MANAGED_LABEL));
        assert_eq!(labels[CANARY_LABEL], "0123456789");
        assert!(canary.metadata.owner_references.is_none());
        assert_eq!(
            canary.metadata.annotations.expect("annotations")[RUNTIME_CLASS_ANNOTATION],
            "gvisor"
        );
    }

    #[test]
    fn the_probe_connects_to_the_listener_and_for_allowlist_to_the_unlisted_port() {
        let env_of = |p: &Pod| {
            p.spec.as_ref().expect("spec").containers[0]
                .env
                .iter()
                .flatten()
                .find(|e| e.name == CONNECT_ENV)
                .and_then(|e| e.value.clone())
        };
        let config = Config::default();
        assert_eq!(
            env_of(&run(NetworkMode::None).pod(&config)).as_deref(),
            Some("10.88.0.1:40001")
        );
        assert_eq!(
            env_of(&run(NetworkMode::Allowlist).pod(&config)).as_deref(),
            Some("10.88.0.1:40001,10.88.0.1:40002")
        );
        let container = &run(NetworkMode::None)
            .pod(&config)
            .spec
            .expect("spec")
            .containers[0];
        assert_eq!(container.command, None, "the image's entrypoint runs");
        assert_eq!(container.args, Some(vec![SUBCOMMAND.to_string()]));
    }

    #[test]
    fn the_policy_denies_all_or_allows_only_the_listener_port_of_this_canary() {
        let none = run(NetworkMode::None).network_policy();
        let spec = none.spec.expect("spec");
        assert_eq!(spec.egress, Some(vec![]));
        assert_eq!(spec.ingress, Some(vec![]));
        assert_eq!(
            spec.pod_selector.expect("selector").match_labels,
            Some(BTreeMap::from([(CANARY_LABEL.into(), "0123456789".into())]))
        );
        let allow = run(NetworkMode::Allowlist).network_policy();
        let egress = allow.spec.expect("spec").egress.expect("egress");
        assert_eq!(egress.len(), 1);
        let peer = &egress[0].to.as_ref().expect("to")[0];
        assert_eq!(
            peer.ip_block.as_ref().map(|b| b.cidr.as_str()),
            Some("10.88.0.1/32")
        );
        let ports = egress[0].ports.as_ref().expect("ports");
        assert_eq!(ports.len(), 1);
        assert_eq!(
            ports[0].port,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(40001))
        );
        assert!(run(NetworkMode::Allowlist).gateway_policy().is_none());
    }

    #[test]
    fn with_a_gateway_the_canary_also_has_the_policy_of_runs_with_models_and_calls_it() {
        let labels = BTreeMap::from([("app.kubernetes.io/name".into(), "crucible-gateway".into())]);
        let base_url = "http://10.96.0.40:8080";
        let address = gateway_address(base_url).expect("an address");
        assert_eq!(address.to_string(), "10.96.0.40:8080");
        assert_eq!(gateway_address("https://gateway.example/"), None);
        let canary = Run {
            gateway: Some((
                Gateway {
                    base_url,
                    namespace: "crucible-system",
                    pod_labels: &labels,
                    port: 8080,
                },
                address,
            )),
            ..run(NetworkMode::Allowlist)
        };
        assert_eq!(
            canary.targets(),
            [canary.listener, canary.unlisted, address],
            "the probe connects to the gateway too"
        );
        let policy = canary.gateway_policy().expect("a second policy");
        assert_eq!(
            policy.metadata.name.as_deref(),
            Some("crucible-canary-0123456789-gateway")
        );
        let spec = policy.spec.expect("spec");
        assert_eq!(
            spec.pod_selector.expect("selector").match_labels,
            Some(BTreeMap::from([(CANARY_LABEL.into(), "0123456789".into())]))
        );
        let egress = spec.egress.expect("egress");
        let peer = &egress[0].to.as_ref().expect("to")[0];
        assert_eq!(
            peer.pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(labels.clone())
        );
        assert!(
            peer.ip_block.is_none(),
            "the gateway's pods, not an address range"
        );
    }
}
