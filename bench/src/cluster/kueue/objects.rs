//! What the Kueue baseline creates, as JSON, and what it reads back: the queue objects, the
//! suspended Jobs, Kueue's own Configuration, the Workload status it waits for, the resources
//! its CRDs define and the patch that lets go of Kueue's finalizers. Pure, so the tests pin it.

use kube::api::ApiResource;
use serde_json::{Value, json};

use crate::cluster::objects::{IMAGE, RUN_LABEL, resource};

/// The API version of every Kueue object the baseline writes (the CRDs' storage version).
const API_VERSION: &str = "kueue.x-k8s.io/v1beta2";
/// The label that puts a Job in a LocalQueue.
pub const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// The prefix of every finalizer Kueue sets (`kueue.x-k8s.io/resource-in-use`, …).
const FINALIZER_PREFIX: &str = "kueue.x-k8s.io/";
/// Covered by the ClusterQueue and asked for by each Job's pod, as an Evaluation's sandbox does.
const CPU: &str = "1";

pub fn workloads() -> ApiResource {
    resource("kueue.x-k8s.io", "v1beta2", "Workload", "workloads")
}

pub fn local_queues() -> ApiResource {
    resource("kueue.x-k8s.io", "v1beta2", "LocalQueue", "localqueues")
}

pub fn cluster_queues() -> ApiResource {
    resource("kueue.x-k8s.io", "v1beta2", "ClusterQueue", "clusterqueues")
}

pub fn resource_flavors() -> ApiResource {
    resource(
        "kueue.x-k8s.io",
        "v1beta2",
        "ResourceFlavor",
        "resourceflavors",
    )
}

pub fn crds() -> ApiResource {
    resource(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
    )
}

/// A ResourceFlavor with no node labels (any node), labelled with the run's id.
pub fn resource_flavor(name: &str, run: &str) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "ResourceFlavor",
        "metadata": {"name": name, "labels": {RUN_LABEL: run}},
    })
}

/// A ClusterQueue for namespace `ns` only, one CPU of `flavor`, held: `stopPolicy: Hold`
/// admits nothing new, as a paused EvaluationQuota does (a zero quota would send every
/// Workload through the scheduler's admission attempt instead, which is not what B3 measures).
pub fn cluster_queue(name: &str, flavor: &str, ns: &str, run: &str) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "ClusterQueue",
        "metadata": {"name": name, "labels": {RUN_LABEL: run}},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "resourceGroups": [{
                "coveredResources": ["cpu"],
                "flavors": [{"name": flavor, "resources": [{"name": "cpu", "nominalQuota": CPU}]}],
            }],
            "stopPolicy": "Hold",
        },
    })
}

/// A LocalQueue of the namespace feeding `cluster_queue`.
pub fn local_queue(name: &str, cluster_queue: &str) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "LocalQueue",
        "metadata": {"name": name},
        "spec": {"clusterQueue": cluster_queue},
    })
}

/// A Job of one pod in `queue`, created suspended: what Kueue's mutating webhook would do, so
/// none is installed (Kueue only unsuspends a Job it admits).
pub fn job(name: &str, queue: &str) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {QUEUE_LABEL: queue}},
        "spec": {
            "suspend": true,
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": IMAGE,
                    "command": ["python3", "-c", "print(42)"],
                    "resources": {"requests": {"cpu": CPU}},
                }],
            }},
        }
    })
}

/// Where Kueue listens (all on 127.0.0.1) and keeps its webhook certificate.
pub struct Listen<'a> {
    pub health: u16,
    pub metrics: u16,
    pub webhook: u16,
    pub cert_dir: &'a str,
}

/// Kueue's Configuration: its defaults but for what a host process needs (no leader
/// election, no certificate management, ports on loopback), the client without a client-side
/// rate limit (`qps: -1`, as our controller has none), and the visibility API off (an
/// aggregated API server that needs an APIService; not on the queueing path).
pub fn configuration(namespace: &str, listen: &Listen<'_>) -> Value {
    json!({
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": namespace,
        "manageJobsWithoutQueueName": false,
        "leaderElection": {"leaderElect": false},
        "health": {"healthProbeBindAddress": format!("127.0.0.1:{}", listen.health)},
        "metrics": {"bindAddress": format!("127.0.0.1:{}", listen.metrics)},
        "webhook": {"host": "127.0.0.1", "port": listen.webhook, "certDir": listen.cert_dir},
        "internalCertManagement": {"enable": false},
        "clientConnection": {"qps": -1, "burst": 1},
        "integrations": {"frameworks": ["batch/job"]},
        "featureGates": {"VisibilityOnDemand": false},
    })
}

fn conditions(obj: &Value) -> impl Iterator<Item = &Value> {
    obj["status"]["conditions"].as_array().into_iter().flatten()
}

/// Kueue has given the Workload its queued status: `QuotaReserved` False (reason
/// `Inadmissible` under a held ClusterQueue, `Pending` when it did not fit).
pub fn quota_not_reserved(obj: &Value) -> bool {
    conditions(obj).any(|c| c["type"] == "QuotaReserved" && c["status"] == "False")
}

/// The ClusterQueue's controller has looked at it (its `Active` condition is set).
pub fn has_active_condition(obj: &Value) -> bool {
    conditions(obj).any(|c| c["type"] == "Active")
}

/// The CRD's condition `Established` is True: its resource is served.
pub fn established(crd: &Value) -> bool {
    conditions(crd).any(|c| c["type"] == "Established" && c["status"] == "True")
}

