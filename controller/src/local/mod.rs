//! `crucible run`: the manifests users commit, run on this machine under gVisor's `runsc`
//! with no cluster.
//!
//! Nothing here decides an outcome. Validation, suite fan-out, the pod and its sandbox rules,
//! the results protocol and the status all come from the controller's pure code: the
//! [`kubelet`] drives [`plan`](crate::lifecycle::plan) and
//! [`lifecycle::suite::plan`](crate::lifecycle::suite::plan) and plays kubelet for the pod they ask for;
//! [`bundle`] turns that pod into an OCI bundle; [`image`] finds and unpacks images;
//! [`sandbox`] runs a step; [`output`] prints; [`files`] keeps the host's files safe from
//! other users and from the sandbox.

pub mod bundle;
pub mod files;
pub mod image;
pub mod kubelet;
pub mod output;
pub mod pod_status;
pub mod rundir;
pub mod samples;
pub mod sandbox;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::config::Config;
use crate::crd::evaluation::Phase;
use crate::crd::suite::SuitePhase;
use crate::crd::{Evaluation, EvaluationSuite};
use crate::local::image::ImageStore;
use crate::local::kubelet::Kubelet;
use crate::local::sandbox::Isolation;
use crate::source::GitCache;
use crate::store::{Store, StoreError};

/// Flags of `crucible run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Manifest files or directories (every `*.yaml`/`*.yml` in them); multi-document files too.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<std::path::PathBuf>,
    /// `table` (like `kubectl get evaluations`), or the status the operator would write.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: output::Format,
    /// Most sandboxes running at once (suites also keep to their own `parallelism`).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Keep each run's directory (OCI bundles, workspace, outputs, log) and print where it is.
    #[arg(long)]
    pub keep: bool,
    /// Run without gVisor, as plain processes with the same limits (status says sandboxed: false).
    #[arg(long)]
    pub unsandboxed: bool,
    /// Namespace written into the objects of manifests that do not name one.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Directory the samples bundles go to (created when missing), as
    /// `<namespace>/<evaluation>/<runId>/samples.jsonl.zst`; default
    /// `${XDG_DATA_HOME:-$HOME/.local/share}/crucible/results`.
    #[arg(long, value_name = "DIR")]
    pub results: Option<std::path::PathBuf>,
}

/// Largest manifest file read.
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Most objects in one `crucible run`.
const MAX_OBJECTS: usize = 1000;
/// Disk budget of the local git cache.
const GIT_CACHE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Why `crucible run` could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A manifest cannot be read or is not a Crucible object.
    #[error("{path}: {message}")]
    Manifest {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// runsc is not installed.
    #[error(
        "runsc (gVisor) is not on PATH: install it (`apt-get install runsc`; \
         `infrastructure/local/cluster.sh up` does) or pass --unsandboxed to run without a sandbox"
    )]
    NoRunsc,
    /// Printing failed.
    #[error("cannot render the output: {0}")]
    Output(String),
    /// The samples directory cannot be used.
    #[error(transparent)]
    Results(#[from] crate::store::StoreError),
}

/// `${XDG_DATA_HOME:-$HOME/.local/share}/crucible/results`: bundles are results, kept like
/// data, not a cache.
fn default_results_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("crucible")
        .join("results")
}

