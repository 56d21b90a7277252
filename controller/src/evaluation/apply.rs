//! Writes the children a plan asks for: server-side apply in order (NetworkPolicy, ConfigMap,
//! pod), and deletions. Permanent refusals come back as a [`Refusal`] so the run fails closed
//! instead of retrying forever.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::{Resource, ResourceExt};

use crate::crd::Evaluation;
use crate::error::{Error, Result};
use crate::evaluation::Context;
use crate::evaluation::plan::{Child, ChildKind, Plan, Refusal};
use crate::ssa;

/// Applies the plan's children in order; stops at the first permanent refusal.
///
/// # Errors
/// Passing API errors (network, conflicts, server errors), to be retried.
pub async fn create(ev: &Evaluation, plan: &Plan, ctx: &Context) -> Result<Option<Refusal>> {
    let namespace = ev
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    for child in &plan.create {
        let outcome = match child {
            Child::NetworkPolicy(np) => ssa(ctx, &namespace, np.as_ref(), "NetworkPolicy").await,
            Child::ConfigMap(cm) => ssa(ctx, &namespace, cm.as_ref(), "ConfigMap").await,
            Child::Pod(pod) => ssa(ctx, &namespace, pod.as_ref(), "Pod").await,
        };
        let Err(Error::ApplyChild { kind, name, source }) = outcome else {
            outcome?;
            continue;
        };
        if let Some(refusal) = refusal(kind, &source) {
            return Ok(Some(refusal));
        }
        return Err(Error::ApplyChild { kind, name, source });
    }
    Ok(None)
}

/// Whether an API error refuses a child for good, and how the run should fail.
fn refusal(kind: &'static str, error: &kube::Error) -> Option<Refusal> {
    let kube::Error::Api(status) = error else {
        return None;
    };
    let message = format!("{kind} refused by the API server: {}", status.message);
    match (kind, status.code) {
        // No NetworkPolicy API, RBAC forbids it, or a webhook rejects it: no isolation, no pod.
        ("NetworkPolicy", 400 | 403 | 404 | 405 | 422) => Some(Refusal {
            reason: "SandboxUnavailable",
            message,
        }),
        // The RuntimeClass admission plugin refuses pods whose class vanished.
        ("Pod", 403) if status.message.contains("RuntimeClass") => Some(Refusal {
            reason: "SandboxUnavailable",
            message,
        }),
        ("Pod" | "ConfigMap", 400 | 422) => Some(Refusal {
            reason: "PodRejected",
            message,
        }),
        _ => None,
    }
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

/// Deletes the plan's children; "not found" counts as done.
///
/// # Errors
/// Passing API errors, to be retried.
pub async fn delete(ev: &Evaluation, plan: &Plan, ctx: &Context) -> Result<()> {
    let namespace = ev
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    for (kind, name) in &plan.delete {
        match kind {
            ChildKind::Pod => remove::<Pod>(ctx, &namespace, name, "Pod").await?,
            ChildKind::NetworkPolicy => {
                remove::<NetworkPolicy>(ctx, &namespace, name, "NetworkPolicy").await?
            }
            ChildKind::ConfigMap => remove::<ConfigMap>(ctx, &namespace, name, "ConfigMap").await?,
        }
    }
    Ok(())
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
