//! Talking to the API server: namespaces, creating many objects at a fixed concurrency, the
//! write counters of `/metrics`, and watches that timestamp what they see.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::metrics::Writes;
use super::objects::{MANAGER, RUN_LABEL};
use super::{Error, kube_err, say};

/// Interval between two looks while waiting for something.
const POLL: Duration = Duration::from_millis(50);

/// An `Api` for `resource` in `ns`.
pub fn api(client: &Client, ns: &str, resource: &ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, resource)
}

/// A manifest as a `DynamicObject`.
pub fn dynamic(manifest: Value) -> Result<DynamicObject, Error> {
    serde_json::from_value(manifest).map_err(|e| Error::Setup(format!("manifest: {e}")))
}

/// Creates namespace `name` labelled with the run's id and waits for its default service
/// account (pods cannot be created before it exists).
pub async fn create_namespace(client: &Client, name: &str, run: &str) -> Result<(), Error> {
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {RUN_LABEL: run}},
    }))
    .map_err(|e| Error::Setup(format!("namespace manifest: {e}")))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .map_err(kube_err(format!("creating namespace {name}")))?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    poll(
        Duration::from_secs(60),
        "its default service account",
        || {
            let accounts = accounts.clone();
            async move { Ok(accounts.get_opt("default").await.ok().flatten().is_some()) }
        },
    )
    .await
}

/// Deletes the namespaces and waits until they are gone; the names still there at `within`.
pub async fn delete_namespaces(
    client: &Client,
    names: &[String],
    within: Duration,
) -> Result<Vec<String>, Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    for name in names {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(kube_err(format!("deleting namespace {name}"))(e)),
        }
    }
    let deadline = Instant::now() + within;
    loop {
        let mut left = Vec::new();
        for name in names {
            let present = api
                .get_opt(name)
                .await
                .map_err(kube_err(format!("reading namespace {name}")))?;
            if present.is_some() {
                left.push(name.clone());
            }
        }
        if left.is_empty() || Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Namespaces labelled with the run's id.
pub async fn run_namespaces(client: &Client, run: &str) -> Result<Vec<String>, Error> {
    let list = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{RUN_LABEL}={run}")))
        .await
        .map_err(kube_err("listing the run's namespaces"))?;
    Ok(list.items.iter().map(|n| n.name_any()).collect())
}

/// Creates `make(0..count)` with `concurrency` requests in flight; returns how long it took.
pub async fn create_many(
    api: &Api<DynamicObject>,
    count: usize,
    concurrency: usize,
    make: impl Fn(usize) -> Value,
) -> Result<Duration, Error> {
    let start = Instant::now();
    let params = PostParams::default();
    futures::stream::iter(0..count)
        .map(|i| {
            let object = dynamic(make(i));
            let (api, params) = (api.clone(), params.clone());
            async move {
                let object = object?;
                api.create(&params, &object)
                    .await
                    .map(|_| ())
                    .map_err(kube_err(format!("creating {}", object.name_any())))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(start.elapsed())
}

/// Server-side applies `manifest` (the benchmark's field manager).
pub async fn apply(api: &Api<DynamicObject>, manifest: &Value) -> Result<(), Error> {
    let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(manifest),
    )
    .await
    .map(|_| ())
    .map_err(kube_err(format!("applying {name}")))
}

/// The API server's write counters now.
pub async fn writes(client: &Client) -> Result<Writes, Error> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| Error::Setup(format!("metrics request: {e}")))?;
    let text = client
        .request_text(request)
        .await
        .map_err(kube_err("GET /metrics of the API server"))?;
    Ok(Writes::parse(&text))
}

/// Waits until the API server has taken no write for `still` (the controllers have settled),
/// at most `within`. Returns whether it got that quiet.
pub async fn settle(client: &Client, still: Duration, within: Duration) -> Result<bool, Error> {
    let deadline = Instant::now() + within;
    let mut last = writes(client).await?.total();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = writes(client).await?.total();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= still {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            say(format!(
                "the API server did not go quiet within {}s",
                within.as_secs()
            ));
            return Ok(false);
        }
    }
}

