//! Writes per Evaluation life, counted against a fake API server that keeps state: every
//! reconcile of a run from creation to its end (a command run, an inline-source run, the cases
//! of a suite with identical files), each write named by verb and resource.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::Method;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::watcher;
use serde_json::{Value, json};

use crate::cache::Caches;
use crate::crd::Evaluation;
use crate::crd::evaluation::Phase;
use crate::evaluation::Context;
use crate::evaluation::reconcile::reconcile;

const NS: &str = "/namespaces/team-a/";

/// What the fake API server holds, and the writes it received. Pods also go to the
/// controller's pod cache, as its watch would put them there.
struct Cluster {
    caches: Arc<Caches>,
    watch: Vec<watcher::Event<Pod>>,
    evaluations: BTreeMap<String, Value>,
    pods: BTreeMap<String, Value>,
    config_maps: BTreeMap<String, Value>,
    writes: Vec<String>,
    unexpected: Vec<String>,
}

impl Cluster {
    /// Queues the watch event of pod `name` as stored now, or of its deletion.
    fn watch_pod(&mut self, name: &str, deleted: Option<Value>) {
        let event = match (self.pods.get(name), deleted) {
            (Some(pod), _) => serde_json::from_value(pod.clone()).map(watcher::Event::Apply),
            (None, Some(gone)) => serde_json::from_value(gone).map(watcher::Event::Delete),
            (None, None) => return,
        };
        if let Ok(event) = event {
            self.watch.push(event);
        }
    }

    /// Delivers the queued pod events to the controller's pod cache, as its watch does after
    /// the writes returned.
    fn deliver(&mut self) {
        for event in std::mem::take(&mut self.watch) {
            if let watcher::Event::Apply(pod) = &event
                && let Some(owner) = crate::ownership::controller::<Evaluation>(&pod.metadata)
            {
                self.caches.expected.observed(&owner.uid, &pod.name_any());
            }
            self.caches.pods.apply(None, event);
        }
    }

    fn answer(&mut self, method: &Method, uri: &str, body: &Value) -> (u16, Value) {
        let path = uri.split_once('?').map_or(uri, |(p, _)| p);
        // Namespaced paths after the namespace, cluster-scoped ones after the version.
        let rest = path
            .split_once(NS)
            .or_else(|| path.split_once("/v1/"))
            .map_or(path, |(_, r)| r);
        let parts: Vec<&str> = rest.split('/').collect();
        if *method != Method::GET {
            let resource = match parts.as_slice() {
                ["evaluations", _, "status"] => "evaluations/status",
                [resource, ..] => resource,
                [] => "?",
            };
            self.writes.push(format!("{method} {resource}"));
        }
        let missing = || (404, crate::fixtures::status_error(404, "not found"));
        match (method.as_str(), parts.as_slice()) {
            ("GET", ["evaluations", name]) => match self.evaluations.get(*name) {
                Some(ev) => (200, ev.clone()),
                None => missing(),
            },
            ("PATCH", ["evaluations", name, "status"]) => match self.evaluations.get_mut(*name) {
                Some(ev) => {
                    ev["status"] = body["status"].clone();
                    (200, ev.clone())
                }
                None => missing(),
            },
            ("POST", ["pods"]) => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if self.pods.contains_key(&name) {
                    return (409, crate::fixtures::status_error(409, "already exists"));
                }
                let mut stored = body.clone();
                stored["metadata"]["uid"] = format!("uid-{name}").into();
                self.pods.insert(name.clone(), stored.clone());
                self.watch_pod(&name, None);
                (201, stored)
            }
            ("DELETE", ["pods", name]) => match self.pods.remove(*name) {
                Some(pod) => {
                    self.watch_pod(name, Some(pod.clone()));
                    (200, pod)
                }
                None => missing(),
            },
            ("GET", ["pods", _, "log"]) => (200, Value::String("done\n".into())),
            ("PATCH", ["networkpolicies", _]) => (200, body.clone()),
            ("POST", ["configmaps"]) => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if self.config_maps.contains_key(&name) {
                    return (409, crate::fixtures::status_error(409, "already exists"));
                }
                let mut stored = body.clone();
                stored["metadata"]["uid"] = format!("uid-{name}").into();
                self.config_maps.insert(name, stored.clone());
                (201, stored)
            }
            ("GET", ["configmaps", name]) => match self.config_maps.get(*name) {
                Some(cm) => (200, cm.clone()),
                None => missing(),
            },
            ("DELETE", ["configmaps", name]) => match self.config_maps.remove(*name) {
                Some(cm) => (200, cm),
                None => missing(),
            },
            ("POST", ["events"]) => (201, body.clone()),
            _ => {
                self.unexpected.push(format!("{method} {uri}"));
                (500, crate::fixtures::status_error(500, "unexpected"))
            }
        }
    }
}

/// A fake cluster, a context whose client talks to it (the RuntimeClass in its cache, its
/// namespace-policy watch synced, as in the controller), and the cluster's state. Anything but
/// the writes and the reads a reconcile needs (the Evaluation, a ConfigMap, a log) is answered
/// 500 and recorded: pods and RuntimeClasses come from the caches, nothing is LISTed.
fn cluster() -> (Arc<Context>, Arc<Mutex<Cluster>>) {
    let (ctx, api) = Context::test_with(vec![], true);
    ctx.sandbox_policies.observe(None, Ok(watcher::Event::Init));
    ctx.sandbox_policies
        .observe(None, Ok(watcher::Event::InitDone));
    let state = Arc::new(Mutex::new(Cluster {
        caches: ctx.caches.clone(),
        watch: Vec::new(),
        evaluations: BTreeMap::new(),
        pods: BTreeMap::new(),
        config_maps: BTreeMap::new(),
        writes: Vec::new(),
        unexpected: Vec::new(),
    }));
    let server = state.clone();
    tokio::spawn(api.serve(move |method, uri, body| {
        server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answer(method, uri, body)
    }));
    (ctx, state)
}

