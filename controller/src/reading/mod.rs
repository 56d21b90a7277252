//! `crucible samples` and `crucible compare` (docs/samples.md "Reading"): a run's bundle read
//! from the results store with the caller's own credentials (the `AWS_*` variables of the
//! caller's environment for `s3://`), its digest checked against the Evaluation's status, the
//! samples printed worst first or two runs compared id by id.
//!
//! [`select`] and [`compare`] are pure; this module finds and streams the bundles. Memory is
//! the store's chunk, the validator's bound and the samples kept for printing, never the file.

pub mod compare;
pub mod select;

use clap::Args;
use kube::{Api, Client};

use crate::crd::Evaluation;
use crate::run::results::DEFAULT_PASS_THRESHOLD;
use crate::samples::protocol::{Aggregates, Limits, Line, Validator};
use crate::samples::stats;
use crate::store::Store;

/// Largest `--limit`.
const MAX_LIMIT: u32 = 100_000;
/// Path segments of a bundle under its store's root: `<namespace>/<evaluation>/<runId>/<file>`.
const BUNDLE_SEGMENTS: usize = 4;

/// Flags of `crucible samples`.
#[derive(Args, Debug)]
pub struct SamplesArgs {
    /// The Evaluation whose latest run's samples to print.
    #[arg(required_unless_present = "bundle", conflicts_with = "bundle")]
    pub name: Option<String>,
    /// Namespace of the Evaluation (default: the kubeconfig's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Only the samples that did not pass.
    #[arg(long)]
    pub failed: bool,
    /// `table`, `json` (an array of the samples) or `jsonl` (their lines as stored).
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: select::Format,
    /// How many samples to print, worst first.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT)))]
    pub limit: u32,
    /// The results store to read from instead of the one in the Evaluation's status (e.g. a
    /// `file://` copy of it); the bundle keeps its `<namespace>/<evaluation>/<runId>` path.
    #[arg(long, value_name = "URL", conflicts_with = "bundle")]
    pub store: Option<String>,
    /// Read this bundle (a path, `file://` or `s3://` URL) without a cluster, e.g. one that
    /// `crucible run --results DIR` wrote. Its digest is printed, not checked.
    #[arg(long, value_name = "PATH|URL")]
    pub bundle: Option<String>,
}

/// Flags of `crucible compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Run A: an Evaluation (its latest run), or with `--bundles` a bundle path or URL.
    #[arg(value_name = "A")]
    pub a: String,
    /// Run B, the baseline: the result is A − B.
    #[arg(value_name = "B")]
    pub b: String,
    /// Namespace of the Evaluations (default: the kubeconfig's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The results store to read both from instead of the ones in the Evaluations' status.
    #[arg(long, value_name = "URL", conflicts_with = "bundles")]
    pub store: Option<String>,
    /// A and B are bundles (paths, `file://` or `s3://` URLs), read without a cluster.
    #[arg(long)]
    pub bundles: bool,
}

/// Where one run's bundle is and what it must be.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// What the user named, for messages.
    pub label: String,
    /// The store to open.
    pub store: String,
    /// The bundle's path in it.
    pub object: String,
    /// The digest the Evaluation's status records; `None` for `--bundle`.
    pub digest: Option<String>,
    /// Score at which a sample without `passed` passes.
    pub pass_threshold: f64,
}

/// `text` split at its last `/` after the scheme's `://`, or `None`.
fn split_last(url: &str, segments: usize) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let mut parts = rest.rsplitn(segments + 1, '/');
    let tail: Vec<&str> = parts.by_ref().take(segments).collect();
    let root = parts.next()?;
    if tail.len() < segments || tail.iter().any(|s| s.is_empty()) || root.is_empty() {
        return None;
    }
    let object = tail.into_iter().rev().collect::<Vec<_>>().join("/");
    Some((format!("{scheme}://{root}"), object))
}

/// The bundle at `location`: a local path or a `file://`/`s3://` URL.
///
/// # Errors
/// A path that cannot be made absolute, or a URL without an object in it.
pub fn bundle_at(location: &str) -> Result<Bundle, String> {
    let url = if location.contains("://") {
        location.to_string()
    } else {
        let absolute =
            std::path::absolute(location).map_err(|e| format!("bundle {location}: {e}"))?;
        url::Url::from_file_path(&absolute)
            .map_err(|()| format!("bundle {location}: not a file path"))?
            .to_string()
    };
    let (store, object) =
        split_last(&url, 1).ok_or_else(|| format!("bundle {location}: no file in the URL"))?;
    Ok(Bundle {
        label: location.to_string(),
        store,
        object,
        digest: None,
        pass_threshold: DEFAULT_PASS_THRESHOLD,
    })
}