/// Polls `probe` until it returns true, at most `within`.
pub async fn poll<F, Fut>(within: Duration, what: &str, mut probe: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, Error>>,
{
    let deadline = Instant::now() + within;
    loop {
        if probe().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.into(),
                secs: within.as_secs(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A predicate on a watched object; the watch records the first time each is true.
pub type Mark = fn(&DynamicObject) -> bool;

/// What a watch has seen of one object.
#[derive(Clone, Debug)]
pub struct Seen {
    /// First seen (ADDED: the watches start before the objects exist).
    pub added: Instant,
    /// When each of the watch's marks first held.
    pub marks: Vec<Option<Instant>>,
    /// The name of its controlling owner (a pod's Evaluation or Job).
    pub owner: Option<String>,
}

/// Everything a watch has seen.
#[derive(Debug, Default)]
pub struct Seens {
    pub objects: HashMap<String, Seen>,
    /// The first object seen, as it was then.
    pub first: Option<DynamicObject>,
}

impl Seens {
    /// Objects whose mark `i` has held.
    pub fn marked(&self, i: usize) -> usize {
        self.objects
            .values()
            .filter(|s| s.marks.get(i).copied().flatten().is_some())
            .count()
    }

    /// When mark `i` held for `name`.
    pub fn mark(&self, name: &str, i: usize) -> Option<Instant> {
        self.objects.get(name)?.marks.get(i).copied().flatten()
    }

    /// When mark `i` held, for each object where it did.
    pub fn times(&self, i: usize) -> Vec<Instant> {
        self.objects
            .values()
            .filter_map(|s| s.marks.get(i).copied().flatten())
            .collect()
    }

    /// First-seen times, earliest first.
    pub fn added_sorted(&self) -> Vec<Instant> {
        let mut times: Vec<Instant> = self.objects.values().map(|s| s.added).collect();
        times.sort();
        times
    }
}

/// A watch of one resource in one namespace, timestamping each object's arrival and marks in
/// a background task (so the figures do not depend on how often anybody looks).
pub struct Watch {
    seens: Arc<Mutex<Seens>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Starts watching and returns once the initial (empty) list is through.
    pub async fn start(
        client: &Client,
        ns: &str,
        resource: &ApiResource,
        selector: Option<&str>,
        marks: &'static [Mark],
    ) -> Result<Watch, Error> {
        let mut config = watcher::Config::default();
        if let Some(selector) = selector {
            config = config.labels(selector);
        }
        let seens = Arc::new(Mutex::new(Seens::default()));
        let synced = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stream = watcher(api(client, ns, resource), config).default_backoff();
        let (seens2, synced2) = (seens.clone(), synced.clone());
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                match event {
                    Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                        record(&mut lock(&seens2), obj, marks, now);
                    }
                    Ok(watcher::Event::InitDone) => {
                        synced2.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(e) => say(format!("watch error (retrying): {e}")),
                }
            }
        });
        let watch = Watch { seens, task };
        poll(Duration::from_secs(30), "the watch to start", || {
            let synced = synced.load(std::sync::atomic::Ordering::SeqCst);
            async move { Ok(synced) }
        })
        .await?;
        Ok(watch)
    }

    /// What it has seen so far.
    pub fn seen(&self) -> MutexGuard<'_, Seens> {
        lock(&self.seens)
    }

    /// Waits until `done` holds for what it has seen, at most `within`; `Ok(false)` on
    /// timeout (the caller reports how far it got).
    pub async fn wait(&self, within: Duration, done: impl Fn(&Seens) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if done(&self.seen()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Watch {
    /// As [`Watch::wait`], with a timeout an error saying what did not happen (`what`, told
    /// what the watch has seen by then).
    pub async fn expect(
        &self,
        within: Duration,
        done: impl Fn(&Seens) -> bool,
        what: impl FnOnce(&Seens) -> String,
    ) -> Result<(), Error> {
        if self.wait(within, done).await {
            Ok(())
        } else {
            Err(Error::Timeout {
                what: what(&self.seen()),
                secs: within.as_secs(),
            })
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A poisoned lock only means a panic elsewhere; the data is still what was recorded.
fn lock(seens: &Mutex<Seens>) -> MutexGuard<'_, Seens> {
    seens.lock().unwrap_or_else(|p| p.into_inner())
}

fn record(seens: &mut Seens, obj: DynamicObject, marks: &[Mark], now: Instant) {
    let name = obj.name_any();
    let seen = seens.objects.entry(name).or_insert_with(|| Seen {
        added: now,
        marks: vec![None; marks.len()],
        owner: obj
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.name.clone()),
    });
    for (slot, mark) in seen.marks.iter_mut().zip(marks) {
        if slot.is_none() && mark(&obj) {
            *slot = Some(now);
        }
    }
    if seens.first.is_none() {
        seens.first = Some(obj);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::objects;

    #[test]
    fn records_first_sight_marks_and_owner_once() {
        let pod = |phase: &str| {
            dynamic(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p1", "ownerReferences": [
                    {"apiVersion": "v1", "kind": "X", "name": "other", "uid": "1"},
                    {"apiVersion": "crucible.dev/v1alpha1", "kind": "Evaluation",
                     "name": "ev-1", "uid": "2", "controller": true}]},
                "status": {"phase": phase}
            }))
            .unwrap()
        };
        const MARKS: &[Mark] = &[objects::pod_terminal];
        let mut seens = Seens::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        let t2 = t0 + Duration::from_millis(9);
        record(&mut seens, pod("Pending"), MARKS, t0);
        assert_eq!(seens.marked(0), 0);
        record(&mut seens, pod("Succeeded"), MARKS, t1);
        record(&mut seens, pod("Succeeded"), MARKS, t2);
        let seen = &seens.objects["p1"];
        assert_eq!((seen.added, seen.marks[0]), (t0, Some(t1)));
        assert_eq!(seen.owner.as_deref(), Some("ev-1"));
        assert_eq!(seens.mark("p1", 0), Some(t1));
        assert_eq!(seens.marked(0), 1);
        assert_eq!(seens.times(0), [t1]);
        assert_eq!(seens.added_sorted(), [t0]);
        assert_eq!(
            seens.first.as_ref().unwrap().data["status"]["phase"],
            "Pending"
        );
    }
}
