//! Reads what `plan` needs: from the API server the Evaluation itself (fresh unless it is new:
//! the cache may not hold the controller's own last status write yet) and the log of a pod
//! that finished or is about to be stopped; from the controller's caches its pods (the
//! reconcile waits while a pod it created is not in the cache yet), the RuntimeClass and the
//! emergency-stop switch; and, once admitted, the git source from the fetch pool (never waiting
//! for a git server: a fetch under way is an answer too) and the ModelEndpoints of its models. Only reads: admission is decided by
//! the gate, in `reconcile`.

use std::collections::BTreeMap;

use futures::AsyncBufReadExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, LogParams};
use kube::{Resource, ResourceExt};

use crate::cache::{key_of, waiters};
use crate::crd::evaluation::{GitSource, Source};
use crate::crd::samples::BaselineRef;
use crate::crd::{Evaluation, EvaluationQuota, ModelEndpoint};
use crate::error::{Error, Result};
use crate::evaluation::Context;
use crate::evaluation::credentials;
use crate::gateway;
use crate::gateway::budget::DailyBudget;
use crate::lifecycle::samples::Samples;
use crate::lifecycle::{self, LogsNeeded, Observed, RuntimeClassCheck};
use crate::reading;
use crate::run::fetched::{FetchedSource, SourceProblem};
use crate::run::results::{LOG_WINDOW_BYTES, LogCapture, LogScanner, TailSearch};
use crate::run::state;
use crate::run::validate;
use crate::runner::Key;
use crate::source::pool::Answer;
use crate::source::{Credentials, GitRequest};
use crate::transfer::carry::carry;
use crate::transfer::{self, Baseline};

/// Bytes of a samples log beyond the frame's data lines: its header, trailer or error line.
const FRAME_SLACK: u64 = 8 * 1024;
/// Tries at reading one container's log before a stopping run goes on without it.
const LOG_READ_ATTEMPTS: u32 = 2;
/// Longest the reads of one log may take (the API server proxies them to the pod's kubelet).
const LOG_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Pause between two tries.
const LOG_READ_BACKOFF: std::time::Duration = std::time::Duration::from_millis(500);

/// Observes one Evaluation: its latest version (`None` once it is gone) and its cluster state.
///
/// # Errors
/// API errors other than "not found" while reading the Evaluation, its pods, the RuntimeClass
/// or a log.
pub async fn observe(cached: &Evaluation, ctx: &Context) -> Result<Option<(Evaluation, Observed)>> {
    let namespace = cached
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    // NB: the cache may not hold our own last status write yet, and keeps a status only in
    // part; planning from it could redo a step or mistake a finished run for a lost one. Unless
    // the Evaluation is new, one GET makes the plan start from the latest status.
    let ev = if ctx.caches.statuses.current(cached) {
        cached.clone()
    } else {
        let evaluations: Api<Evaluation> = Api::namespaced(ctx.client.clone(), &namespace);
        let Some(ev) = evaluations
            .get_opt(&cached.name_any())
            .await
            .map_err(Error::GetEvaluation)?
        else {
            return Ok(None);
        };
        if let Some(uid) = ev.uid().filter(|_| ev.status.is_some()) {
            ctx.caches.statuses.saw(&uid);
        }
        ev
    };
    let uid = ev
        .meta()
        .uid
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let now = Time(jiff::Timestamp::now());
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods = ctx.caches.pods_of(&namespace, &uid);
    let stop = ctx.stop_switch().covers(&namespace);
    let head = match git_of(&ev) {
        Some(git) if state::follows(&ev) && state::run_is_over(&ev) => {
            follow_head(ctx, &namespace, &ev.name_any(), git).await
        }
        _ => None,
    };
    // The sandbox is looked up whenever a pod may be created: a run not over, or a new one.
    let runtime_class = if state::run_is_over(&ev) && !state::awaits_admission(&ev, head.as_deref())
    {
        None
    } else {
        let class = validate::runtime_class(&ev.spec, &ctx.config);
        Some(if ctx.runtime_class_exists(class) {
            RuntimeClassCheck::Present
        } else {
            RuntimeClassCheck::Missing
        })
    };
    // A run that has started reads its pinned source only to start another attempt; a new
    // one once admitted.
    let (source, model_endpoints, daily_budget) = if state::awaits_admission(&ev, head.as_deref())
        || !lifecycle::started_run_needs_source(&ev, &pods)
    {
        (None, BTreeMap::new(), DailyBudget::default())
    } else {
        (
            source(&ev, ctx, head.as_deref()).await,
            model_endpoints(&ev, ctx).await?,
            daily_budget(&ev, ctx),
        )
    };
    let mut logs = BTreeMap::new();
    if let Some(LogsNeeded {
        pod,
        containers,
        stopping,
        overdue,
    }) = lifecycle::logs_needed(&ev, &pods, &now, stop.is_some(), &ctx.config)
    {
        // A pod being stopped (cancel, timeout, emergency stop) may sit on a lost node:
        // stopping must not depend on its log; nor, past lifecycle::LOG_WAIT, finishing.
        for container in containers {
            match read_log_retrying(&pod_api, &pod, container).await {
                Ok(Some(capture)) => {
                    logs.insert(container.to_string(), capture);
                }
                Ok(None) => {}
                Err(error) if stopping || overdue => {
                    tracing::warn!(%error, pod, container, "log unavailable; finishing anyway");
                    logs.insert(container.to_string(), LogCapture::unavailable(&error));
                }
                Err(error) => return Err(error),
            }
        }
    }
    let usage = usage(&ev, &pods, ctx);
    // A run whose end waits for its usage takes its samples' outcome on the look that ends
    // it: one taken now would be dropped by the plan (and the transfer done again).
    let samples = if matches!(usage, Some(gateway::notice::UsageAnswer::Latest(_)))
        && lifecycle::pod_ended(&ev, &pods)
    {
        None
    } else {
        samples(&ev, &pods, &pod_api, ctx)
    };
    let observed = Observed {
        now,
        pods,
        runtime_class,
        logs,
        stop,
        source,
        head,
        model_endpoints,
        daily_budget,
        samples,
        usage,
    };
    Ok(Some((ev, observed)))
}

