//! The ModelEndpoint controller: each endpoint's `Ready` condition, from its Secret, as decided
//! by the pure [`gateway::endpoint`](crate::gateway::endpoint). Started only with a model
//! gateway (`--gateway-service`). A reconcile has the other controllers' shape: observe (the
//! endpoint and its Secret's metadata from the caches; the Secret itself only once its metadata
//! qualifies) → decide (pure) → report (status through `ssa`).
//!
//! Secrets are watched metadata-only (`PartialObjectMeta`), and the cache keeps of each only
//! the model-credentials label and the model-host annotation: no key byte is cached, not even
//! through `kubectl apply`'s last-applied annotation, which copies a Secret's data. A Secret's
//! change reaches the endpoints that name it through an index (`namespace/secret` → endpoints),
//! never by looking at every endpoint.

pub mod reconcile;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::cache::waiters::endpoint_key;
use crate::cache::{Caches, Change, Indexed, key_of, lean};
use crate::crd::ModelEndpoint;
use crate::labels::{MODEL_CREDENTIALS_LABEL, MODEL_HOST_ANNOTATION};
use crate::metrics::Metrics;
use crate::runner::{self, Trigger, Triggers};
use crate::watches;

/// What an endpoint reconcile needs.
pub struct Context {
    /// API client (bounded reads).
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The shared caches: the runs waiting for an endpoint ([`Caches::waiters`]).
    pub caches: Arc<Caches>,
    /// The Evaluation controller's work queue, where waiting runs are sent back.
    pub evaluations: Trigger,
    /// ModelEndpoints, indexed by their Secret ([`secret_index`]).
    pub endpoints: Indexed<ModelEndpoint>,
    /// Secrets' metadata, lean ([`lean_secret`]).
    pub secrets: Indexed<PartialObjectMeta<Secret>>,
}

impl Context {
    /// Empty caches fed by `scopes` watchers each.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        caches: Arc<Caches>,
        evaluations: Trigger,
        scopes: usize,
    ) -> Self {
        Context {
            client,
            metrics,
            caches,
            evaluations,
            endpoints: Indexed::new(scopes, secret_index),
            secrets: Indexed::new(scopes, |_| None),
        }
    }
}

impl Context {
    /// Sends the runs waiting for `endpoint` back to the Evaluation controller.
    pub fn wake_waiting(&self, endpoint: &ModelEndpoint) {
        let namespace = endpoint.namespace().unwrap_or_default();
        let waiting = endpoint_key(&namespace, &endpoint.name_any());
        for run in self.caches.waiters.take(&waiting) {
            let _ = self.evaluations.send(run);
        }
    }
}

/// The index value of an endpoint: its Secret as `namespace/name` (a namespace has no `/`).
pub fn secret_index(endpoint: &ModelEndpoint) -> Option<String> {
    let namespace = endpoint.namespace()?;
    Some(format!("{namespace}/{}", endpoint.spec.secret_ref.name))
}

/// A Secret as the cache keeps it: name, namespace, resourceVersion, and of its labels and
/// annotations only the two the decision reads.
pub fn lean_secret(secret: &mut PartialObjectMeta<Secret>) {
    let meta = &mut secret.metadata;
    lean::metadata(meta);
    let keep = |map: &mut Option<BTreeMap<String, String>>, key: &str| {
        *map = map.take().and_then(|m| {
            m.get(key)
                .map(|v| BTreeMap::from([(key.to_string(), v.clone())]))
        });
    };
    keep(&mut meta.labels, MODEL_CREDENTIALS_LABEL);
    keep(&mut meta.annotations, MODEL_HOST_ANNOTATION);
}

/// Starts the watches of `scopes` (namespaces; `None` is all), waits until they have listed
/// once (an endpoint decided from an unsynced Secret cache would read `SecretNotFound`), then
/// reconciles endpoints until `shutdown` completes.
pub async fn run(
    ctx: Arc<Context>,
    watch_client: &Client,
    scopes: &[Option<String>],
    concurrency: u16,
    shutdown: impl Future<Output = ()>,
) {
    let (trigger, triggers) = runner::channel();
    spawn_watches(&ctx, watch_client, scopes, &trigger);
    ctx.endpoints.synced().await;
    ctx.secrets.synced().await;
    tracing::info!(
        endpoints = ctx.endpoints.len(),
        "ModelEndpoint and Secret caches synced"
    );
    reconcile_keys(ctx, triggers, concurrency, shutdown).await;
}

async fn reconcile_keys(
    ctx: Arc<Context>,
    triggers: Triggers,
    concurrency: u16,
    shutdown: impl Future<Output = ()>,
) {
    runner::reconcile_keys(
        triggers,
        concurrency,
        ctx,
        |ctx, key| ctx.endpoints.get(key),
        reconcile::reconcile,
        reconcile::error_policy,
        shutdown,
    )
    .await;
}