/// The bundle of Evaluation `ev`'s latest samples, from its status; with `store`, at the same
/// `<namespace>/<evaluation>/<runId>/<file>` path in that store instead.
///
/// # Errors
/// The Evaluation has no stored samples (yet), or its status' URI is not a bundle's.
pub fn bundle_of(ev: &Evaluation, store: Option<&str>) -> Result<Bundle, String> {
    let label = format!(
        "evaluation {}/{}",
        ev.metadata.namespace.as_deref().unwrap_or_default(),
        ev.metadata.name.as_deref().unwrap_or_default()
    );
    let samples = ev
        .status
        .as_ref()
        .and_then(|s| s.samples.as_ref())
        .ok_or_else(|| format!("{label} has no samples: its run has not finished or wrote none"))?;
    let (Some(uri), Some(digest)) = (&samples.uri, &samples.digest) else {
        return Err(format!(
            "{label}: status.samples has no uri and digest: the samples were not stored"
        ));
    };
    let bad = || format!("{label}: status.samples.uri {uri} is not a bundle's");
    let (root, object) = match store {
        Some(root) => {
            let (_, object) = split_last(uri, BUNDLE_SEGMENTS).ok_or_else(bad)?;
            (root.trim_end_matches('/').to_string(), object)
        }
        None => split_last(uri, 1).ok_or_else(bad)?,
    };
    Ok(Bundle {
        label,
        store: root,
        object,
        digest: Some(digest.clone()),
        pass_threshold: ev.spec.pass_threshold.unwrap_or(DEFAULT_PASS_THRESHOLD),
    })
}

/// The bundle `uri` names (a status' or a history entry's, with its `digest`) at the same
/// `<namespace>/<evaluation>/<runId>/<file>` path in `store`, which must be in `namespace`: a
/// URI naming another namespace's bundle (a status written by hand) is refused.
///
/// # Errors
/// The URI is not a bundle's, or names another namespace's.
pub fn bundle_in(
    store: &str,
    namespace: &str,
    label: String,
    uri: &str,
    digest: &str,
    pass_threshold: f64,
) -> Result<Bundle, String> {
    let (_, object) = split_last(uri, BUNDLE_SEGMENTS)
        .ok_or_else(|| format!("{label}: {uri} is not a samples bundle's URI"))?;
    if object.split('/').next() != Some(namespace) {
        return Err(format!(
            "{label}: {uri} is not a bundle of namespace {namespace}"
        ));
    }
    Ok(Bundle {
        label,
        store: store.trim_end_matches('/').to_string(),
        object,
        digest: Some(digest.to_string()),
        pass_threshold,
    })
}

/// The run id in a bundle's path (`<namespace>/<evaluation>/<runId>/<file>`).
pub fn run_id_of(bundle: &Bundle) -> Option<&str> {
    bundle.object.split('/').nth(2)
}

/// Streams `bundle`, validating it and handing each sample line to `on_line`, and checks the
/// stored bytes' digest against the status'. Returns the samples reduced and the digest.
///
/// # Errors
/// The store or bundle cannot be read, the samples break the protocol, or the digest differs.
pub async fn read(
    bundle: &Bundle,
    on_line: &mut impl FnMut(Line<'_>),
) -> Result<(Aggregates, String), String> {
    let store =
        Store::open_existing(&bundle.store).map_err(|e| format!("{}: {e}", bundle.label))?;
    let validator = Validator::reading(Limits::default(), bundle.pass_threshold);
    let read = store
        .read(&bundle.object, validator, on_line)
        .await
        .map_err(|e| format!("{}: {e}", bundle.label))?;
    if let Some(expected) = &bundle.digest
        && *expected != read.digest
    {
        return Err(format!(
            "{}: the stored bundle's digest is {}, but the status records {expected}: it was \
             changed or replaced after the run; not shown",
            bundle.label, read.digest
        ));
    }
    Ok((read.aggregates, read.digest))
}

/// Reads the Evaluation `name` with the caller's credentials.
async fn evaluation(client: &Client, namespace: &str, name: &str) -> Result<Evaluation, String> {
    Api::<Evaluation>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| format!("cannot read evaluation {namespace}/{name}: {e}"))
}

/// What `crucible samples` prints.
///
/// # Errors
/// A sentence for the user: the Evaluation, store or bundle cannot be read, or the digest differs.
pub async fn samples(args: &SamplesArgs, client: Option<&Client>) -> Result<String, String> {
    let bundle = match (&args.bundle, &args.name, client) {
        (Some(location), _, _) => bundle_at(location)?,
        (None, Some(name), Some(client)) => {
            let ns = args
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            bundle_of(&evaluation(client, &ns, name).await?, args.store.as_deref())?
        }
        _ => return Err("name an Evaluation or a --bundle".into()),
    };
    let mut worst = select::Worst::new(args.limit as usize, args.failed);
    let (aggregates, digest) = read(&bundle, &mut |line| worst.offer(line)).await?;
    let (kept, matched) = worst.finish()?;
    let stats = stats::summarize(&aggregates);
    select::render(
        &kept,
        args.output,
        &select::Footer {
            matched,
            failed_only: args.failed,
            stats: stats.as_ref(),
            digest: &digest,
        },
    )
}

/// What `crucible compare` prints.
///
/// # Errors
/// As [`samples`], for either run.
pub async fn compare(args: &CompareArgs, client: Option<&Client>) -> Result<String, String> {
    let (a, b) = match client {
        _ if args.bundles => (bundle_at(&args.a)?, bundle_at(&args.b)?),
        Some(client) => {
            let ns = args
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            let store = args.store.as_deref();
            (
                bundle_of(&evaluation(client, &ns, &args.a).await?, store)?,
                bundle_of(&evaluation(client, &ns, &args.b).await?, store)?,
            )
        }
        None => return Err("comparing Evaluations needs the cluster".into()),
    };
    let (ra, _) = read(&a, &mut |_| {}).await?;
    let (rb, _) = read(&b, &mut |_| {}).await?;
    Ok(compare::render(
        &args.a,
        &args.b,
        &compare::compare(&ra, &rb),
    ))
}

#[cfg(test)]
#[path = "reading_tests.rs"]
mod tests;