/// The daily model budget of `ev`'s namespace, from its EvaluationQuotas in the cache: what
/// the token of a run starting now carries.
pub fn daily_budget(ev: &Evaluation, ctx: &Context) -> DailyBudget {
    let quotas = ctx.quotas_of(&ev.namespace().unwrap_or_default());
    let quotas: Vec<&EvaluationQuota> = quotas.iter().map(AsRef::as_ref).collect();
    crate::gateway::grant::daily_budget(&quotas)
}

/// The ModelEndpoints `ev`'s models name, read when an attempt may start (a few GETs, one per
/// distinct endpoint, at most `MAX_RUN_MODELS`): the run learns each model's protocol, whether
/// its namespace's endpoint serves it, and whether that endpoint is Ready. A run that finds an
/// endpoint not Ready is recorded as waiting for it (the ModelEndpoint controller sends it back
/// when the endpoint becomes Ready), then reads it once more: it may have become Ready between
/// the first read and the record, and then no wake-up would come.
///
/// # Errors
/// API errors other than "not found".
pub async fn model_endpoints(
    ev: &Evaluation,
    ctx: &Context,
) -> Result<BTreeMap<String, Option<ModelEndpoint>>> {
    let mut found = BTreeMap::new();
    let models = crate::run::models::models(&ev.spec);
    if models.is_empty() || ctx.config.gateway.is_none() {
        return Ok(found);
    }
    let namespace = ev.namespace().unwrap_or_default();
    let api: Api<ModelEndpoint> = Api::namespaced(ctx.client.clone(), &namespace);
    let get = |name: String| {
        let api = api.clone();
        async move {
            api.get_opt(&name)
                .await
                .map_err(|source| Error::GetModelEndpoint { name, source })
        }
    };
    for m in models {
        if found.contains_key(&m.endpoint) {
            continue;
        }
        let mut endpoint = get(m.endpoint.clone()).await?;
        if endpoint
            .as_ref()
            .is_some_and(|e| !gateway::endpoint::is_ready(e))
        {
            let waiting = waiters::endpoint_key(&namespace, &m.endpoint);
            ctx.caches.waiters.wait(&waiting, &key_of(ev));
            endpoint = get(m.endpoint.clone()).await?;
        }
        found.insert(m.endpoint.clone(), endpoint);
    }
    Ok(found)
}

/// What the current run with models has used, from the gateway, never waiting for it: each
/// look at a run that has started asks again ([`gateway::notice::Notices`], outside the
/// reconcile, 5 s at most) and reads the newest answer; once its pod has ended, the answer
/// to a question asked from then on, which reconciles the run when it comes. A failure is an
/// answer too: the plan keeps the last usage and says so if the run ends, rather than
/// holding the run.
fn usage(ev: &Evaluation, pods: &[Pod], ctx: &Context) -> Option<gateway::notice::UsageAnswer> {
    let notices = ctx.notices.as_ref()?;
    let (run, expires) = lifecycle::usage_needed(ev, &ctx.config)?;
    let namespace = ev.namespace().unwrap_or_default();
    let ended = lifecycle::pod_ended(ev, pods);
    let answer = notices.usage(key_of(ev), &namespace, &run, expires, ended);
    if let gateway::notice::UsageAnswer::Latest(Some(Err(why)))
    | gateway::notice::UsageAnswer::Final(Err(why)) = &answer
    {
        tracing::warn!(%run, %why, "the model gateway did not say what the run used");
    }
    Some(answer)
}

