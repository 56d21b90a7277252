//! One endpoint's reconcile: its Secret's metadata from the cache, the Secret itself (a GET,
//! its data dropped at once) only when the pure decision asks whether it holds the key, then
//! the `Ready` condition written through `ssa` when it changed; a Ready endpoint sends the runs
//! waiting for it back to the Evaluation controller.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;

use crate::crd::ModelEndpoint;
use crate::error::{Error, Result};
use crate::gateway::endpoint::{self, Readiness, Verdict};
use crate::model_endpoint::Context;
use crate::requeue::{self, Requeue};
use crate::runner::Key;
use crate::ssa;

/// Reconciles one endpoint; every later change comes through the watches.
///
/// # Errors
/// Reading the Secret or writing the status failed.
#[tracing::instrument(skip_all, fields(endpoint = %cached.name_any()))]
pub async fn reconcile(cached: Arc<ModelEndpoint>, ctx: Arc<Context>) -> Result<Requeue> {
    let _timer = ctx.metrics.reconcile_timer("ModelEndpoint");
    let namespace = cached
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let readiness = observe(&cached, &namespace, &ctx).await?;
    let status = endpoint::status(
        cached.status.as_ref(),
        &readiness,
        cached.metadata.generation,
        &Time(jiff::Timestamp::now()),
    );
    if cached.status.as_ref() != Some(&status) {
        tracing::debug!(reason = readiness.reason, "ModelEndpoint readiness changed");
        let api: Api<ModelEndpoint> = Api::namespaced(ctx.client.clone(), &namespace);
        ssa::apply_status(
            &api,
            ssa::ENDPOINT_STATUS_MANAGER,
            &cached.name_any(),
            &status,
        )
        .await
        .map_err(Error::PatchStatus)?;
    }
    if readiness.ready {
        // After the write: a woken run reads the endpoint Ready.
        ctx.wake_waiting(&cached);
    }
    Ok(Requeue::AwaitChange)
}