fn lock(state: &Mutex<Cluster>) -> std::sync::MutexGuard<'_, Cluster> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets the pod status of `ev`'s current pod.
fn set_pod_status(state: &Mutex<Cluster>, ev: &str, status: Value) {
    let mut cluster = lock(state);
    let pod = cluster.evaluations[ev]["status"]["podName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(p) = cluster.pods.get_mut(&pod) {
        p["status"] = status;
    }
    cluster.watch_pod(&pod, None);
}

fn container(state: Value) -> Value {
    json!({"phase": if state.get("running").is_some() { "Running" } else { "Succeeded" },
           "containerStatuses": [{"name": "evaluation", "image": "img", "imageID": "sha256:abc",
                                  "ready": false, "restartCount": 0, "state": state}]})
}

/// One Evaluation's life from creation to its end; returns the writes it caused.
async fn life(
    ctx: &Arc<Context>,
    state: &Arc<Mutex<Cluster>>,
    ev: Evaluation,
    seen_running: bool,
) -> Vec<String> {
    let name = ev.metadata.name.clone().unwrap_or_default();
    let before = {
        let mut cluster = lock(state);
        cluster
            .evaluations
            .insert(name.clone(), serde_json::to_value(&ev).expect("json"));
        cluster.writes.len()
    };
    let again = |ev: &Evaluation| {
        let (ev, ctx, state) = (ev.clone(), ctx.clone(), state.clone());
        async move {
            lock(&state).deliver();
            reconcile(Arc::new(ev), ctx).await.expect("reconcile")
        }
    };
    again(&ev).await; // admitted: pod created
    again(&ev).await; // its own status write comes back: nothing to do
    if seen_running {
        set_pod_status(state, &name, container(json!({"running": {}})));
        again(&ev).await;
    }
    set_pod_status(
        state,
        &name,
        container(json!({"terminated": {"exitCode": 0, "reason": "Completed",
                                        "message": "{\"score\": 1}"}})),
    );
    again(&ev).await; // finished: status, Event, pod deleted
    again(&ev).await; // nothing left to do
    let cluster = lock(state);
    assert!(cluster.unexpected.is_empty(), "{:?}", cluster.unexpected);
    assert_eq!(
        cluster.evaluations[&name]["status"]["phase"],
        Phase::Succeeded.as_str()
    );
    cluster.writes[before..].to_vec()
}

fn command_run(name: &str, uid: &str) -> Evaluation {
    let mut ev = Evaluation::test().with_spec(|s| s.source = None);
    ev.metadata.name = Some(name.into());
    ev.metadata.uid = Some(uid.into());
    ev
}

/// A run of a command, without source, after the first run of its namespace.
const COMMAND_RUN: [&str; 6] = [
    "POST pods",
    "PATCH evaluations/status",
    "POST events",
    "PATCH evaluations/status",
    "POST events",
    "DELETE pods",
];

#[tokio::test]
async fn a_command_run_writes_six_times_and_the_namespace_policy_once() {
    let (ctx, state) = cluster();
    let first = life(&ctx, &state, command_run("first", "uid-1"), false).await;
    assert_eq!(
        first[0], "PATCH networkpolicies",
        "the namespace's first pod"
    );
    assert_eq!(first[1..], COMMAND_RUN);
    let second = life(&ctx, &state, command_run("second", "uid-2"), false).await;
    assert_eq!(second, COMMAND_RUN);
    // Seen running too: its status and the Started Event (contract).
    let watched = life(&ctx, &state, command_run("third", "uid-3"), true).await;
    assert_eq!(watched.len(), 8, "{watched:?}");
}

#[tokio::test]
async fn an_inline_source_run_adds_its_configmap() {
    let (ctx, state) = cluster();
    life(&ctx, &state, command_run("warm", "uid-0"), false).await;
    let writes = life(&ctx, &state, Evaluation::test(), false).await;
    let mut expected = vec!["POST configmaps"];
    expected.extend(COMMAND_RUN);
    assert_eq!(writes, expected);
}

#[tokio::test]
async fn suite_cases_with_identical_files_write_the_configmap_once() {
    let (ctx, state) = cluster();
    life(&ctx, &state, command_run("warm", "uid-0"), false).await;
    let mut per_case = Vec::new();
    for case in ["a", "b", "c", "d"] {
        let ev = Evaluation::test().child_of("s", case, &format!("uid-{case}"));
        per_case.push(life(&ctx, &state, ev, false).await);
    }
    let mut first = vec!["POST configmaps"];
    first.extend(COMMAND_RUN);
    assert_eq!(per_case[0], first);
    for writes in &per_case[1..] {
        assert_eq!(
            writes, &COMMAND_RUN,
            "the shared ConfigMap is read, not written"
        );
    }
    assert_eq!(
        lock(&state).config_maps.len(),
        1,
        "one ConfigMap for the suite"
    );
    let total: usize = per_case.iter().map(Vec::len).sum();
    assert_eq!(total, 25);
}