/// The local directory store of `--results` (a relative path is taken from the current
/// directory).
fn results_store(dir: &Path) -> Result<Store, RunError> {
    let absolute = std::path::absolute(dir).map_err(|e| StoreError::Url {
        url: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let url = url::Url::from_directory_path(&absolute).map_err(|()| StoreError::Url {
        url: absolute.display().to_string(),
        reason: "not a directory path".into(),
    })?;
    Ok(Store::open(url.as_str())?)
}

/// A manifest object to run.
#[derive(Debug)]
pub enum Object {
    /// An Evaluation.
    Evaluation(Box<Evaluation>),
    /// An EvaluationSuite.
    Suite(Box<EvaluationSuite>),
}

/// `crucible run`: 0 when every evaluation (and suite) passed, 1 when one did not, 2 when
/// nothing could run.
pub async fn main(args: RunArgs) -> ExitCode {
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("crucible: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: RunArgs) -> Result<bool, RunError> {
    let objects = load(&args.files, &args.namespace)?;
    let isolation = if args.unsandboxed {
        eprintln!("crucible: {}", output::UNSANDBOXED_WARNING);
        Isolation::Unsandboxed
    } else {
        let binary = sandbox::find_runsc().ok_or(RunError::NoRunsc)?;
        Isolation::Runsc {
            binary,
            rootless: !sandbox::is_root(),
        }
    };
    let cache = image::cache_root();
    let config = Config {
        allow_unsandboxed: args.unsandboxed,
        ..Config::default()
    };
    let rootless = matches!(isolation, Isolation::Runsc { rootless: true, .. });
    let mut kubelet = Kubelet::new(
        config,
        ImageStore::new(&cache, rootless),
        isolation,
        GitCache::new(cache.join("run").join("git"), GIT_CACHE_BYTES).allow_file_urls(true),
        args.keep,
        usize::from(args.parallel),
    );
    let results = args.results.clone().unwrap_or_else(default_results_dir);
    kubelet.results = Some(results_store(&results)?);
    let kubelet = Arc::new(kubelet);
    let runs = objects.into_iter().map(|object| {
        let kubelet = kubelet.clone();
        async move {
            match object {
                Object::Evaluation(ev) => (vec![kubelet.evaluation(*ev).await], None),
                Object::Suite(suite) => {
                    let (suite, children) = kubelet.suite(*suite).await;
                    (children, Some(suite))
                }
            }
        }
    });
    let results = futures::future::join_all(runs).await;
    let mut evaluations = Vec::new();
    let mut suites = Vec::new();
    let mut passed = true;
    for (evs, suite) in results {
        match &suite {
            Some(s) => {
                passed &= s.status.as_ref().and_then(|s| s.phase) == Some(SuitePhase::Succeeded)
            }
            None => passed &= evs.iter().all(evaluation_passed),
        }
        evaluations.extend(evs);
        suites.extend(suite);
    }
    let text = match args.output {
        output::Format::Table => output::table(&evaluations, &suites),
        format => output::document(&evaluations, &suites, format).map_err(RunError::Output)?,
    };
    print!("{text}");
    Ok(passed)
}

/// Whether the run finished with a valid result that passed.
pub fn evaluation_passed(ev: &Evaluation) -> bool {
    ev.status
        .as_ref()
        .is_some_and(|s| s.phase == Some(Phase::Succeeded) && s.passed())
}

/// The objects of `paths` (files, or directories: every `*.yaml` / `*.yml` in them, sorted),
/// each document in turn; EvaluationQuotas are skipped (they govern a cluster's admission).
///
/// # Errors
/// A file that cannot be read, is too large, is not YAML or holds another kind.
pub fn load(paths: &[PathBuf], namespace: &str) -> Result<Vec<Object>, RunError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| manifest_error(path, e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(path.clone());
        }
    }
    let mut objects = Vec::new();
    for file in files {
        let size = std::fs::metadata(&file)
            .map_err(|e| manifest_error(&file, e.to_string()))?
            .len();
        if size > MAX_MANIFEST_BYTES {
            return Err(manifest_error(
                &file,
                format!("{size} bytes, at most {MAX_MANIFEST_BYTES} allowed"),
            ));
        }
        let text =
            std::fs::read_to_string(&file).map_err(|e| manifest_error(&file, e.to_string()))?;
        let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .map_err(|e| manifest_error(&file, format!("not YAML: {e}")))?;
        for document in documents.into_iter().filter(|d| !d.is_null()) {
            if objects.len() >= MAX_OBJECTS {
                return Err(manifest_error(
                    &file,
                    format!("more than {MAX_OBJECTS} objects"),
                ));
            }
            if let Some(object) = parse(&file, document, namespace)? {
                objects.push(object);
            }
        }
    }
    Ok(objects)
}

fn manifest_error(path: &Path, message: String) -> RunError {
    RunError::Manifest {
        path: path.display().to_string(),
        message,
    }
}

/// One document as an object to run, with the identity an API server would give it.
fn parse(
    file: &Path,
    document: serde_json::Value,
    namespace: &str,
) -> Result<Option<Object>, RunError> {
    let kind = document["kind"].as_str().unwrap_or_default().to_string();
    let api_version = document["apiVersion"].as_str().unwrap_or_default();
    let crucible = api_version == format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION);
    let invalid = |e: serde_json::Error| manifest_error(file, format!("not a valid {kind}: {e}"));
    match (crucible, kind.as_str()) {
        (true, "Evaluation") => {
            let ev: Evaluation = serde_json::from_value(document).map_err(invalid)?;
            Ok(Some(Object::Evaluation(Box::new(identify(ev, namespace)))))
        }
        (true, "EvaluationSuite") => {
            let mut suite: EvaluationSuite = serde_json::from_value(document).map_err(invalid)?;
            suite.metadata = identify_meta(suite.metadata, namespace);
            Ok(Some(Object::Suite(Box::new(suite))))
        }
        (true, "EvaluationQuota") => {
            let name = document["metadata"]["name"].as_str().unwrap_or_default();
            eprintln!(
                "crucible: skipped EvaluationQuota {name} in {} (quotas govern admission on a cluster)",
                file.display()
            );
            Ok(None)
        }
        _ => Err(manifest_error(
            file,
            format!(
                "{api_version} {kind} is not an Evaluation, EvaluationSuite or EvaluationQuota"
            ),
        )),
    }
}

