//! Reads what `plan` needs: from the API server the Evaluation itself and its pods (fresh, not
//! the cache, so a pod created a moment ago is never missed), the RuntimeClass, and the log of a
//! pod that finished or is about to be stopped; from the controller's cache the emergency-stop
//! switch. Only reads: admission is decided by the gate, in `reconcile`.

use std::collections::BTreeMap;

use futures::AsyncBufReadExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, LogParams};
use kube::{Resource, ResourceExt};

use crate::crd::Evaluation;
use crate::crd::evaluation::{GitSource, Source};
use crate::error::{Error, Result};
use crate::evaluation::Context;
use crate::evaluation::plan::{self, FetchedSource, Observed, RuntimeClassCheck, SourceProblem};
use crate::evaluation::results::{LogCapture, LogScanner};
use crate::evaluation::validate;
use crate::labels::EVALUATION_UID_LABEL;
use crate::source::{Credentials, GitRequest};

/// Most log bytes read per container. The kubelet rotates container logs at 10 MiB by default
/// and serves only the current file, so this reads whole logs while bounding a hostile one.
const MAX_LOG_READ: i64 = 16 * 1024 * 1024;

/// Observes one Evaluation: its latest version (`None` once it is gone) and its cluster state.
///
/// # Errors
/// API errors other than "not found" while reading the Evaluation, its pods, the RuntimeClass
/// or a log.
pub async fn observe(cached: &Evaluation, ctx: &Context) -> Result<Option<(Evaluation, Observed)>> {
    let namespace = cached
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    // NB: the cache may not hold our own last status write yet; planning from it could redo
    // a step or mistake a finished run for a lost one. One GET makes every plan start from
    // the latest status.
    let evaluations: Api<Evaluation> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(ev) = evaluations
        .get_opt(&cached.name_any())
        .await
        .map_err(Error::GetEvaluation)?
    else {
        return Ok(None);
    };
    let uid = ev
        .meta()
        .uid
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let now = Time(jiff::Timestamp::now());
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods = pod_api
        .list(&ListParams::default().labels(&format!("{EVALUATION_UID_LABEL}={uid}")))
        .await
        .map_err(Error::ListPods)?
        .items;
    let stop = ctx.stop_switch().covers(&namespace);
    let git = match &ev.spec.source {
        Some(Source::Git(git)) => Some(git),
        _ => None,
    };
    let head = match git {
        Some(git) if plan::follows(&ev) && plan::run_is_over(&ev) => {
            follow_head(ctx, &namespace, git).await
        }
        _ => None,
    };
    // The sandbox is looked up whenever a pod may be created: a run not over, or a new one.
    let runtime_class = if plan::run_is_over(&ev) && !plan::awaits_admission(&ev, head.as_deref()) {
        None
    } else {
        Some(runtime_class(ctx, validate::runtime_class(&ev.spec, &ctx.config)).await?)
    };
    let source = match (git, plan::source_reference(&ev, head.as_deref())) {
        (Some(git), Some(reference)) => Some(fetch(ctx, &namespace, git, reference).await),
        _ => None,
    };
    let mut logs = BTreeMap::new();
    if let Some((pod, containers)) =
        plan::logs_needed(&ev, &pods, &now, stop.is_some(), &ctx.config)
    {
        for container in containers {
            if let Some(capture) = read_log(&pod_api, &pod, container).await? {
                logs.insert(container.to_string(), capture);
            }
        }
    }
    let observed = Observed {
        now,
        pods,
        runtime_class,
        logs,
        stop,
        source,
        head,
    };
    Ok(Some((ev, observed)))
}

async fn runtime_class(ctx: &Context, name: &str) -> Result<RuntimeClassCheck> {
    let api: Api<RuntimeClass> = Api::all(ctx.client.clone());
    match api.get_opt(name).await {
        Ok(Some(_)) => Ok(RuntimeClassCheck::Present),
        Ok(None) => Ok(RuntimeClassCheck::Missing),
        Err(source) => Err(Error::GetRuntimeClass {
            name: name.to_string(),
            source,
        }),
    }
}

