//! The namespace's deny-all NetworkPolicy `crucible-sandbox-deny-all`: one per namespace,
//! selecting every sandbox pod (label `crucible.dev/managed=true`, which every sandbox pod
//! carries), denying all ingress and egress. It isolates the pods of `network: None` runs;
//! `Allowlist` runs add their own policy, whose egress rules add to it (NetworkPolicies are a
//! union of what they allow).
//!
//! It has no owner reference: it belongs to the namespace, not to an Evaluation, and carries
//! the label `crucible.dev/sandbox-policy=deny-all`. Deleting or editing it is repaired before
//! the namespace's next pod.
//!
//! # Guarantees
//! - A `None` run's pod is created only after [`SandboxPolicies::ensure`] returned `Ok` for its
//!   namespace: the policy was applied (and read back as deny-all) by this controller, or seen
//!   so by its watch.
//! - The first run of a namespace applies it; later runs write nothing while the watch of the
//!   controller's NetworkPolicies ([`SandboxPolicies::watch`]) keeps the memory current. A
//!   delete or an edit seen by the watch makes the next pod apply it again. At start, after a
//!   watch error and during a re-list nothing is assumed: every pod applies it until the watch
//!   has listed again.
//! - Applying it (forced) undoes any edit: the selector and the rule lists are atomic, so the
//!   applied values replace whatever another manager put there. The stored result is checked;
//!   one that still is not deny-all (a mutating webhook) refuses the pod.
//! - Limits: a deletion is noticed when its watch event arrives (normally milliseconds); a pod
//!   created in between starts without the policy. Pods running when it is deleted or opened are
//!   covered again at the namespace's next pod. The runtime class without a network
//!   (`runsc --network=none`) is the other, independent layer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::labels::{MANAGED_LABEL, SANDBOX_POLICY_LABEL};
use crate::ssa;

/// Name of the policy in every namespace with sandbox pods.
pub const POLICY_NAME: &str = "crucible-sandbox-deny-all";
/// Value of [`SANDBOX_POLICY_LABEL`] on it.
const POLICY_LABEL_VALUE: &str = "deny-all";

/// The policy of `namespace`: every sandbox pod, no ingress, no egress.
pub fn desired(namespace: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(POLICY_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([
                (SANDBOX_POLICY_LABEL.to_string(), POLICY_LABEL_VALUE.into()),
                ("app.kubernetes.io/managed-by".into(), "crucible".into()),
                ("app.kubernetes.io/part-of".into(), "crucible".into()),
            ])),
            ..Default::default()
        },
        spec: Some(deny_all_spec()),
    }
}

fn deny_all_spec() -> NetworkPolicySpec {
    NetworkPolicySpec {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                MANAGED_LABEL.to_string(),
                "true".to_string(),
            )])),
            match_expressions: None,
        }),
        policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
        ingress: Some(vec![]),
        egress: Some(vec![]),
    }
}

/// Whether `np` is the deny-all policy: its name, exactly the sandbox-pod selector, both
/// policy types and not one rule.
pub fn is_deny_all(np: &NetworkPolicy) -> bool {
    let Some(spec) = &np.spec else {
        return false;
    };
    let wanted = deny_all_spec();
    let selector = spec.pod_selector.clone().unwrap_or_default();
    let types: HashSet<&str> = spec
        .policy_types
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    np.name_any() == POLICY_NAME
        && selector.match_labels == wanted.pod_selector.and_then(|s| s.match_labels)
        && selector.match_expressions.unwrap_or_default().is_empty()
        && types == HashSet::from(["Ingress", "Egress"])
        && spec.ingress.as_ref().is_none_or(Vec::is_empty)
        && spec.egress.as_ref().is_none_or(Vec::is_empty)
}

