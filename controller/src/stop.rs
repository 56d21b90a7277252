//! The emergency stop: a switch kept in the cluster, the ConfigMap `crucible-emergency-stop` in
//! the system namespace, so that it is visible with kubectl and survives controller restarts.
//! While it covers a namespace, the controller cancels that namespace's running Evaluations
//! (keeping their log tails) and admits nothing new there.
//!
//! [`Switch`] is pure; [`stop`], [`resume`] and [`wait_until_stopped`] are the I/O behind
//! `crucible stop` and `crucible resume`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, ListParams};

use crate::crd::Evaluation;
use crate::labels::MANAGED_LABEL;
use crate::ownership;
use crate::run::liveness;
use crate::ssa;

/// Name of the switch ConfigMap.
pub const STOP_CONFIGMAP: &str = "crucible-emergency-stop";
const ALL_KEY: &str = "all";
const NAMESPACES_KEY: &str = "namespaces";
const REASON_KEY: &str = "reason";
/// Interval between two looks while waiting for pods to go.
const POLL: Duration = Duration::from_millis(250);

/// What the switch covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Switch {
    /// Every namespace.
    pub all: bool,
    /// These namespaces.
    pub namespaces: BTreeSet<String>,
    /// Why, as given to `crucible stop --reason`.
    pub reason: Option<String>,
}

/// Where `crucible stop` / `resume` act.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everywhere.
    All,
    /// These namespaces.
    Namespaces(Vec<String>),
}

impl Switch {
    /// Reads the switch from its ConfigMap (absent: nothing stopped).
    pub fn from_configmap(cm: Option<&ConfigMap>) -> Self {
        let data = cm.and_then(|c| c.data.clone()).unwrap_or_default();
        Switch {
            all: data.get(ALL_KEY).is_some_and(|v| v == "true"),
            namespaces: data
                .get(NAMESPACES_KEY)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            reason: data.get(REASON_KEY).cloned().filter(|r| !r.is_empty()),
        }
    }

    /// The ConfigMap data of this switch.
    pub fn to_data(&self) -> BTreeMap<String, String> {
        let mut data = BTreeMap::from([
            (ALL_KEY.to_string(), self.all.to_string()),
            (
                NAMESPACES_KEY.to_string(),
                self.namespaces
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ]);
        if let Some(reason) = &self.reason {
            data.insert(REASON_KEY.to_string(), reason.clone());
        }
        data
    }

    /// Why `namespace` is stopped, if it is.
    pub fn covers(&self, namespace: &str) -> Option<String> {
        (self.all || self.namespaces.contains(namespace)).then(|| {
            let reason = self.reason.as_deref().unwrap_or("no reason given");
            format!("stopped by `crucible stop`: {reason}")
        })
    }

    /// Whether nothing is stopped.
    pub fn is_clear(&self) -> bool {
        !self.all && self.namespaces.is_empty()
    }

    /// The switch after `crucible stop` on `scope`.
    pub fn stopped(mut self, scope: &Scope, reason: Option<String>) -> Self {
        match scope {
            Scope::All => self.all = true,
            Scope::Namespaces(list) => self.namespaces.extend(list.iter().cloned()),
        }
        self.reason = reason.or(self.reason);
        self
    }

    /// The switch after `crucible resume` on `scope` (`All` clears everything).
    pub fn resumed(mut self, scope: &Scope) -> Self {
        match scope {
            Scope::All => return Switch::default(),
            Scope::Namespaces(list) => list.iter().for_each(|ns| {
                self.namespaces.remove(ns);
            }),
        }
        if self.is_clear() {
            self.reason = None;
        }
        self
    }
}

/// Read-modify-writes of the switch before giving up: each 409 means another `stop` or `resume`
/// wrote between our read and our write, so the change is recomputed on what it wrote.
const ATTEMPTS: usize = 5;

/// Applies `change` to the switch under optimistic concurrency: the write carries the
/// resourceVersion it was computed from (create-only when there was no switch), so a
/// concurrent `resume` can never silently undo a `stop --all`, nor the other way round.
async fn update(
    client: &Client,
    system_namespace: &str,
    change: impl Fn(Switch) -> Switch,
) -> Result<Switch, String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(system_namespace.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    ssa::apply(&namespaces, ssa::STOP_MANAGER, &ns)
        .await
        .map_err(|e| format!("cannot create namespace {system_namespace}: {e}"))?;
    let api: Api<ConfigMap> = ssa::scoped(client, Some(system_namespace));
    let what = format!("{system_namespace}/{STOP_CONFIGMAP}");
    for _ in 0..ATTEMPTS {
        let current = api
            .get_opt(STOP_CONFIGMAP)
            .await
            .map_err(|e| format!("cannot read {what}: {e}"))?;
        let switch = change(Switch::from_configmap(current.as_ref()));
        let version = current.and_then(|c| c.metadata.resource_version);
        match write(&api, version, &switch).await {
            Ok(()) => return Ok(switch),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(format!("cannot write {what}: {e}")),
        }
    }
    Err(format!(
        "cannot write {what}: it changed under every one of {ATTEMPTS} attempts; try again"
    ))
}

/// Writes `switch` if the ConfigMap is still at `version` (absent when `None`); 409 otherwise.
async fn write(
    api: &Api<ConfigMap>,
    version: Option<String>,
    switch: &Switch,
) -> Result<(), kube::Error> {
    let part_of = (
        "app.kubernetes.io/part-of".to_string(),
        "crucible".to_string(),
    );
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(STOP_CONFIGMAP.to_string()),
            labels: Some([part_of].into()),
            // A resourceVersion in an apply is a precondition: the server answers 409 when
            // the object moved on since we read it.
            resource_version: version.clone(),
            ..Default::default()
        },
        data: Some(switch.to_data()),
        ..Default::default()
    };
    match version {
        Some(_) => ssa::apply(api, ssa::STOP_MANAGER, &cm).await,
        None => ssa::create(api, ssa::STOP_MANAGER, &cm).await,
    }
    .map(|_| ())
}

