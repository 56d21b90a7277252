//! Kueue's CRDs on the cluster for the baseline's duration, and letting go of the finalizers
//! Kueue leaves on its objects (with Kueue stopped nobody else removes them, and a namespace or
//! CRD whose objects keep a finalizer never goes away).

use std::path::Path;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::objects::{crd_resource, crds, established, release_patch};
use crate::cluster::api::{self, apply};
use crate::cluster::objects::RUN_LABEL;
use crate::cluster::{Error, io_err, kube_err, say};

/// Kueue ships 11 CRDs; more files than this is not Kueue's CRD directory.
const MAX_FILES: usize = 64;
/// Its Workload CRD is about 1 MiB of YAML; the API server takes at most 3 MiB a request.
const MAX_FILE_BYTES: u64 = 3 << 20;
/// Objects listed per page while releasing finalizers.
const PAGE: u32 = 500;

/// The CRDs the run applied and the resources they serve.
pub struct Crds {
    names: Vec<String>,
    resources: Vec<ApiResource>,
}

/// Reads every `*.yaml` of `dir` as a CRD, bounded before reading.
fn read_crds(dir: &Path) -> Result<Vec<Value>, Error> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    if paths.is_empty() || paths.len() > MAX_FILES {
        return Err(Error::Setup(format!(
            "{}: expected Kueue's CRDs (1 to {MAX_FILES} .yaml files), found {}",
            dir.display(),
            paths.len()
        )));
    }
    paths
        .iter()
        .map(|path| {
            let size = std::fs::metadata(path).map_err(io_err(path))?.len();
            if size > MAX_FILE_BYTES {
                return Err(Error::Setup(format!(
                    "{}: {size} bytes, more than a CRD may have",
                    path.display()
                )));
            }
            let text = std::fs::read_to_string(path).map_err(io_err(path))?;
            let crd: Value = serde_saphyr::from_str(&text)
                .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?;
            if crd["kind"] != "CustomResourceDefinition" || crd_resource(&crd).is_none() {
                return Err(Error::Setup(format!("{}: not a CRD", path.display())));
            }
            Ok(crd)
        })
        .collect()
}

/// Applies the CRDs of `dir`, labelled with the run's id, and waits until each is served;
/// `applied` names each before it is applied, so that a failure half-way still removes them.
/// Refuses when one exists that no benchmark run installed: that is someone's Kueue, and the
/// baseline deletes its CRDs (and with them every Kueue object) when it ends.
pub async fn install(
    client: &Client,
    dir: &Path,
    run: &str,
    applied: &mut Option<Crds>,
) -> Result<(), Error> {
    let files = read_crds(dir)?;
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &crds());
    let name_of = |crd: &Value| {
        crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    for crd in &files {
        let name = name_of(crd);
        let existing = api
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading CRD {name}")))?;
        if existing.is_some_and(|c| !c.labels().contains_key(RUN_LABEL)) {
            return Err(Error::Setup(format!(
                "CRD {name} exists and crucible-bench did not install it: Kueue is installed on \
                 this cluster; the baseline installs and removes its own, so run it (--only \
                 kueue) on a cluster without Kueue, or leave it out"
            )));
        }
    }
    let crds = applied.insert(Crds {
        names: Vec::new(),
        resources: Vec::new(),
    });
    for mut crd in files {
        let name = name_of(&crd);
        crd["metadata"]["labels"] = json!({RUN_LABEL: run});
        crds.names.push(name);
        crds.resources.extend(crd_resource(&crd).map(|(r, _)| r));
        apply(&api, &crd).await?;
    }
    for name in &crds.names {
        api::poll(
            Duration::from_secs(60),
            &format!("CRD {name} established"),
            || {
                let api = api.clone();
                async move {
                    let crd = api
                        .get(name)
                        .await
                        .map_err(kube_err(format!("reading CRD {name}")))?;
                    Ok(established(&crd.data))
                }
            },
        )
        .await?;
    }
    say(format!("Kueue's {} CRDs applied", crds.names.len()));
    Ok(())
}

/// Removes Kueue's finalizers from every object of the CRDs (Kueue must be stopped), page by
/// page, `concurrency` patches in flight. Returns how many it released.
pub async fn release(client: &Client, crds: &Crds, concurrency: usize) -> Result<usize, Error> {
    let mut released = 0;
    for resource in &crds.resources {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default().limit(PAGE);
            if let Some(t) = token.take() {
                params = params.continue_token(&t);
            }
            let page = match api.list_metadata(&params).await {
                Ok(page) => page,
                // A CRD that never got served (an install cut short) has no objects.
                Err(kube::Error::Api(e)) if e.code == 404 => break,
                Err(e) => return Err(kube_err(format!("listing {}", resource.plural))(e)),
            };
            let patches: Vec<(Api<DynamicObject>, String, Value)> = page
                .items
                .iter()
                .filter_map(|o| {
                    let patch = release_patch(o.finalizers())?;
                    let api = match o.namespace() {
                        Some(ns) => Api::namespaced_with(client.clone(), &ns, resource),
                        None => api.clone(),
                    };
                    Some((api, o.name_any(), patch))
                })
                .collect();
            released += patches.len();
            futures::stream::iter(patches)
                .map(|(api, name, patch)| async move {
                    match api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                        Err(e) => Err(kube_err(format!("releasing {name}"))(e)),
                    }
                })
                .buffer_unordered(concurrency.max(1))
                .try_collect::<Vec<()>>()
                .await?;
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
    }
    Ok(released)
}

/// Deletes cluster-scoped objects of `resource` (404 is fine).
pub async fn delete(client: &Client, resource: &ApiResource, names: &[&str]) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
    for name in names {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(kube_err(format!("deleting {name}"))(e)),
        }
    }
    Ok(())
}

/// Deletes the CRDs and waits until they are gone (at most `within`); the names left.
pub async fn uninstall(
    client: &Client,
    crds: &Crds,
    within: Duration,
) -> Result<Vec<String>, Error> {
    let names: Vec<&str> = crds.names.iter().map(String::as_str).collect();
    delete(client, &super::objects::crds(), &names).await?;
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &super::objects::crds());
    let deadline = Instant::now() + within;
    loop {
        let mut left = Vec::new();
        for name in &crds.names {
            if api
                .get_opt(name)
                .await
                .map_err(kube_err(format!("reading CRD {name}")))?
                .is_some()
            {
                left.push(name.clone());
            }
        }
        if left.is_empty() || Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_crd_files_and_refuses_what_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let crd = "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
                   metadata:\n  name: workloads.kueue.x-k8s.io\nspec:\n  group: kueue.x-k8s.io\n\
                   \x20 names:\n    kind: Workload\n    plural: workloads\n  scope: Namespaced\n\
                   \x20 versions:\n  - name: v1beta2\n    served: true\n    storage: true\n";
        std::fs::write(dir.path().join("a.yaml"), crd).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not read").unwrap();
        let read = read_crds(dir.path()).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0]["metadata"]["name"], "workloads.kueue.x-k8s.io");
        std::fs::write(dir.path().join("b.yaml"), "kind: ConfigMap\n").unwrap();
        assert!(
            read_crds(dir.path())
                .unwrap_err()
                .to_string()
                .contains("not a CRD")
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(read_crds(empty.path()).is_err());
    }
}
