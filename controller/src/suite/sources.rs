//! Removes the shared workspace ConfigMaps a suite's spec no longer produces (see
//! [`crate::run::workspace`]): after a spec change, those it owns whose names are not
//! among the ones its cases use now. Failures are logged: what is left goes with the suite.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::crd::EvaluationSuite;
use crate::labels::{SOURCE_DIGEST_LABEL, SUITE_LABEL};
use crate::ssa;

/// Deletes `suite`'s shared workspaces whose names `keep` does not list.
pub async fn prune(client: &Client, suite: &EvaluationSuite, keep: &BTreeSet<String>) {
    let (Some(namespace), Some(uid)) = (suite.namespace(), suite.uid()) else {
        return;
    };
    let api: Api<ConfigMap> = ssa::scoped(client, Some(&namespace));
    let selector = format!("{SUITE_LABEL}={},{SOURCE_DIGEST_LABEL}", suite.name_any());
    let maps = match ssa::list_all_metadata(&api, ListParams::default().labels(&selector)).await {
        Ok(maps) => maps,
        Err(error) => {
            tracing::warn!(%error, "cannot list the suite's workspace ConfigMaps");
            return;
        }
    };
    let stale = maps.iter().filter(|cm| {
        cm.owner_references().iter().any(|r| r.uid == uid) && !keep.contains(&cm.name_any())
    });
    for cm in stale {
        if let Err(error) = ssa::delete(&api, &cm.name_any()).await {
            tracing::warn!(%error, configmap = %cm.name_any(), "cannot delete a stale workspace");
        }
    }
}