/// `crucible stop`: sets the switch for `scope`.
///
/// # Errors
/// The API refused the write.
pub async fn stop(
    client: &Client,
    system_namespace: &str,
    scope: &Scope,
    reason: Option<String>,
) -> Result<Switch, String> {
    update(client, system_namespace, |s| {
        s.stopped(scope, reason.clone())
    })
    .await
}

/// `crucible resume`: clears the switch for `scope`.
///
/// # Errors
/// The API refused the write.
pub async fn resume(
    client: &Client,
    system_namespace: &str,
    scope: &Scope,
) -> Result<Switch, String> {
    update(client, system_namespace, |s| s.resumed(scope)).await
}

/// The runs' pods among `pods` (listed by the managed label) that still hold capacity, as
/// `namespace/name`. Only a pod an Evaluation controls counts: the label can be copied onto any
/// pod, and a decoy must not make `stop --wait` wait out its timeout.
fn still_running(pods: Vec<Pod>, now: &Time) -> Vec<String> {
    pods.into_iter()
        .filter(|p| ownership::controller::<Evaluation>(&p.metadata).is_some())
        .filter(|p| liveness::holds_capacity(p, now))
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.unwrap_or_default(),
                p.metadata.name.unwrap_or_default()
            )
        })
        .collect()
}