/// The NetworkPolicies among `policies`, other than the run's own `own`, that select a pod
/// labelled `labels` and allow it some egress. NetworkPolicies add up: each of them would
/// let an `Allowlist` run reach more than its allowlist.
pub fn widening<'a>(
    policies: &'a [NetworkPolicy],
    labels: &BTreeMap<String, String>,
    own: &str,
) -> Vec<&'a str> {
    policies
        .iter()
        .filter(|np| np.metadata.name.as_deref() != Some(own))
        .filter(|np| {
            np.spec.as_ref().is_some_and(|spec| {
                let egress = spec.egress.as_deref().unwrap_or_default();
                // Without policyTypes, a policy with egress rules is an egress policy.
                let types_egress = spec
                    .policy_types
                    .as_ref()
                    .is_none_or(|t| t.iter().any(|t| t == "Egress"));
                types_egress
                    && !egress.is_empty()
                    && selects(&spec.pod_selector.clone().unwrap_or_default(), labels)
            })
        })
        .filter_map(|np| np.metadata.name.as_deref())
        .collect()
}

/// Whether `selector` selects a pod labelled `labels` (an empty selector selects every pod).
/// An operator this code does not know counts as selecting: it fails closed.
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_labels
        && selector.match_expressions.iter().flatten().all(|e| {
            let value = labels.get(&e.key);
            let listed = value.is_some_and(|v| e.values.iter().flatten().any(|x| x == v));
            match e.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => true,
            }
        })
}

/// Why the policy could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The API server refused or failed the write.
    #[error("{0}")]
    Api(#[source] kube::Error),
    /// The policy as stored after applying it is not deny-all.
    #[error("NetworkPolicy {POLICY_NAME} is not deny-all as stored (changed on admission?)")]
    NotDenyAll,
}

/// What the controller knows about the policy of each namespace.
#[derive(Default)]
pub struct SandboxPolicies {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Scopes (a namespace, or `None` for all) whose watch has listed and is streaming.
    synced: HashSet<Option<String>>,
    /// Namespaces with a deny-all policy seen during a scope's current re-list.
    relisting: HashMap<Option<String>, HashSet<String>>,
    namespaces: HashMap<String, Entry>,
}

#[derive(Default)]
struct Entry {
    /// Applied or seen as deny-all, and not deleted or changed since, as far as the watch says.
    known: bool,
    /// Bumped whenever the watch forgets the namespace: an apply that started before does not
    /// mark it known.
    epoch: u64,
    /// Serializes the applies of one namespace: a burst of runs applies it once.
    lock: Arc<tokio::sync::Mutex<()>>,
}

fn in_scope(scope: Option<&str>, namespace: &str) -> bool {
    scope.is_none_or(|s| s == namespace)
}

impl State {
    fn trusted(&self, namespace: &str) -> bool {
        let covered =
            self.synced.contains(&None) || self.synced.contains(&Some(namespace.to_string()));
        covered && self.namespaces.get(namespace).is_some_and(|e| e.known)
    }

    fn forget(&mut self, namespace: &str) {
        if let Some(entry) = self.namespaces.get_mut(namespace) {
            entry.known = false;
            entry.epoch += 1;
            // Nobody is applying it: the entry can go (namespaces come and go).
            if Arc::strong_count(&entry.lock) == 1 {
                self.namespaces.remove(namespace);
            }
        }
    }

    fn unsync(&mut self, scope: Option<&str>) {
        self.synced.remove(&scope.map(str::to_string));
        self.relisting.remove(&scope.map(str::to_string));
        let namespaces: Vec<String> = self
            .namespaces
            .keys()
            .filter(|ns| in_scope(scope, ns))
            .cloned()
            .collect();
        for ns in namespaces {
            self.forget(&ns);
        }
    }
}

impl SandboxPolicies {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the policy of `namespace` is known to be in place (no write needed).
    #[cfg(test)]
    pub(crate) fn is_known(&self, namespace: &str) -> bool {
        self.state().trusted(namespace)
    }

