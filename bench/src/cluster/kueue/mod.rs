//! B3's Kueue baseline (`--only kueue`): Kueue v0.17 (infrastructure/local/gomod/kueue, built
//! by `cluster.sh tool kueue`) holding the same number of queued workloads as B3 under a held
//! quota, measured as B3 measures the controller. Per step: a fresh namespace, a ResourceFlavor,
//! a ClusterQueue with `stopPolicy: Hold` for that namespace, a LocalQueue, a fresh Kueue
//! process; Jobs created suspended with the queue label at the same concurrency; the time from
//! the first create until a watch saw every Job's Workload with `QuotaReserved` False; Kueue's
//! RSS idle and after. Its CRDs are applied at the start and deleted at the end (also on error
//! or Ctrl-C, by the session's cleanup).

mod install;
mod objects;
mod process;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::DynamicObject;

pub use self::install::Crds;
use super::api::{self, Mark, Watch, apply};
use super::b3::{COLUMNS, SETTLE_AFTER_BURST, burst};
use super::steps::Steps;
use super::{Error, Session, kube_err, say};
use crate::stats::mib;

/// Most queued workloads of one step.
pub const MAX_COUNT: u32 = 10_000;
/// The LocalQueue's name in each step's namespace.
const QUEUE: &str = "bench";

/// Where Kueue's binary and CRDs are: `cluster.sh tool kueue` puts the CRDs in `crds/` beside
/// the binary's `bin/`.
pub struct Tool {
    pub binary: PathBuf,
    pub crds: PathBuf,
}

impl Tool {
    pub fn at(binary: PathBuf) -> Result<Tool, Error> {
        let crds = binary
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("crds"))
            .filter(|d| d.is_dir())
            .ok_or_else(|| {
                Error::Setup(format!(
                    "no crds/ beside {}: build Kueue with infrastructure/local/cluster.sh tool \
                     kueue, which puts its CRDs there",
                    binary.display()
                ))
            })?;
        Ok(Tool { binary, crds })
    }
}

pub async fn run(
    s: &mut Session,
    tool: &Tool,
    counts: &[u32],
    within_secs: u64,
) -> Result<String, Error> {
    let (client, run) = (s.client.clone(), s.run.clone());
    install::install(&client, &tool.crds, &run, &mut s.kueue).await?;
    let within = Duration::from_secs(within_secs);
    let mut steps = Steps::new("Kueue");
    for count in counts.iter().map(|c| *c as usize) {
        step(s, tool, count, within, &mut steps).await?;
        if steps.failed() {
            break;
        }
    }
    if let Some(crds) = s.kueue.take() {
        let removed = async {
            release(s, &crds).await?;
            uninstall(s, &crds).await
        }
        .await;
        if removed.is_err() {
            // The session's cleanup tries again.
            s.kueue = Some(crds);
        }
        steps.cleaned("removing Kueue's CRDs", removed);
    }
    let mut out = format!(
        "B3 Kueue baseline: Kueue v0.17 as a host process (no leader election, no client-side \
         rate limit: qps -1, as our controller has none), a fresh Kueue and namespace per step, \
         ClusterQueue stopPolicy Hold (as the paused quota), Jobs created suspended with the \
         queue label at concurrency {}; \"all with a status\" is from the first create until \
         the watch saw the last Workload with QuotaReserved False (at most {within_secs} s); \
         RSS after the API server was quiet for 3 s (at most {} s)\n",
        s.concurrency,
        SETTLE_AFTER_BURST.as_secs()
    );
    let mut header = COLUMNS.to_vec();
    header.push("kueue CPU");
    out.push_str(&steps.section(&header, counts));
    Ok(out)
}

/// Removes Kueue's finalizers from every object of its CRDs (Kueue must be stopped); how
/// many it released.
pub async fn release(s: &Session, crds: &Crds) -> Result<usize, Error> {
    install::release(&s.client, crds, s.concurrency).await
}