fn spawn_watches(ctx: &Arc<Context>, client: &Client, scopes: &[Option<String>], wake: &Trigger) {
    for scope in scopes {
        let endpoints = watches::watch(
            client,
            scope,
            watcher::Config::default(),
            |e: &mut ModelEndpoint| {
                lean::metadata(&mut e.metadata);
            },
        );
        let secrets = watches::watch(client, scope, watcher::Config::default(), lean_secret);
        let (c, s, w) = (ctx.clone(), scope.clone(), wake.clone());
        tokio::spawn(endpoints.for_each(move |event| {
            for change in c.endpoints.apply(s.as_deref(), event) {
                match change {
                    Change::Applied { old, new } if endpoint_changed(old.as_deref(), &new) => {
                        let _ = w.send(key_of(new.as_ref()));
                    }
                    // Its waiting runs go back to the gate, which ends them: no endpoint.
                    Change::Deleted(gone) => c.wake_waiting(&gone),
                    _ => {}
                }
            }
            async {}
        }));
        let (c, s, w) = (ctx.clone(), scope.clone(), wake.clone());
        tokio::spawn(secrets.for_each(move |event| {
            for change in c.secrets.apply(s.as_deref(), event) {
                let secret = match change {
                    Change::Applied { old, new } if secret_changed(old.as_deref(), &new) => new,
                    Change::Deleted(gone) => gone,
                    _ => continue,
                };
                for key in endpoints_of(&c.endpoints, &secret) {
                    let _ = w.send(key);
                }
            }
            async {}
        }));
    }
}

/// An endpoint is looked at when first seen and when its spec changed (its own status writes
/// come back with the same generation and ask for nothing).
fn endpoint_changed(old: Option<&ModelEndpoint>, new: &ModelEndpoint) -> bool {
    old.is_none_or(|old| old.metadata.generation != new.metadata.generation)
}

/// A Secret matters when it is new or anything of it changed (its data too: a removed key
/// changes only its resourceVersion).
fn secret_changed(
    old: Option<&PartialObjectMeta<Secret>>,
    new: &PartialObjectMeta<Secret>,
) -> bool {
    old.is_none_or(|old| old.metadata.resource_version != new.metadata.resource_version)
}

/// The keys of the endpoints in `secret`'s namespace that name it.
fn endpoints_of(
    endpoints: &Indexed<ModelEndpoint>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<runner::Key> {
    let Some(namespace) = secret.namespace() else {
        return Vec::new();
    };
    endpoints
        .indexed(&format!("{namespace}/{}", secret.name_any()))
        .iter()
        .map(|e| key_of(e.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;
    use kube::runtime::watcher::Event;

    use super::*;
    use crate::crd::model::{KeySecretRef, ModelEndpointSpec};

    pub(crate) fn endpoint(ns: &str, name: &str, secret: &str) -> ModelEndpoint {
        let mut e = ModelEndpoint::new(
            name,
            ModelEndpointSpec {
                base_url: "https://api.openai.com/v1".into(),
                secret_ref: KeySecretRef {
                    name: secret.into(),
                    key: "apiKey".into(),
                },
                models: vec!["gpt-4.1-mini".into()],
                ..Default::default()
            },
        );
        e.metadata.namespace = Some(ns.into());
        e.metadata.generation = Some(1);
        e
    }

    fn secret_meta(ns: &str, name: &str) -> PartialObjectMeta<Secret> {
        PartialObjectMeta {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_secret_reaches_only_the_endpoints_of_its_namespace_that_name_it() {
        let endpoints = Indexed::new(1, secret_index);
        for e in [
            endpoint("team-a", "openai", "key"),
            endpoint("team-a", "openai-2", "key"),
            endpoint("team-a", "other", "other-key"),
            endpoint("team-b", "openai", "key"),
        ] {
            endpoints.apply(None, Event::Apply(e));
        }
        let mut keys = endpoints_of(&endpoints, &secret_meta("team-a", "key"));
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            keys,
            vec![
                runner::Key::new("team-a", "openai"),
                runner::Key::new("team-a", "openai-2")
            ]
        );
        assert!(endpoints_of(&endpoints, &secret_meta("team-c", "key")).is_empty());
        // An endpoint moved to another Secret leaves the first one's index.
        endpoints.apply(None, Event::Apply(endpoint("team-a", "openai-2", "new")));
        assert_eq!(
            endpoints_of(&endpoints, &secret_meta("team-a", "key")).len(),
            1
        );
    }

    #[test]
    fn the_secret_cache_keeps_no_data_and_only_the_two_marks() {
        let mut s = secret_meta("team-a", "key");
        s.metadata.labels = Some(BTreeMap::from([
            (MODEL_CREDENTIALS_LABEL.into(), "true".into()),
            ("team".into(), "a".into()),
        ]));
        s.metadata.annotations = Some(BTreeMap::from([
            (MODEL_HOST_ANNOTATION.into(), "api.openai.com".into()),
            (
                "kubectl.kubernetes.io/last-applied-configuration".into(),
                r#"{"data":{"apiKey":"c2stc2VjcmV0"}}"#.into(),
            ),
        ]));
        lean_secret(&mut s);
        assert_eq!(
            s.metadata.labels,
            Some(BTreeMap::from([(
                MODEL_CREDENTIALS_LABEL.into(),
                "true".into()
            )]))
        );
        assert_eq!(
            s.metadata.annotations,
            Some(BTreeMap::from([(
                MODEL_HOST_ANNOTATION.into(),
                "api.openai.com".into()
            )]))
        );
        let mut bare = secret_meta("team-a", "plain");
        bare.metadata.annotations = Some(BTreeMap::from([("a".into(), "b".into())]));
        lean_secret(&mut bare);
        assert_eq!(
            (bare.metadata.labels, bare.metadata.annotations),
            (None, None)
        );
    }

    #[test]
    fn own_status_writes_do_not_trigger_and_spec_edits_do() {
        let e = endpoint("team-a", "openai", "key");
        assert!(endpoint_changed(None, &e));
        let mut with_status = e.clone();
        with_status.status = Some(Default::default());
        assert!(!endpoint_changed(Some(&e), &with_status));
        let mut edited = e.clone();
        edited.metadata.generation = Some(2);
        assert!(endpoint_changed(Some(&e), &edited));
    }
}