/// Streams one container's log through a [`LogScanner`]; `None` when the kubelet has no log
/// for it (container never started, pod gone).
async fn read_log(api: &Api<Pod>, pod: &str, container: &str) -> Result<Option<LogCapture>> {
    let params = LogParams {
        container: Some(container.to_string()),
        limit_bytes: Some(MAX_LOG_READ),
        ..Default::default()
    };
    let read_error = |source| Error::ReadLog {
        pod: pod.to_string(),
        source,
    };
    let mut stream = match api.log_stream(pod, &params).await {
        Ok(stream) => stream,
        Err(kube::Error::Api(status)) if status.code == 400 || status.code == 404 => {
            return Ok(None);
        }
        Err(e) => return Err(read_error(e)),
    };
    let mut scanner = LogScanner::default();
    loop {
        let chunk = stream
            .fill_buf()
            .await
            .map_err(|e| read_error(kube::Error::ReadEvents(e)))?;
        if chunk.is_empty() {
            break;
        }
        let len = chunk.len();
        scanner.feed(chunk);
        stream.consume_unpin(len);
    }
    Ok(Some(scanner.finish()))
}

/// Reads the files of `git` at `reference` through the controller's git cache.
async fn fetch(
    ctx: &Context,
    namespace: &str,
    git: &GitSource,
    reference: Option<String>,
) -> Result<FetchedSource, SourceProblem> {
    let request = GitRequest {
        url: git.url.clone(),
        reference,
        path: git.path.clone(),
        credentials: credentials(ctx, namespace, git).await?,
    };
    match ctx.git.fetch(request, ctx.config.max_source_bytes).await {
        Ok(fetched) => Ok(FetchedSource {
            repo: fetched.repo,
            commit: fetched.commit,
            files: fetched.files,
        }),
        Err(error) => Err(SourceProblem {
            reason: error.reason(),
            message: error.to_string(),
            transient: error.is_transient(),
        }),
    }
}

/// The commit a followed ref points to now; `None` (logged) when it cannot be resolved.
async fn follow_head(ctx: &Context, namespace: &str, git: &GitSource) -> Option<String> {
    let request = GitRequest {
        url: git.url.clone(),
        reference: git.r#ref.clone(),
        path: None,
        credentials: credentials(ctx, namespace, git).await.ok()?,
    };
    match ctx.git.resolve(request).await {
        Ok(commit) => Some(commit),
        Err(error) => {
            tracing::warn!(%error, "cannot check the followed ref");
            None
        }
    }
}

/// Credentials from the Secret named in `secretRef`: `token`; `username` + `password`; or
/// `ssh-privatekey` + `known_hosts` (+ `passphrase`).
async fn credentials(
    ctx: &Context,
    namespace: &str,
    git: &GitSource,
) -> Result<Option<Credentials>, SourceProblem> {
    let Some(secret_ref) = &git.secret_ref else {
        return Ok(None);
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let problem = |reason, message: String, transient| SourceProblem {
        reason,
        message,
        transient,
    };
    let secret = match api.get_opt(&secret_ref.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            let message = format!(
                "Secret {} (spec.source.git.secretRef) does not exist",
                secret_ref.name
            );
            return Err(problem("SecretNotFound", message, false));
        }
        Err(e) => {
            return Err(problem(
                "SecretUnreadable",
                format!("cannot read Secret {}: {e}", secret_ref.name),
                true,
            ));
        }
    };
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key).map(|b| {
            String::from_utf8_lossy(&b.0)
                .trim_end_matches('\n')
                .to_string()
        })
    };
    if let Some(key) = text("ssh-privatekey") {
        return Ok(Some(Credentials::Ssh {
            private_key: key,
            known_hosts: text("known_hosts"),
            passphrase: text("passphrase"),
        }));
    }
    if let Some(token) = text("token") {
        return Ok(Some(Credentials::Token(token)));
    }
    match (text("username"), text("password")) {
        (Some(username), Some(password)) => Ok(Some(Credentials::Basic { username, password })),
        _ => Err(problem(
            "InvalidSourceCredentials",
            format!(
                "Secret {} has none of: token; username and password; ssh-privatekey",
                secret_ref.name
            ),
            false,
        )),
    }
}