/// Deletes Kueue's CRDs (after [`release`]) and waits until they are gone.
pub async fn uninstall(s: &Session, crds: &Crds) -> Result<(), Error> {
    let left = install::uninstall(&s.client, crds, Duration::from_secs(300)).await?;
    if left.is_empty() {
        say("Kueue's CRDs deleted");
        Ok(())
    } else {
        Err(Error::Setup(format!(
            "Kueue's CRDs still there after 300 s: {}",
            left.join(", ")
        )))
    }
}

fn queued(obj: &DynamicObject) -> bool {
    objects::quota_not_reserved(&obj.data)
}

/// One step: `count` Jobs queued in Kueue; its row goes to `steps` before the cleanup.
async fn step(
    s: &mut Session,
    tool: &Tool,
    count: usize,
    within: Duration,
    steps: &mut Steps,
) -> Result<(), Error> {
    let ns = s.namespace(&format!("kueue-{count}")).await?;
    // The cluster-scoped ResourceFlavor and ClusterQueue are named after the namespace.
    let name = ns.clone();
    let cluster = |resource| kube::Api::all_with(s.client.clone(), &resource);
    apply(
        &cluster(objects::resource_flavors()),
        &objects::resource_flavor(&name, &s.run),
    )
    .await?;
    let cluster_queues = cluster(objects::cluster_queues());
    apply(
        &cluster_queues,
        &objects::cluster_queue(&name, &name, &ns, &s.run),
    )
    .await?;
    apply(
        &api::api(&s.client, &ns, &objects::local_queues()),
        &objects::local_queue(QUEUE, &name),
    )
    .await?;
    let kueue = process::start(
        &tool.binary,
        &s.kubeconfig,
        &s.dir.join(format!("kueue-{count}")),
        &s.system_namespace,
    )
    .await?;
    say(format!(
        "kueue ready (PID {}, log {})",
        kueue.pid(),
        kueue.log().display()
    ));
    // Ready means its webhook server listens; its controllers have run once the ClusterQueue
    // has a status.
    api::poll(
        Duration::from_secs(60),
        "Kueue to mark the ClusterQueue",
        || {
            let api = cluster_queues.clone();
            let name = name.clone();
            async move {
                let cq = api
                    .get(&name)
                    .await
                    .map_err(kube_err(format!("reading ClusterQueue {name}")))?;
                Ok(objects::has_active_condition(&cq.data))
            }
        },
    )
    .await
    .map_err(|e| kueue.failed(&e.to_string()))?;
    const QUEUED: &[Mark] = &[queued];
    let watch = Watch::start(&s.client, &ns, &objects::workloads(), None, QUEUED).await?;
    s.settle().await?;
    let idle = kueue.rss_kib()?;
    let cpu_before = kueue.cpu()?;
    let jobs = api::api(&s.client, &ns, &super::objects::jobs());
    say(format!("Kueue: creating {count} suspended Jobs"));
    let burst = burst(s, &kueue, watch, &jobs, count, within, |i| {
        objects::job(&format!("job-{i:05}"), QUEUE)
    })
    .await?;
    let cpu = kueue.cpu()?.saturating_sub(cpu_before);
    drop(kueue);
    let mut row = vec![count.to_string(), mib(idle)];
    row.extend(burst.cells(cpu));
    steps.measured(row);
    let cleanup = async {
        // Kueue's finalizers on the Workloads and queues would keep the namespace forever.
        if let Some(crds) = &s.kueue {
            release(s, crds).await?;
        }
        install::delete(&s.client, &objects::cluster_queues(), &[&name]).await?;
        install::delete(&s.client, &objects::resource_flavors(), &[&name]).await?;
        s.drop_namespaces(&[ns]).await
    }
    .await;
    steps.cleaned(&format!("deleting the {count} step's objects"), cleanup);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crds_are_found_beside_the_binarys_directory() {
        let root = tempfile::tempdir().unwrap();
        let binary = root.path().join("bin").join("kueue");
        std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
        std::fs::write(&binary, "").unwrap();
        let missing = Tool::at(binary.clone()).err().unwrap().to_string();
        assert!(missing.contains("cluster.sh tool kueue"), "{missing}");
        std::fs::create_dir(root.path().join("crds")).unwrap();
        assert_eq!(Tool::at(binary).unwrap().crds, root.path().join("crds"));
    }
}