/// Waits until no evaluation pod in `scope` is still alive; returns how long it took.
///
/// # Errors
/// Pods still alive after `timeout` (named), or the API failed.
pub async fn wait_until_stopped(
    client: &Client,
    scope: &Scope,
    timeout: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let selector = ListParams::default().labels(&format!("{MANAGED_LABEL}=true"));
    loop {
        let apis: Vec<Api<Pod>> = match scope {
            Scope::All => vec![ssa::scoped(client, None)],
            Scope::Namespaces(list) => list
                .iter()
                .map(|ns| ssa::scoped(client, Some(ns)))
                .collect(),
        };
        let mut alive = Vec::new();
        // Pods on a lost node never terminate: past their deletion deadline they count as
        // stopped, as they do for admission.
        let now = Time(jiff::Timestamp::now());
        for api in apis {
            let pods = api
                .list(&selector)
                .await
                .map_err(|e| format!("cannot list pods: {e}"))?;
            alive.extend(still_running(pods.items, &now));
        }
        if alive.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(format!(
                "still running after {timeout:?}: {}",
                alive.join(", ")
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pods_an_evaluation_controls_keep_stop_waiting() {
        use crate::fixtures::{mk_pod, owned_by};
        let now = Time(jiff::Timestamp::now());
        let run = owned_by(mk_pod("run", "Running", vec![]), "u1");
        // A tenant's pod carrying the managed label but no controller reference to an
        // Evaluation, or one naming another kind.
        let decoy = mk_pod("decoy", "Running", vec![]);
        let mut other_kind = owned_by(mk_pod("job-pod", "Running", vec![]), "u2");
        if let Some(r) = other_kind.metadata.owner_references.as_mut() {
            r[0].kind = "Job".into();
        }
        let done = owned_by(mk_pod("done", "Succeeded", vec![]), "u3");
        assert_eq!(
            still_running(vec![run, decoy.clone(), other_kind, done], &now),
            vec!["team-a/run".to_string()]
        );
        assert!(still_running(vec![decoy], &now).is_empty());
    }

    #[test]
    fn stop_and_resume_round_trip_through_the_configmap() {
        let s = Switch::default().stopped(
            &Scope::Namespaces(vec!["a".into(), "b".into()]),
            Some("incident 7".into()),
        );
        let cm = ConfigMap {
            data: Some(s.to_data()),
            ..Default::default()
        };
        let read = Switch::from_configmap(Some(&cm));
        assert_eq!(read, s);
        assert_eq!(
            read.covers("a").as_deref(),
            Some("stopped by `crucible stop`: incident 7")
        );
        assert_eq!(read.covers("c"), None);
        let resumed = read.resumed(&Scope::Namespaces(vec!["a".into()]));
        assert_eq!(resumed.covers("a"), None);
        assert!(resumed.covers("b").is_some());
        assert!(
            resumed
                .resumed(&Scope::Namespaces(vec!["b".into()]))
                .is_clear()
        );
    }

    /// A `resume` of namespace `a` lands between `stop --all`'s read and its write: the write
    /// is refused (409) and the stop is recomputed on the resumed switch, so both hold.
    #[tokio::test]
    async fn a_concurrent_resume_does_not_undo_stop_all() {
        use crate::fixtures::{ApiServerVerifier, status_error};
        use http::Method;
        use serde_json::json;
        use std::sync::{Arc, Mutex};

        let (client, verifier) = ApiServerVerifier::client();
        let stopped_a = Switch::default().stopped(&Scope::Namespaces(vec!["a".into()]), None);
        let stored = Arc::new(Mutex::new((1, stopped_a.to_data())));
        let writes = Arc::new(Mutex::new(Vec::new()));
        let (server_stored, server_writes) = (stored.clone(), writes.clone());
        let server = tokio::spawn(verifier.serve(move |method, uri, body| {
            let mut stored = server_stored.lock().expect("lock");
            let configmap = |(version, data): &(u64, BTreeMap<String, String>)| {
                json!({"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                       "metadata": {"name": STOP_CONFIGMAP, "resourceVersion": version.to_string()}})
            };
            match (method, uri.contains("/configmaps/")) {
                (&Method::GET, true) => {
                    let answer = configmap(&stored);
                    // `crucible resume a` writes right after our first read.
                    if stored.0 == 1 {
                        *stored = (2, Switch::default().to_data());
                    }
                    (200, answer)
                }
                (&Method::PATCH, true) => {
                    server_writes.lock().expect("lock").push(body.clone());
                    let current = stored.0.to_string();
                    if body["metadata"]["resourceVersion"] != current.as_str() {
                        return (409, status_error(409, "the object has been modified"));
                    }
                    let data = serde_json::from_value(body["data"].clone()).expect("data");
                    *stored = (stored.0 + 1, data);
                    (200, configmap(&stored))
                }
                _ => (200, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "crucible-system"}})),
            }
        }));
        let switch = stop(&client, "crucible-system", &Scope::All, None)
            .await
            .expect("stop succeeds after a retry");
        drop(client);
        server.await.expect("server");
        assert!(switch.all && switch.namespaces.is_empty(), "{switch:?}");
        let stored = Switch::from_configmap(Some(&ConfigMap {
            data: Some(stored.lock().expect("lock").1.clone()),
            ..Default::default()
        }));
        assert_eq!(stored, switch, "the stored switch is the recomputed one");
        let writes = writes.lock().expect("lock");
        assert_eq!(writes.len(), 2, "one refused write, one retry: {writes:?}");
        assert_eq!(writes[0]["metadata"]["resourceVersion"], "1");
        assert_eq!(writes[1]["metadata"]["resourceVersion"], "2");
    }

    #[test]
    fn stop_all_covers_every_namespace_until_resume_all() {
        let s = Switch::default().stopped(&Scope::All, None);
        assert!(s.covers("anything").is_some());
        assert!(s.resumed(&Scope::All).is_clear());
        assert!(Switch::from_configmap(None).is_clear());
    }
}
