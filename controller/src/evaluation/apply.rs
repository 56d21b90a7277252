//! Puts the children a plan asks for in place, in order (the namespace's deny-all NetworkPolicy
//! or the run's allowlist NetworkPolicy, the workspace ConfigMap, the pod), and deletes.
//! Permanent refusals come back as a [`Refusal`] so the run fails closed instead of retrying
//! forever; a passing failure of the namespace policy comes back as one to retry, so the run
//! waits with the reason in its status.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};

use crate::crd::Evaluation;
use crate::error::{Error, Result};
use crate::evaluation::Context;
use crate::evaluation::sandbox_policy::{self, POLICY_NAME, PolicyError};
use crate::evaluation::workspace;
use crate::labels::MANAGED_LABEL;
use crate::lifecycle::{Child, ChildKind, Plan, Refusal};
use crate::ownership;
use crate::ssa;

/// Puts the plan's children in place in order; stops at the first refusal.
///
/// # Errors
/// Passing API errors (network, conflicts, server errors), to be retried.
pub async fn create(ev: &Evaluation, plan: &Plan, ctx: &Context) -> Result<Option<Refusal>> {
    let namespace = ev
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    for child in &plan.create {
        let outcome = match child {
            Child::SandboxPolicy => {
                match ctx.sandbox_policies.ensure(&ctx.client, &namespace).await {
                    Ok(()) => continue,
                    Err(error) => return sandbox_policy_refusal(plan, &namespace, error),
                }
            }
            Child::NetworkPolicy(np) => match widened(ctx, &namespace, plan, np).await {
                Ok(Some(refusal)) => return Ok(Some(refusal)),
                Ok(None) => ssa(ctx, &namespace, np.as_ref(), "NetworkPolicy").await,
                Err(error) => Err(error),
            },
            Child::ConfigMap(cm) => {
                let api: Api<ConfigMap> = ssa::scoped(&ctx.client, Some(&namespace));
                workspace::ensure(&api, cm, cm_is_shared(cm)).await
            }
            Child::Pod(pod) => {
                // Until the pod cache shows it, this Evaluation is not planned again. Expected
                // before the create: its watch event may arrive before the response does.
                let uid = ev.uid().unwrap_or_default();
                let now = tokio::time::Instant::now();
                ctx.caches.expected.expect(&uid, &pod.name_any(), now);
                let outcome = create_pod(ctx, &namespace, pod, &uid).await;
                if !matches!(outcome, Ok(None)) {
                    ctx.caches.expected.forget(&uid);
                }
                match outcome {
                    Ok(None) => continue,
                    Ok(Some(taken)) => return Ok(Some(taken)),
                    Err(error) => Err(error),
                }
            }
        };
        let Err(Error::ApplyChild { kind, name, source }) = outcome else {
            outcome?;
            continue;
        };
        if let Some(refusal) = refusal(kind, &namespace, &source)? {
            return Ok(Some(refusal));
        }
        // A first attempt waits with the reason in its status; a later one retries as any
        // passing error (as for the namespace policy).
        if let Some(message) = webhook_unavailable(&source)
            && plan.status.attempts.unwrap_or(1) <= 1
        {
            return Ok(Some(Refusal {
                reason: "WebhookUnavailable",
                message: format!("{kind} {name}: {message}"),
                retry: true,
            }));
        }
        return Err(Error::ApplyChild { kind, name, source });
    }
    Ok(None)
}

/// Most NetworkPolicies of a namespace read to check an `Allowlist` run; a namespace with more
/// is not checked, and the run waits (fail closed).
const POLICIES_CHECKED: u32 = 500;

/// An `Allowlist` run waits (its reason in status, an Event) while another NetworkPolicy of
/// its namespace selects its pod and allows egress: policies add up, so the run could reach
/// more than its allowlist. Read at each start, from the API server (the controller watches
/// only its own policies); looked at again after [`crate::lifecycle::SANDBOX_RETRY`].
async fn widened(
    ctx: &Context,
    namespace: &str,
    plan: &Plan,
    own: &NetworkPolicy,
) -> Result<Option<Refusal>> {
    let Some(labels) = plan.create.iter().find_map(|c| match c {
        Child::Pod(pod) => pod.metadata.labels.clone(),
        _ => None,
    }) else {
        return Ok(None);
    };
    let api: Api<NetworkPolicy> = ssa::scoped(&ctx.client, Some(namespace));
    let list = api
        .list(&ListParams::default().limit(POLICIES_CHECKED))
        .await
        .map_err(|source| Error::ApplyChild {
            kind: "NetworkPolicy",
            name: own.name_any(),
            source,
        })?;
    let names = sandbox_policy::widening(&list.items, &labels, &own.name_any());
    let message = if !names.is_empty() {
        format!(
            "NetworkPolicy {} selects this run's sandbox pod and allows egress; NetworkPolicies add up, so the run could reach more than spec.sandbox.egress. Remove it, or keep pods labelled {MANAGED_LABEL}=true out of its podSelector",
            names.join(", ")
        )
    } else if list.metadata.continue_.is_some_and(|c| !c.is_empty()) {
        format!(
            "the namespace has more than {POLICIES_CHECKED} NetworkPolicies; none may widen an Allowlist run, and not all can be checked"
        )
    } else {
        return Ok(None);
    };
    Ok(Some(Refusal {
        reason: "EgressWidened",
        message,
        retry: true,
    }))
}