fn identify_meta(
    mut meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    namespace: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    meta.namespace = meta.namespace.or_else(|| Some(namespace.to_string()));
    meta.uid = Some(kubelet::uid(meta.name.as_deref().unwrap_or_default()));
    meta.generation = Some(1);
    meta.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    meta
}

fn identify(mut ev: Evaluation, namespace: &str) -> Evaluation {
    ev.metadata = identify_meta(ev.metadata, namespace);
    ev.status = None;
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;

    #[test]
    fn the_examples_directory_loads_and_quotas_are_skipped() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/evaluations");
        let objects = load(&[dir], "team-a").expect("examples load");
        let names: Vec<String> = objects
            .iter()
            .map(|o| match o {
                Object::Evaluation(e) => e.name_any(),
                Object::Suite(s) => s.name_any(),
            })
            .collect();
        assert!(names.contains(&"arithmetic".to_string()), "{names:?}");
        assert!(names.contains(&"difficulty".to_string()), "{names:?}");
        assert!(!names.contains(&"team-quota".to_string()), "{names:?}");
        for object in &objects {
            if let Object::Evaluation(e) = object {
                assert_eq!(e.namespace().as_deref(), Some("team-a"));
                assert!(e.uid().is_some());
            }
        }
    }

    #[test]
    fn multi_document_files_and_foreign_kinds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("two.yaml");
        let ev = "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {name: a}\nspec: {image: img}\n";
        std::fs::write(
            &file,
            format!("{ev}---\n{}", ev.replace("name: a", "name: b")),
        )
        .expect("write");
        assert_eq!(
            load(std::slice::from_ref(&file), "default")
                .expect("loads")
                .len(),
            2
        );
        std::fs::write(&file, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n").expect("write");
        let err = load(std::slice::from_ref(&file), "default").expect_err("a Pod is refused");
        assert!(err.to_string().contains("is not an Evaluation"), "{err}");
        std::fs::write(
            &file,
            "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nspec: {image: 3}\n",
        )
        .expect("write");
        assert!(load(&[file], "default").is_err());
    }
}
