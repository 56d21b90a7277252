//! The one way Crucible writes to the API server: server-side apply of objects and of status
//! (apiVersion and kind come from the type, never typed by hand), create-only for objects that
//! must not take over another's name, idempotent delete (by uid where a name may be reused), the Api of a scope and the paginated
//! LIST of whatever still lists. Every field manager is named here.
//!
//! Errors are kube's own: each caller maps them into its boundary's error, which knows what
//! was being written and why.

use kube::api::{
    Api, DeleteParams, ListParams, ObjectList, PartialObjectMeta, Patch, PatchParams, PostParams,
    Preconditions,
};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Field manager of every child object the Evaluation controller applies.
pub const CHILD_MANAGER: &str = "crucible-controller";
/// Field manager of Evaluation status writes (distinct from children: 1.20 has no
/// per-subresource managers).
pub const STATUS_MANAGER: &str = "crucible-status";
/// Field manager of the child Evaluations a suite applies and of the suite's status.
pub const SUITE_MANAGER: &str = "crucible-suite";
/// Field manager of `EvaluationQuota.status`.
pub const QUOTA_STATUS_MANAGER: &str = "crucible-quota-status";
/// Field manager of `ModelEndpoint.status`.
pub const ENDPOINT_STATUS_MANAGER: &str = "crucible-endpoint-status";
/// Field manager of the emergency-stop switch (`crucible stop` / `resume`).
pub const STOP_MANAGER: &str = "crucible-stop";
/// Field manager of the sandbox canary's pods, policies and its ConfigMap `crucible-sandbox`.
pub const CANARY_MANAGER: &str = "crucible-canary";
/// Field manager of `crucible selftest`.
pub const SELFTEST_MANAGER: &str = "crucible-selftest";

/// Bound for types this module writes: typed, static resources.
pub trait Object:
    Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug
{
}

impl<K> Object for K where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug
{
}

/// The Api of a namespaced kind in one namespace, or in all with `None`.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Object + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The apply body of `object`: the object with its apiVersion and kind.
fn body<K: Object>(object: &impl Serialize) -> Result<serde_json::Value, kube::Error> {
    let mut body = serde_json::to_value(object).map_err(kube::Error::SerdeError)?;
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    Ok(body)
}

/// Server-side applies `object` (by its own name) as `manager`, taking over conflicting
/// fields: the controller is the only writer of what it manages.
///
/// # Errors
/// The API server refused the write.
pub async fn apply<K: Object>(api: &Api<K>, manager: &str, object: &K) -> Result<K, kube::Error> {
    let name = object.name_any();
    let params = PatchParams::apply(manager).force();
    api.patch(&name, &params, &Patch::Apply(&body::<K>(object)?))
        .await
}

/// Creates `object` as `manager`, failing with 409 if an object of that name exists: for
/// objects that must never take over one the controller does not own.
///
/// # Errors
/// The API server refused the create (409 when the name is taken).
pub async fn create<K: Object>(api: &Api<K>, manager: &str, object: &K) -> Result<K, kube::Error> {
    let params = PostParams {
        field_manager: Some(manager.to_string()),
        ..Default::default()
    };
    api.create(&params, object).await
}

/// Server-side applies the `status` of object `name` as `manager`.
///
/// # Errors
/// The API server refused the write.
pub async fn apply_status<K: Object>(
    api: &Api<K>,
    manager: &str,
    name: &str,
    status: &impl Serialize,
) -> Result<K, kube::Error> {
    let params = PatchParams::apply(manager).force();
    let body = body::<K>(&serde_json::json!({ "status": status }))?;
    api.patch_status(name, &params, &Patch::Apply(&body)).await
}

/// Deletes `name` in the background; an object already gone counts as deleted.
///
/// # Errors
/// The API server refused the delete for another reason.
pub async fn delete<K: Object>(api: &Api<K>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes `name` in the background only while it is the object with uid `uid`: a same-named
/// object that replaced it is not touched. Gone, or replaced, counts as deleted.
///
/// # Errors
/// The API server refused the delete for another reason.
pub async fn delete_exact<K: Object>(
    api: &Api<K>,
    name: &str,
    uid: &str,
) -> Result<(), kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Pages of this size keep each LIST (and the memory it needs at once) bounded.
const PAGE: u32 = 500;

/// The metadata of every object `api` lists with `params`, a page at a time.
///
/// # Errors
/// A page could not be read.
pub async fn list_all_metadata<K: Object>(
    api: &Api<K>,
    params: ListParams,
) -> Result<Vec<PartialObjectMeta<K>>, kube::Error> {
    let mut out = Vec::new();
    let mut params = params.limit(PAGE);
    loop {
        let page: ObjectList<PartialObjectMeta<K>> = api.list_metadata(&params).await?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}
