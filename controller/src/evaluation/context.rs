//! What every Evaluation reconcile shares: the client, settings, caches, the admission gate.

use std::sync::Arc;

use crate::events::Recorder;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::admission::Gate;
use crate::cache::Caches;
use crate::cache::Indexed;
use crate::canary::SandboxVerdicts;
use crate::config::Config;
use crate::crd::EvaluationQuota;
use crate::evaluation::sandbox_policy::SandboxPolicies;
use crate::gateway::notice::Notices;
use crate::metrics::Metrics;
use crate::source::FetchPool;
use crate::stop::{STOP_CONFIGMAP, Switch};
use crate::transfer::Transfers;

/// Everything a reconcile needs.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Planning settings.
    pub config: Config,
    /// Event recorder shared by all reconciles.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The admission gate.
    pub admission: Arc<Gate>,
    /// Cache of EvaluationQuotas, indexed by namespace.
    pub quotas: Arc<Indexed<EvaluationQuota>>,
    /// Cache of the emergency-stop ConfigMap.
    pub stop_switch: Store<ConfigMap>,
    /// Namespace of the emergency-stop ConfigMap.
    pub system_namespace: String,
    /// Git fetches, outside the reconciles.
    pub git: Arc<FetchPool>,
    /// The sandbox canary's verdicts: runs of an unverified RuntimeClass are held.
    pub sandbox: Arc<SandboxVerdicts>,
    /// Caches of Evaluations, suites and sandbox pods.
    pub caches: Arc<Caches>,
    /// Cache of RuntimeClasses.
    pub runtime_classes: Store<RuntimeClass>,
    /// Which namespaces have their deny-all sandbox NetworkPolicy in place.
    pub sandbox_policies: Arc<SandboxPolicies>,
    /// Samples transfers from finished pods to the results store (`None`: no store).
    pub transfers: Option<Arc<Transfers>>,
    /// Questions and notices to the model gateway, outside the reconciles (`None`: no
    /// gateway).
    pub notices: Option<Arc<Notices>>,
}

impl Context {
    /// The emergency-stop switch as the cache holds it.
    pub fn stop_switch(&self) -> Switch {
        let key = ObjectRef::new(STOP_CONFIGMAP).within(&self.system_namespace);
        Switch::from_configmap(self.stop_switch.get(&key).as_deref())
    }

    /// Whether RuntimeClass `name` exists, from the cache.
    pub fn runtime_class_exists(&self, name: &str) -> bool {
        self.runtime_classes.get(&ObjectRef::new(name)).is_some()
    }

    /// The EvaluationQuotas of `namespace`, from the cache.
    pub fn quotas_of(&self, namespace: &str) -> Vec<Arc<EvaluationQuota>> {
        self.quotas.indexed(namespace)
    }
}

#[cfg(test)]
impl Context {
    /// A context whose client talks to an [`ApiServerVerifier`], with the RuntimeClass
    /// `gvisor` in its cache and no pods.
    pub fn test() -> (Arc<Context>, crate::fixtures::ApiServerVerifier) {
        Context::test_with(Vec::new(), true)
    }

    /// [`Context::test`] with `pods` in the pod cache and, when `sandbox`, the RuntimeClass
    /// `gvisor`.
    pub fn test_with(
        pods: Vec<k8s_openapi::api::core::v1::Pod>,
        sandbox: bool,
    ) -> (Arc<Context>, crate::fixtures::ApiServerVerifier) {
        use kube::runtime::watcher::Event;
        let caches = crate::cache::Caches::new(1);
        for pod in pods {
            caches.pods.apply(None, Event::Apply(pod));
        }
        let (runtime_classes, mut classes) = kube::runtime::reflector::store();
        if sandbox {
            let gvisor = k8s_openapi::api::node::v1::RuntimeClass {
                metadata: kube::api::ObjectMeta {
                    name: Some("gvisor".into()),
                    ..Default::default()
                },
                handler: "runsc".into(),
                ..Default::default()
            };
            classes.apply_watcher_event(&Event::Apply(gvisor));
        }
        let (client, verifier) = crate::fixtures::ApiServerVerifier::client();
        let ctx = Context {
            recorder: crate::events::recorder(&client, None),
            client,
            config: Config::default(),
            metrics: Arc::default(),
            admission: Arc::default(),
            quotas: Arc::new(crate::cache::Indexed::new(1, kube::ResourceExt::namespace)),
            stop_switch: kube::runtime::reflector::store().0,
            system_namespace: "crucible-system".into(),
            git: Arc::new(crate::source::FetchPool::new(
                crate::source::GitCache::new(
                    std::env::temp_dir().join("crucible-test-git"),
                    1 << 20,
                ),
                Config::default().follow_interval,
            )),
            sandbox: Arc::new(crate::canary::SandboxVerdicts::unchecked()),
            caches: Arc::new(caches),
            runtime_classes,
            sandbox_policies: Arc::default(),
            transfers: None,
            notices: None,
        };
        (Arc::new(ctx), verifier)
    }
}