    /// Makes sure the deny-all policy of `namespace` is in place: nothing to do when it is
    /// known, else applied (once for concurrent callers) and the stored result checked.
    ///
    /// # Errors
    /// The API server refused or failed a write, or the policy cannot be made deny-all.
    pub async fn ensure(&self, client: &Client, namespace: &str) -> Result<(), PolicyError> {
        let lock = {
            let mut state = self.state();
            if state.trusted(namespace) {
                return Ok(());
            }
            state
                .namespaces
                .entry(namespace.to_string())
                .or_default()
                .lock
                .clone()
        };
        let _applying = lock.lock().await;
        let epoch = {
            let mut state = self.state();
            if state.trusted(namespace) {
                return Ok(()); // applied by the caller we waited for
            }
            state
                .namespaces
                .entry(namespace.to_string())
                .or_default()
                .epoch
        };
        let api: Api<NetworkPolicy> = ssa::scoped(client, Some(namespace));
        let applied = ssa::apply(&api, ssa::CHILD_MANAGER, &desired(namespace))
            .await
            .map_err(PolicyError::Api)?;
        if !is_deny_all(&applied) {
            return Err(PolicyError::NotDenyAll);
        }
        let mut state = self.state();
        if let Some(entry) = state.namespaces.get_mut(namespace)
            && entry.epoch == epoch
        {
            entry.known = true;
        }
        Ok(())
    }

    /// Takes in one event of the watch of scope `scope` (a namespace, or `None` for all).
    pub fn observe(
        &self,
        scope: Option<&str>,
        event: Result<watcher::Event<NetworkPolicy>, watcher::Error>,
    ) {
        let mut state = self.state();
        let key = scope.map(str::to_string);
        let namespace = |np: &NetworkPolicy| np.namespace().unwrap_or_default();
        match event {
            Err(error) => {
                tracing::warn!(%error, "watch of sandbox NetworkPolicies failed; re-applying them until it recovers");
                state.unsync(scope);
            }
            Ok(watcher::Event::Init) => {
                state.unsync(scope);
                state.relisting.insert(key, HashSet::new());
            }
            Ok(watcher::Event::InitApply(np)) => {
                if is_deny_all(&np)
                    && let Some(seen) = state.relisting.get_mut(&key)
                {
                    seen.insert(namespace(&np));
                }
            }
            Ok(watcher::Event::InitDone) => {
                let seen = state.relisting.remove(&key).unwrap_or_default();
                // What the list did not show is gone, whatever was applied meanwhile.
                let stale: Vec<String> = state
                    .namespaces
                    .keys()
                    .filter(|ns| in_scope(scope, ns) && !seen.contains(*ns))
                    .cloned()
                    .collect();
                for ns in stale {
                    state.forget(&ns);
                }
                for ns in seen {
                    state.namespaces.entry(ns).or_default().known = true;
                }
                state.synced.insert(key);
            }
            Ok(watcher::Event::Apply(np)) if np.name_any() == POLICY_NAME => {
                if is_deny_all(&np) {
                    state.namespaces.entry(namespace(&np)).or_default().known = true;
                } else {
                    state.forget(&namespace(&np));
                }
            }
            Ok(watcher::Event::Apply(_)) => {}
            Ok(watcher::Event::Delete(np)) => {
                if np.name_any() == POLICY_NAME {
                    state.forget(&namespace(&np));
                }
            }
        }
    }

    /// Watches the policies of scope `scope` (label-selected) until the stream ends.
    pub async fn watch(self: Arc<Self>, client: Client, scope: Option<String>) {
        let api: Api<NetworkPolicy> = ssa::scoped(&client, scope.as_deref());
        let selector = format!("{SANDBOX_POLICY_LABEL}={POLICY_LABEL_VALUE}");
        let stream = watcher(api, watcher::Config::default().labels(&selector)).default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            self.observe(scope.as_deref(), event);
        }
    }
}

#[cfg(test)]
#[path = "sandbox_policy_tests.rs"]
mod tests;