/// The readiness of `endpoint`: decided on its Secret's cached metadata, or on whether the
/// Secret, read now, holds the key.
async fn observe(endpoint: &ModelEndpoint, namespace: &str, ctx: &Context) -> Result<Readiness> {
    let spec = &endpoint.spec;
    let name = &spec.secret_ref.name;
    let cached = ctx.secrets.get(&Key::new(namespace, name.as_str()));
    let meta = cached.as_ref().map(|s| &s.metadata);
    if let Verdict::Known(readiness) = endpoint::readiness(spec, meta) {
        return Ok(readiness);
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = api.get_opt(name).await.map_err(|source| Error::GetSecret {
        name: name.clone(),
        source,
    })?;
    // Decided again on the Secret as read (the cache may lag behind it); only a yes or no
    // about the key is kept of its data.
    Ok(
        match endpoint::readiness(spec, secret.as_ref().map(|s| &s.metadata)) {
            Verdict::Known(readiness) => readiness,
            Verdict::ReadKey(bound) => {
                let has_key = secret
                    .as_ref()
                    .is_some_and(|s| endpoint::has_key(s, &spec.secret_ref.key));
                bound.with_key(spec, has_key)
            }
        },
    )
}

/// The error policy of the endpoint controller.
pub fn error_policy(endpoint: &ModelEndpoint, error: &Error, ctx: &Context) -> Requeue {
    requeue::on_error("ModelEndpoint", endpoint, error, &ctx.metrics)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use http::Method;
    use k8s_openapi::ByteString;
    use kube::api::PartialObjectMeta;
    use kube::runtime::watcher::Event;

    use super::*;
    use crate::crd::model::ModelEndpointStatus;
    use crate::fixtures::ApiServerVerifier;
    use crate::labels::{MODEL_CREDENTIALS_LABEL, MODEL_HOST_ANNOTATION};
    use crate::metrics::Metrics;
    use crate::model_endpoint::tests::endpoint;

    const KEY_VALUE: &str = "sk-never-shown";
    const STATUS_PATH: &str =
        "/apis/crucible.dev/v1alpha1/namespaces/team-a/modelendpoints/openai/status";

    fn marked_secret(key: &str) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                namespace: Some("team-a".into()),
                name: Some("key".into()),
                resource_version: Some("7".into()),
                labels: Some(BTreeMap::from([(
                    MODEL_CREDENTIALS_LABEL.into(),
                    "true".into(),
                )])),
                annotations: Some(BTreeMap::from([(
                    MODEL_HOST_ANNOTATION.into(),
                    "api.openai.com".into(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(KEY_VALUE.as_bytes().to_vec()),
            )])),
            ..Default::default()
        }
    }

    fn context(client: kube::Client, cached: Option<&Secret>) -> Arc<Context> {
        context_waking(client, cached).0
    }

    /// The context and the Evaluation work queue's receiving end.
    fn context_waking(
        client: kube::Client,
        cached: Option<&Secret>,
    ) -> (Arc<Context>, crate::runner::Triggers) {
        let (evaluations, woken) = crate::runner::channel();
        let caches = Arc::new(crate::cache::Caches::new(1));
        let ctx = Context::new(client, Arc::new(Metrics::default()), caches, evaluations, 1);
        if let Some(secret) = cached {
            let mut meta = PartialObjectMeta {
                metadata: secret.metadata.clone(),
                ..Default::default()
            };
            crate::model_endpoint::lean_secret(&mut meta);
            ctx.secrets.apply(None, Event::Apply(meta));
        }
        (Arc::new(ctx), woken)
    }

    /// Expects the status apply, answered with the endpoint as the API server would.
    async fn expect_status(api: &mut ApiServerVerifier) -> serde_json::Value {
        let answer = serde_json::to_value(endpoint("team-a", "openai", "key")).expect("json");
        let received = api.expect(Method::PATCH, STATUS_PATH, 200, answer).await;
        assert!(
            received
                .uri
                .contains("fieldManager=crucible-endpoint-status")
        );
        received.body
    }

    fn ready_of(body: &serde_json::Value) -> (String, String, String) {
        let c = &body["status"]["conditions"][0];
        assert_eq!(c["type"], "Ready");
        assert_eq!(c["observedGeneration"], 1);
        let text = body.to_string();
        assert!(
            !text.contains(KEY_VALUE) && !text.contains("c2stbmV2ZXI"),
            "{text}"
        );
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        (s(&c["status"]), s(&c["reason"]), s(&c["message"]))
    }

    /// Reconciles `team-a/openai` whose cached Secret metadata qualifies: the Secret is read
    /// (answered with `secret`) and the status written; returns the `Ready` condition.
    async fn reconcile_reading(
        secret: &Secret,
        ctx: Arc<Context>,
        api: &mut ApiServerVerifier,
    ) -> (String, String, String) {
        let e = Arc::new(endpoint("team-a", "openai", "key"));
        let reconciled = tokio::spawn(reconcile(e, ctx));
        let answer = serde_json::to_value(secret).expect("json");
        api.expect(
            Method::GET,
            "/api/v1/namespaces/team-a/secrets/key",
            200,
            answer,
        )
        .await;
        let ready = ready_of(&expect_status(api).await);
        let requeue = reconciled.await.expect("joined").expect("ok");
        assert_eq!(requeue, Requeue::AwaitChange);
        ready
    }

    #[tokio::test]
    async fn a_qualified_secret_is_read_for_its_key_and_the_endpoint_becomes_ready() {
        let (client, mut api) = ApiServerVerifier::client();
        let secret = marked_secret("apiKey");
        let ctx = context(client, Some(&secret));
        let (ready, reason, _) = reconcile_reading(&secret, ctx, &mut api).await;
        assert_eq!((ready.as_str(), reason.as_str()), ("True", "Ready"));
    }

    #[tokio::test]
    async fn an_endpoint_that_becomes_ready_sends_its_waiting_runs_back_once() {
        use crate::cache::waiters::endpoint_key;
        let (client, mut api) = ApiServerVerifier::client();
        let secret = marked_secret("apiKey");
        let (ctx, mut woken) = context_waking(client, Some(&secret));
        let run = Key::new("team-a", "agent");
        let waiters = &ctx.caches.waiters;
        waiters.wait(&endpoint_key("team-a", "openai"), &run);
        waiters.wait(&endpoint_key("team-a", "other"), &Key::new("team-a", "b"));
        reconcile_reading(&secret, ctx.clone(), &mut api).await;
        assert_eq!(woken.try_recv().ok(), Some(run));
        assert!(woken.try_recv().is_err(), "only the runs of this endpoint");
        assert_eq!(waiters.len(), 1, "the other endpoint's run still waits");
    }

    #[tokio::test]
    async fn a_secret_without_the_key_is_key_not_found() {
        let (client, mut api) = ApiServerVerifier::client();
        let secret = marked_secret("other");
        let ctx = context(client, Some(&secret));
        let (ready, reason, message) = reconcile_reading(&secret, ctx, &mut api).await;
        assert_eq!((ready.as_str(), reason.as_str()), ("False", "KeyNotFound"));
        assert!(message.contains("apiKey"), "{message}");
    }

    #[tokio::test]
    async fn an_unqualified_secret_is_never_read() {
        // The cache says unlabelled: no GET of the Secret, straight to the status.
        let (client, mut api) = ApiServerVerifier::client();
        let mut secret = marked_secret("apiKey");
        secret.metadata.labels = None;
        let ctx = context(client, Some(&secret));
        let run = tokio::spawn(reconcile(
            Arc::new(endpoint("team-a", "openai", "key")),
            ctx,
        ));
        let (ready, reason, _) = ready_of(&expect_status(&mut api).await);
        assert_eq!(
            (ready.as_str(), reason.as_str()),
            ("False", "SecretNotLabelled")
        );
        run.await.expect("joined").expect("ok");
    }

    #[tokio::test]
    async fn an_unchanged_status_is_not_written_again() {
        let (client, api) = ApiServerVerifier::client();
        let ctx = context(client, None);
        let mut e = endpoint("team-a", "openai", "key");
        let missing = match endpoint::readiness(&e.spec, None) {
            Verdict::Known(r) => r,
            Verdict::ReadKey(_) => panic!("no Secret, no key to read"),
        };
        let status: ModelEndpointStatus = endpoint::status(
            None,
            &missing,
            e.metadata.generation,
            &crate::fixtures::at(0),
        );
        e.status = Some(status);
        let run = tokio::spawn(reconcile(Arc::new(e), ctx));
        api.expect_silence().await;
        run.await.expect("joined").expect("ok");
    }
}
