//! The controller's system namespace (emergency-stop switch, leader Lease, canary pods), made
//! sure of before any part that needs it starts: nobody else is relied on to create it. Without
//! it the canary could never verify a class and every run would stay held.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// Pod Security admission's label for the profile it enforces in a namespace.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// How long one API call of the check may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// What the check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// It exists.
    Exists,
    /// It did not exist; the controller created it.
    Created,
    /// The controller may not read namespaces (the chart grants `get` on its own only when
    /// asked to); the parts that use it report their own errors.
    Unknown,
}

/// Makes sure `name` exists, creating it when it does not.
///
/// # Errors
/// A sentence for the operator's log when it does not exist and cannot be created, or the
/// API server does not answer.
pub async fn ensure(client: &Client, name: &str) -> Result<Found, String> {
    let api: Api<Namespace> = Api::all(client.clone());
    let remedy = format!("create it (kubectl create namespace {name}) or pass --system-namespace");
    match bounded(api.get_opt(name)).await {
        Ok(Some(_)) => return Ok(Found::Exists),
        Ok(None) => {}
        Err(Failure::Api(e)) if is_status(&e, 403) => return Ok(Found::Unknown),
        Err(e) => return Err(format!("cannot read the system namespace {name}: {e}")),
    }
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            // The canary's pods are evaluation pods, which the `restricted` profile admits;
            // nothing less strict needs to run here.
            labels: Some(
                [
                    ("app.kubernetes.io/part-of".into(), "crucible".into()),
                    (POD_SECURITY_ENFORCE.into(), "restricted".into()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    match bounded(api.create(&PostParams::default(), &namespace)).await {
        Ok(_) => Ok(Found::Created),
        // Created meanwhile by someone else: what was wanted.
        Err(Failure::Api(e)) if is_status(&e, 409) => Ok(Found::Exists),
        Err(e) => Err(format!(
            "the system namespace {name} does not exist and cannot be created ({e}); {remedy}"
        )),
    }
}

/// An API error or a call that did not answer in time.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Api(kube::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

async fn bounded<T>(call: impl Future<Output = kube::Result<T>>) -> Result<T, Failure> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(answer) => answer.map_err(Failure::Api),
        Err(_) => Err(Failure::Timeout(CALL_TIMEOUT)),
    }
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::fixtures::{ApiServerVerifier, status_error};

    fn api() -> (Client, ApiServerVerifier) {
        ApiServerVerifier::client()
    }

    const PATH: &str = "/api/v1/namespaces";

    /// The API server answers the GET: no such namespace.
    async fn missing(server: &mut ApiServerVerifier) {
        server
            .expect(
                Method::GET,
                &format!("{PATH}/crucible-system"),
                404,
                status_error(404, "namespaces \"crucible-system\" not found"),
            )
            .await;
    }

    #[tokio::test]
    async fn an_existing_namespace_is_left_alone() {
        let (client, mut server) = api();
        let check = tokio::spawn(async move { ensure(&client, "crucible-system").await });
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "crucible-system"}});
        server
            .expect(Method::GET, &format!("{PATH}/crucible-system"), 200, ns)
            .await;
        assert_eq!(check.await.expect("task"), Ok(Found::Exists));
        server.expect_silence().await;
    }

    #[tokio::test]
    async fn a_missing_namespace_is_created() {
        let (client, mut server) = api();
        let check = tokio::spawn(async move { ensure(&client, "crucible-system").await });
        missing(&mut server).await;
        let created = server
            .expect(Method::POST, PATH, 201, serde_json::json!({}))
            .await;
        assert_eq!(created.body["metadata"]["name"], "crucible-system");
        assert_eq!(
            created.body["metadata"]["labels"][POD_SECURITY_ENFORCE],
            "restricted"
        );
        assert_eq!(check.await.expect("task"), Ok(Found::Created));
    }

    #[tokio::test]
    async fn a_namespace_that_cannot_be_created_is_a_clear_error() {
        let (client, mut server) = api();
        let check = tokio::spawn(async move { ensure(&client, "crucible-system").await });
        missing(&mut server).await;
        server
            .expect(
                Method::POST,
                PATH,
                403,
                status_error(403, "namespaces is forbidden"),
            )
            .await;
        let error = check.await.expect("task").expect_err("refused");
        assert!(
            error.contains("does not exist and cannot be created")
                && error.contains("kubectl create namespace crucible-system"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_namespace_created_meanwhile_is_fine() {
        let (client, mut server) = api();
        let check = tokio::spawn(async move { ensure(&client, "crucible-system").await });
        missing(&mut server).await;
        server
            .expect(Method::POST, PATH, 409, status_error(409, "already exists"))
            .await;
        assert_eq!(check.await.expect("task"), Ok(Found::Exists));
    }

    #[tokio::test]
    async fn no_permission_to_read_namespaces_is_not_fatal() {
        let (client, mut server) = api();
        let check = tokio::spawn(async move { ensure(&client, "crucible-system").await });
        server
            .expect(
                Method::GET,
                &format!("{PATH}/crucible-system"),
                403,
                status_error(403, "forbidden"),
            )
            .await;
        assert_eq!(check.await.expect("task"), Ok(Found::Unknown));
        server.expect_silence().await;
    }
}