/// Creates the pod; never applies it: a forced apply would take over a same-named pod of
/// another owner (its labels, and a second controller reference the API server refuses). A pod
/// of that name that this Evaluation already controls (created just before a crash, before the
/// status said so) is the one meant; any other is left untouched and refuses the run.
async fn create_pod(
    ctx: &Context,
    namespace: &str,
    pod: &Pod,
    uid: &str,
) -> Result<Option<Refusal>> {
    let api: Api<Pod> = ssa::scoped(&ctx.client, Some(namespace));
    let name = pod.name_any();
    let error = |source| Error::ApplyChild {
        kind: "Pod",
        name: name.clone(),
        source,
    };
    let taken = match ssa::create(&api, ssa::CHILD_MANAGER, pod).await {
        Ok(_) => return Ok(None),
        Err(kube::Error::Api(status)) if status.code == 409 => status,
        Err(source) => return Err(error(source)),
    };
    match api.get_opt(&name).await.map_err(error)? {
        Some(existing) if ownership::controlled_by::<Evaluation>(existing.meta(), uid) => Ok(None),
        Some(_) => Ok(Some(Refusal {
            reason: "PodNameTaken",
            message: format!(
                "a pod named {name} that this Evaluation does not own exists in the namespace; \
                 it was left untouched"
            ),
            retry: false,
        })),
        // Deleted since: the next try creates it.
        None => Err(error(kube::Error::Api(taken))),
    }
}

/// Whether a planned workspace ConfigMap is a suite's shared one (owned by the suite).
fn cm_is_shared(cm: &ConfigMap) -> bool {
    let suite = crate::crd::EvaluationSuite::kind(&());
    cm.owner_references().iter().any(|r| r.kind == suite)
}

/// The namespace policy is not in place: no pod. A permanent refusal fails the run; anything
/// else lets a first attempt wait and retry with the reason in status (a later attempt of a
/// running run retries as any passing error).
fn sandbox_policy_refusal(
    plan: &Plan,
    namespace: &str,
    error: PolicyError,
) -> Result<Option<Refusal>> {
    let source = match error {
        PolicyError::NotDenyAll => {
            return Ok(Some(Refusal {
                reason: "SandboxUnavailable",
                message: PolicyError::NotDenyAll.to_string(),
                retry: false,
            }));
        }
        PolicyError::Api(source) => source,
    };
    if let Some(refusal) = refusal("NetworkPolicy", namespace, &source)? {
        return Ok(Some(refusal));
    }
    if plan.status.attempts.unwrap_or(1) > 1 {
        return Err(Error::ApplyChild {
            kind: "NetworkPolicy",
            name: POLICY_NAME.into(),
            source,
        });
    }
    Ok(Some(Refusal {
        reason: "SandboxUnavailable",
        message: format!(
            "the namespace's deny-all NetworkPolicy {POLICY_NAME} could not be applied: {source}"
        ),
        retry: true,
    }))
}

/// Whether an API error says the namespace is being deleted. Not the run's failure: its
/// Evaluation is deleted with the namespace, so it waits for that (and writes nothing) instead
/// of ending `Failed` and freeing its slot for the next doomed run of the namespace.
fn namespace_terminating(error: &kube::Error) -> bool {
    let kube::Error::Api(status) = error else {
        return false;
    };
    let cause = status
        .details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"));
    status.code == 403 && (cause || status.message.contains("because it is being terminated"))
}

/// The API server's message when an admission webhook could not be called (a 5xx: the
/// webhook's service is down, slow or failing). Not the run's fault and it may pass, but it
/// must show in the status rather than be retried in silence.
fn webhook_unavailable(error: &kube::Error) -> Option<String> {
    let kube::Error::Api(status) = error else {
        return None;
    };
    let webhook = status.message.contains("failed calling webhook")
        || status.message.contains("admission webhook");
    ((500..600).contains(&status.code) && webhook).then(|| {
        format!(
            "an admission webhook could not be called: {}",
            status.message
        )
    })
}

/// Whether an API error refuses a child for good, and how the run should fail.
///
/// # Errors
/// [`Error::NamespaceTerminating`] when `namespace` is being deleted: no refusal of the run.
fn refusal(kind: &'static str, namespace: &str, error: &kube::Error) -> Result<Option<Refusal>> {
    if namespace_terminating(error) {
        return Err(Error::NamespaceTerminating(namespace.to_string()));
    }
    let kube::Error::Api(status) = error else {
        return Ok(None);
    };
    let reason = match (kind, status.code) {
        // No NetworkPolicy API, RBAC forbids it, or a webhook rejects it: no isolation, no pod.
        ("NetworkPolicy", 400 | 403 | 404 | 405 | 422) => "SandboxUnavailable",
        // The RuntimeClass admission plugin refuses pods whose class vanished.
        ("Pod", 403) if status.message.contains("RuntimeClass") => "SandboxUnavailable",
        ("Pod" | "ConfigMap", 400 | 422) => "PodRejected",
        // A ResourceQuota or LimitRange, Pod Security admission, RBAC or a webhook: trying
        // again will not change the answer until someone changes the namespace.
        ("Pod" | "ConfigMap", 403) => "PodForbidden",
        // The object is larger than the API server or etcd accepts.
        (_, 413) => "ObjectTooLarge",
        (_, 500) if status.message.contains("request is too large") => "ObjectTooLarge",
        _ => return Ok(None),
    };
    Ok(Some(Refusal {
        reason,
        message: format!("{kind} refused by the API server: {}", status.message),
        retry: false,
    }))
}

