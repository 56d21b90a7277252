//! Applies a run's workspace ConfigMap ([`crate::run::workspace`] says what it holds): created
//! when missing, reused when it checks out, replaced otherwise.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};

use crate::error::{Error, Result};
use crate::run::workspace::{Existing, check_existing};
use crate::ssa;

/// Makes sure `desired` exists in `namespace` as it is: created if missing (looked up first
/// when shared, since a sibling usually made it), reused if it checks out, replaced otherwise.
///
/// # Errors
/// API errors as [`Error::ApplyChild`] (kind `ConfigMap`), and [`Error::WorkspaceBusy`] while
/// a ConfigMap of that name is being deleted.
pub async fn ensure(api: &Api<ConfigMap>, desired: &ConfigMap, shared: bool) -> Result<()> {
    let name = desired.name_any();
    let api_error = |source| Error::ApplyChild {
        kind: "ConfigMap",
        name: name.clone(),
        source,
    };
    if shared && let Some(existing) = api.get_opt(&name).await.map_err(api_error)? {
        return settle(api, existing, desired).await;
    }
    match ssa::create(api, ssa::CHILD_MANAGER, desired).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            match api.get_opt(&name).await.map_err(api_error)? {
                Some(existing) => settle(api, existing, desired).await,
                // Deleted in between: the next reconcile creates it.
                None => Err(Error::WorkspaceBusy {
                    name,
                    why: "it was deleted while being created".into(),
                }),
            }
        }
        Err(source) => Err(api_error(source)),
    }
}

async fn settle(api: &Api<ConfigMap>, existing: ConfigMap, desired: &ConfigMap) -> Result<()> {
    let name = desired.name_any();
    let api_error = |source| Error::ApplyChild {
        kind: "ConfigMap",
        name: name.clone(),
        source,
    };
    match check_existing(&existing, desired) {
        Existing::Reuse => Ok(()),
        Existing::Wait(why) => Err(Error::WorkspaceBusy { name, why }),
        Existing::Replace(why) => {
            tracing::warn!(configmap = %name, %why, "replacing a workspace ConfigMap");
            // Only the object just checked: a newer one is checked again next time.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: existing.uid(),
                    resource_version: existing.resource_version(),
                }),
                ..DeleteParams::background()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => return Err(api_error(source)),
            }
            ssa::create(api, ssa::CHILD_MANAGER, desired)
                .await
                .map(|_| ())
                .map_err(api_error)
        }
    }
}

#[cfg(test)]
#[path = "workspace_tests.rs"]
mod tests;