/// The samples of a pod whose steps succeeded: waiting for its samples container to stop,
/// then carried to the store outside the reconcile ([`Transfers`]), whose end reconciles the
/// Evaluation again.
fn samples(ev: &Evaluation, pods: &[Pod], pod_api: &Api<Pod>, ctx: &Context) -> Option<Samples> {
    let needed = lifecycle::samples_needed(ev, pods)?;
    if !needed.ready {
        return Some(Samples::Pending);
    }
    // A pod made by a controller with a store, finished under one without (a changed flag, a
    // replica configured otherwise): the run keeps its own result and says so.
    let Some(transfers) = &ctx.transfers else {
        return Some(Samples::Skipped(
            "this controller has no results store (--results-store)".into(),
        ));
    };
    let namespace = ev.namespace().unwrap_or_default();
    let max_log = ctx
        .config
        .samples
        .as_ref()
        .map_or(crate::transfer::emit::DEFAULT_MAX_OUTPUT, |s| s.max_output)
        .saturating_add(FRAME_SLACK);
    // The baseline is looked up inside the transfer: only when one starts, never in a reconcile.
    let (pods, store, client, of) = (
        pod_api.clone(),
        transfers.store.clone(),
        ctx.client.clone(),
        ev.clone(),
    );
    let key = (namespace.clone(), ev.name_any(), needed.run_id.clone());
    let validator = lifecycle::samples::validator(&ev.spec, ctx.config.sample_limits);
    let job = async move {
        let baseline = baseline(&of, client, store.url()).await;
        carry(pods, needed.pod, store, key, validator, max_log, baseline).await
    };
    Some(
        match transfers.poll(Key::new(namespace, ev.name_any()), &needed.run_id, job) {
            transfer::Answer::Ready(outcome) => Samples::Done(outcome),
            transfer::Answer::Pending => Samples::Pending,
        },
    )
}

/// The baseline run of `spec.compareTo`: the newest history entry with samples (`previous`),
/// or the named Evaluation's latest samples, as bundles of this namespace in `store`. `None`
/// (logged) when there is none yet or it cannot be used: the run is not failed for it.
async fn baseline(ev: &Evaluation, client: kube::Client, store: &str) -> Option<Baseline> {
    let compare = ev.spec.compare_to.as_ref()?;
    let namespace = ev.namespace()?;
    let (name, samples) = if compare.previous == Some(true) {
        let samples = ev
            .status
            .as_ref()?
            .history
            .iter()
            .find_map(|h| h.samples.clone())?;
        (ev.name_any(), (samples.uri?, samples.digest?))
    } else {
        let name = compare.evaluation.clone()?;
        let api: Api<Evaluation> = Api::namespaced(client, &namespace);
        let other = api.get_opt(&name).await.ok().flatten()?;
        let samples = other.status?.samples?;
        (name, (samples.uri?, samples.digest?))
    };
    let (uri, digest) = samples;
    let threshold = ev
        .spec
        .pass_threshold
        .unwrap_or(crate::run::results::DEFAULT_PASS_THRESHOLD);
    let label = format!("the baseline {namespace}/{name}");
    match reading::bundle_in(store, &namespace, label, &uri, &digest, threshold) {
        Ok(bundle) => Some(Baseline {
            reference: BaselineRef {
                evaluation: Some(name),
                run_id: reading::run_id_of(&bundle).map(str::to_string),
                digest: Some(digest),
            },
            bundle,
        }),
        Err(error) => {
            tracing::warn!(%error, "no comparison with the baseline");
            None
        }
    }
}

fn git_of(ev: &Evaluation) -> Option<&GitSource> {
    match &ev.spec.source {
        Some(Source::Git(git)) => Some(git),
        _ => None,
    }
}

/// The files of `ev`'s git source at the ref its run reads ([`lifecycle::source_reference`]);
/// `None` without a git source or when no run needs it.
pub async fn source(
    ev: &Evaluation,
    ctx: &Context,
    head: Option<&str>,
) -> Option<Result<FetchedSource, SourceProblem>> {
    let git = git_of(ev)?;
    let reference = lifecycle::source_reference(ev, head)?;
    let namespace = ev.namespace()?;
    Some(fetch(ctx, &namespace, &ev.name_any(), git, reference).await)
}

/// [`read_log`], tried [`LOG_READ_ATTEMPTS`] times, each bounded by [`LOG_READ_TIMEOUT`].
async fn read_log_retrying(
    api: &Api<Pod>,
    pod: &str,
    container: &str,
) -> Result<Option<LogCapture>> {
    let mut attempt = 1;
    loop {
        let deadline = tokio::time::Instant::now() + LOG_READ_TIMEOUT;
        match read_log(api, pod, container, deadline).await {
            Err(_) if attempt < LOG_READ_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(LOG_READ_BACKOFF).await;
            }
            outcome => return outcome,
        }
    }
}