async fn ssa<K>(ctx: &Context, namespace: &str, object: &K, kind: &'static str) -> Result<()>
where
    K: ssa::Object + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    let api: Api<K> = ssa::scoped(&ctx.client, Some(namespace));
    ssa::apply(&api, ssa::CHILD_MANAGER, object)
        .await
        .map(|_| ())
        .map_err(|source| Error::ApplyChild {
            kind,
            name: object.name_any(),
            source,
        })
}

/// Deletes the plan's children; "not found" counts as done. A pod is deleted only when the
/// pod cache shows it as this Evaluation's ([`crate::ownership`]), and only that very pod
/// (by uid): a same-named pod of another owner is never touched.
///
/// # Errors
/// Passing API errors, to be retried.
pub async fn delete(ev: &Evaluation, plan: &Plan, ctx: &Context) -> Result<()> {
    let namespace = ev
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let owned = ctx
        .caches
        .pods_of(&namespace, &ev.uid().unwrap_or_default());
    for (kind, name) in &plan.delete {
        match kind {
            ChildKind::Pod => {
                let uid = owned
                    .iter()
                    .find(|p| &p.name_any() == name)
                    .and_then(|p| p.uid());
                if let Some(uid) = uid {
                    remove_pod(ctx, &namespace, name, &uid).await?;
                }
            }
            ChildKind::NetworkPolicy => {
                remove::<NetworkPolicy>(ctx, &namespace, name, "NetworkPolicy").await?
            }
            ChildKind::ConfigMap => remove::<ConfigMap>(ctx, &namespace, name, "ConfigMap").await?,
        }
    }
    Ok(())
}

async fn remove_pod(ctx: &Context, namespace: &str, name: &str, uid: &str) -> Result<()> {
    let api: Api<Pod> = ssa::scoped(&ctx.client, Some(namespace));
    ssa::delete_exact(&api, name, uid)
        .await
        .map_err(|source| Error::DeleteChild {
            kind: "Pod",
            name: name.to_string(),
            source,
        })
}

async fn remove<K>(ctx: &Context, namespace: &str, name: &str, kind: &'static str) -> Result<()>
where
    K: ssa::Object + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    let api: Api<K> = ssa::scoped(&ctx.client, Some(namespace));
    ssa::delete(&api, name)
        .await
        .map_err(|source| Error::DeleteChild {
            kind,
            name: name.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn refusals_that_will_not_go_away_end_the_run_with_their_reason() {
        let quota = "pods \"x\" is forbidden: exceeded quota: compute, requested: cpu=2";
        let cases = [
            ("Pod", 403, quota, Some("PodForbidden")),
            (
                "Pod",
                403,
                "violates PodSecurity \"restricted:latest\"",
                Some("PodForbidden"),
            ),
            (
                "Pod",
                403,
                "pod rejected: RuntimeClass \"gvisor\" not found",
                Some("SandboxUnavailable"),
            ),
            (
                "ConfigMap",
                413,
                "Request entity too large",
                Some("ObjectTooLarge"),
            ),
            (
                "ConfigMap",
                500,
                "etcdserver: request is too large",
                Some("ObjectTooLarge"),
            ),
            (
                "Pod",
                422,
                "spec.containers: Invalid value",
                Some("PodRejected"),
            ),
            (
                "NetworkPolicy",
                404,
                "the server could not find the requested resource",
                Some("SandboxUnavailable"),
            ),
            // Passing trouble is retried.
            ("Pod", 500, "etcdserver: leader changed", None),
            ("Pod", 409, "conflict", None),
            ("Pod", 429, "too many requests", None),
        ];
        for (kind, code, message, reason) in cases {
            let got = refusal(kind, "team-a", &api_error(code, message))
                .expect("the namespace is not being deleted")
                .map(|r| r.reason);
            assert_eq!(got, reason, "{kind} {code} {message}");
        }
        // A namespace being deleted refuses every child, and is no refusal of the run.
        let terminating = "unable to create new content in namespace team-a because it is \
                           being terminated";
        for kind in ["Pod", "ConfigMap", "NetworkPolicy"] {
            let got = refusal(kind, "team-a", &api_error(403, terminating));
            assert!(
                matches!(got, Err(Error::NamespaceTerminating(ref ns)) if ns == "team-a"),
                "{kind}: {got:?}"
            );
        }
    }
}

#[cfg(test)]
#[path = "life_tests.rs"]
mod life_tests;