/// The resource a CRD defines (its storage version) and whether it is namespaced.
pub fn crd_resource(crd: &Value) -> Option<(ApiResource, bool)> {
    let spec = &crd["spec"];
    let version = spec["versions"]
        .as_array()?
        .iter()
        .find(|v| v["storage"] == true)?["name"]
        .as_str()?;
    let resource = resource(
        spec["group"].as_str()?,
        version,
        spec["names"]["kind"].as_str()?,
        spec["names"]["plural"].as_str()?,
    );
    Some((resource, spec["scope"] == "Namespaced"))
}

/// The merge patch that removes Kueue's finalizers from an object with `finalizers`, keeping
/// any other's; `None` if it has none of Kueue's.
pub fn release_patch(finalizers: &[String]) -> Option<Value> {
    let (kueue, others): (Vec<&String>, Vec<&String>) = finalizers
        .iter()
        .partition(|f| f.starts_with(FINALIZER_PREFIX));
    (!kueue.is_empty()).then(|| json!({"metadata": {"finalizers": others}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_suspended_in_their_queue_and_ask_what_the_queue_covers() {
        let job = job("j-00001", "bench");
        assert_eq!(job["spec"]["suspend"], true);
        assert_eq!(job["metadata"]["labels"][QUEUE_LABEL], "bench");
        let cq = cluster_queue("cq", "rf", "ns-1", "run1");
        let group = &cq["spec"]["resourceGroups"][0];
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            group["coveredResources"][0],
            container["resources"]["requests"]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .as_str()
        );
        assert_eq!(group["flavors"][0]["name"], "rf");
        assert_eq!(cq["spec"]["stopPolicy"], "Hold");
        assert_eq!(
            cq["spec"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "ns-1"
        );
        assert_eq!(cq["metadata"]["labels"][RUN_LABEL], "run1");
        assert_eq!(local_queue("bench", "cq")["spec"]["clusterQueue"], "cq");
        assert_eq!(
            resource_flavor("rf", "run1")["metadata"]["labels"][RUN_LABEL],
            "run1"
        );
    }

    #[test]
    fn the_configuration_listens_on_loopback_without_rate_limit_or_cert_management() {
        let listen = Listen {
            health: 1,
            metrics: 2,
            webhook: 3,
            cert_dir: "/tmp/x",
        };
        let c = configuration("bench-x-system", &listen);
        assert_eq!(c["health"]["healthProbeBindAddress"], "127.0.0.1:1");
        assert_eq!(c["metrics"]["bindAddress"], "127.0.0.1:2");
        assert_eq!(c["webhook"]["port"], 3);
        assert_eq!(c["webhook"]["certDir"], "/tmp/x");
        assert_eq!(c["internalCertManagement"]["enable"], false);
        assert_eq!(c["leaderElection"]["leaderElect"], false);
        assert!(c["clientConnection"]["qps"].as_f64().unwrap() < 0.0);
        assert_eq!(c["namespace"], "bench-x-system");
    }

    #[test]
    fn a_workload_is_queued_once_quota_reserved_is_false() {
        let wl = |conditions: Value| json!({"status": {"conditions": conditions}});
        assert!(!quota_not_reserved(&json!({})));
        assert!(!quota_not_reserved(&wl(json!([]))));
        assert!(quota_not_reserved(&wl(json!([
            {"type": "QuotaReserved", "status": "False", "reason": "Inadmissible"}
        ]))));
        assert!(!quota_not_reserved(&wl(json!([
            {"type": "QuotaReserved", "status": "True"}
        ]))));
        assert!(!quota_not_reserved(&wl(json!([
            {"type": "Admitted", "status": "False"}
        ]))));
        assert!(has_active_condition(&wl(
            json!([{"type": "Active", "status": "False"}])
        )));
        assert!(!has_active_condition(&wl(json!([]))));
        assert!(established(&wl(
            json!([{"type": "Established", "status": "True"}])
        )));
        assert!(!established(&wl(
            json!([{"type": "Established", "status": "False"}])
        )));
    }

    #[test]
    fn a_crd_names_its_storage_version_and_scope() {
        let crd = json!({"spec": {
            "group": "kueue.x-k8s.io", "scope": "Namespaced",
            "names": {"kind": "Workload", "plural": "workloads"},
            "versions": [{"name": "v1beta1", "storage": false}, {"name": "v1beta2", "storage": true}],
        }});
        let (resource, namespaced) = crd_resource(&crd).unwrap();
        assert_eq!(resource.api_version, "kueue.x-k8s.io/v1beta2");
        assert_eq!(
            (resource.kind.as_str(), resource.plural.as_str()),
            ("Workload", "workloads")
        );
        assert!(namespaced);
        let mut cluster = crd.clone();
        cluster["spec"]["scope"] = json!("Cluster");
        assert!(!crd_resource(&cluster).unwrap().1);
        assert!(crd_resource(&json!({"spec": {"versions": []}})).is_none());
    }

    #[test]
    fn releasing_removes_only_kueues_finalizers() {
        let f = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(release_patch(&f(&[])), None);
        assert_eq!(release_patch(&f(&["other.io/keep"])), None);
        assert_eq!(
            release_patch(&f(&["kueue.x-k8s.io/resource-in-use", "other.io/keep"])),
            Some(json!({"metadata": {"finalizers": ["other.io/keep"]}}))
        );
        assert_eq!(
            release_patch(&f(&["kueue.x-k8s.io/resource-in-use"])),
            Some(json!({"metadata": {"finalizers": []}}))
        );
    }
}
