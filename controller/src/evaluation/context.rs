//! What every Evaluation reconcile shares: the client, settings, caches, the admission gate.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::ResourceExt;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::admission::Gate;
use crate::config::Config;
use crate::crd::EvaluationQuota;
use crate::evaluation::sandbox_policy::SandboxPolicies;
use crate::metrics::Metrics;
use crate::source::GitCache;
use crate::stop::{STOP_CONFIGMAP, Switch};

/// Everything a reconcile needs.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Planning settings.
    pub config: Config,
    /// Event recorder shared by all reconciles (it de-duplicates repeated Events).
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The admission gate.
    pub admission: Arc<Gate>,
    /// Cache of EvaluationQuotas.
    pub quotas: Store<EvaluationQuota>,
    /// Cache of the emergency-stop ConfigMap.
    pub stop_switch: Store<ConfigMap>,
    /// Namespace of the emergency-stop ConfigMap.
    pub system_namespace: String,
    /// Cache of git repositories.
    pub git: GitCache,
    /// Which namespaces have their deny-all sandbox NetworkPolicy in place.
    pub sandbox_policies: Arc<SandboxPolicies>,
}

impl Context {
    /// The emergency-stop switch as the cache holds it.
    pub fn stop_switch(&self) -> Switch {
        let key = ObjectRef::new(STOP_CONFIGMAP).within(&self.system_namespace);
        Switch::from_configmap(self.stop_switch.get(&key).as_deref())
    }

    /// The EvaluationQuotas of `namespace`, from the cache.
    pub fn quotas_of(&self, namespace: &str) -> Vec<Arc<EvaluationQuota>> {
        self.quotas
            .state()
            .into_iter()
            .filter(|q| q.namespace().as_deref() == Some(namespace))
            .collect()
    }
}