/// Reads the end of one container's log through a [`LogScanner`]: the last whole lines that
/// fit in [`LOG_WINDOW_BYTES`], as [`TailSearch`] finds them, so the final result line and the
/// true last bytes survive any log size. `None` when the kubelet has no log for it (container
/// never started, pod gone). At `deadline` the best complete read so far is the answer (its
/// [`LogCapture::searched`] says how far back it reached); without one, a timeout.
async fn read_log(
    api: &Api<Pod>,
    pod: &str,
    container: &str,
    deadline: tokio::time::Instant,
) -> Result<Option<LogCapture>> {
    let mut search = TailSearch::default();
    let mut kept = None;
    loop {
        let read = read_log_once(api, pod, container, search.lines());
        let (capture, received) = match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(Some(read))) => read,
            Ok(Ok(None)) => return Ok(kept),
            Ok(Err(e)) => return Err(e),
            Err(_) if kept.is_some() => return Ok(kept),
            Err(_) => {
                return Err(Error::ReadLogTimeout {
                    pod: pod.to_string(),
                });
            }
        };
        let verdict = search.record(received, capture.result_line.is_some());
        if verdict.keep {
            kept = Some(LogCapture {
                whole: verdict.whole,
                ..capture
            });
        }
        if verdict.next.is_none() {
            return Ok(kept);
        }
    }
}

/// One read of the last `lines` lines (at most [`LOG_WINDOW_BYTES`]), streamed through a
/// [`LogScanner`]: its capture and the bytes received. `None` when the kubelet has no log.
async fn read_log_once(
    api: &Api<Pod>,
    pod: &str,
    container: &str,
    lines: i64,
) -> Result<Option<(LogCapture, u64)>> {
    let read_error = |source| Error::ReadLog {
        pod: pod.to_string(),
        source,
    };
    let params = LogParams {
        container: Some(container.to_string()),
        tail_lines: Some(lines),
        limit_bytes: Some(i64::try_from(LOG_WINDOW_BYTES).unwrap_or(i64::MAX)),
        ..Default::default()
    };
    let mut stream = match api.log_stream(pod, &params).await {
        Ok(stream) => stream,
        Err(kube::Error::Api(status)) if status.code == 400 || status.code == 404 => {
            return Ok(None);
        }
        Err(e) => return Err(read_error(e)),
    };
    let mut scanner = LogScanner::default();
    let mut received: u64 = 0;
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
        received = received.saturating_add(len as u64);
        stream.consume_unpin(len);
    }
    Ok(Some((scanner.finish(), received)))
}

/// Asks the fetch pool for the files of `git` at `reference`; a fetch under way is a
/// [`SourceProblem::pending`], and its end reconciles the Evaluation `ev_name` again.
async fn fetch(
    ctx: &Context,
    namespace: &str,
    ev_name: &str,
    git: &GitSource,
    reference: Option<String>,
) -> Result<FetchedSource, SourceProblem> {
    let request = GitRequest {
        url: git.url.clone(),
        reference,
        path: git.path.clone(),
        credentials: credentials(ctx, namespace, git).await?,
    };
    let waiter = Key::new(namespace, ev_name);
    match ctx.git.files(&waiter, request, ctx.config.max_source_bytes) {
        Answer::Ready(Ok(fetched)) => Ok(FetchedSource::from(fetched)),
        Answer::Ready(Err(error)) => Err(SourceProblem::from(&error)),
        Answer::Pending(why) => Err(SourceProblem::pending(why)),
    }
}

/// The commit a followed ref points to now; `None` (logged) when it cannot be resolved, and
/// while the pool resolves it (its end reconciles `ev_name` again).
async fn follow_head(
    ctx: &Context,
    namespace: &str,
    ev_name: &str,
    git: &GitSource,
) -> Option<String> {
    let request = GitRequest {
        url: git.url.clone(),
        reference: git.r#ref.clone(),
        path: None,
        credentials: credentials(ctx, namespace, git).await.ok()?,
    };
    match ctx.git.commit(&Key::new(namespace, ev_name), request) {
        Answer::Ready(Ok(commit)) => Some(commit),
        Answer::Ready(Err(error)) => {
            tracing::warn!(%error, "cannot check the followed ref");
            None
        }
        Answer::Pending(_) => None,
    }
}

/// Credentials from the Secret named in `secretRef`, when it is labelled for git and bound to
/// the repository's URL ([`credentials::from_secret`]).
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
    credentials::from_secret(&secret_ref.name, &secret, &git.url).map(Some)
}
