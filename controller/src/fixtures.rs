//! Test fixtures: builders for Evaluations and pods, and a mock API server (tower-test) that
//! checks each request of a reconcile in order. Compiled for tests only.

use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::client::Body;
use kube::{Client, Resource};

use crate::crd::evaluation::{EvaluationSpec, EvaluationStatus, InlineSource, Source};
use crate::crd::model::{KeySecretRef, ModelApi, ModelEndpointSpec, ModelEndpointStatus};
use crate::crd::{Evaluation, ModelEndpoint};
use crate::lifecycle::{Observed, RuntimeClassCheck};

/// A fixed "now" (2026-01-01T00:00:00Z) plus `secs`.
pub fn at(secs: i64) -> Time {
    Time(jiff::Timestamp::from_second(1_767_225_600 + secs).expect("valid timestamp"))
}

impl Evaluation {
    /// `team-a/arith`, generation 1, a Python image and one inline file.
    pub fn test() -> Self {
        let mut ev = Evaluation::new(
            "arith",
            EvaluationSpec {
                image: "localhost/crucible/python:3.11".into(),
                command: Some(vec!["python3".into(), "/workspace/eval.py".into()]),
                source: Some(Source::Inline(InlineSource {
                    files: [("eval.py".to_string(), "print(1)".to_string())].into(),
                })),
                ..Default::default()
            },
        );
        ev.metadata = ObjectMeta {
            name: Some("arith".into()),
            namespace: Some("team-a".into()),
            uid: Some("11111111-2222-3333-4444-555555555555".into()),
            generation: Some(1),
            resource_version: Some("1".into()),
            ..Default::default()
        };
        ev
    }

    /// Edits the spec.
    pub fn with_spec(mut self, edit: impl FnOnce(&mut EvaluationSpec)) -> Self {
        edit(&mut self.spec);
        self
    }

    /// Sets the status.
    pub fn with_status(mut self, status: EvaluationStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the generation.
    pub fn at_generation(mut self, generation: i64) -> Self {
        self.meta_mut().generation = Some(generation);
        self
    }

    /// Makes it the child `<suite>-<name>` of suite `suite` (uid `<suite>-uid`) in `team-a`, as
    /// the suite controller creates it, with uid `uid`.
    pub fn child_of(mut self, suite: &str, name: &str, uid: &str) -> Self {
        let meta = self.meta_mut();
        meta.name = Some(format!("{suite}-{name}"));
        meta.uid = Some(uid.into());
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(crate::labels::SUITE_LABEL.into(), suite.into());
        meta.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "crucible.dev/v1alpha1".into(),
                kind: "EvaluationSuite".into(),
                name: suite.into(),
                uid: format!("{suite}-uid"),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        ]);
        self
    }

    /// Sets an annotation.
    pub fn annotated(mut self, key: &str, value: &str) -> Self {
        self.meta_mut()
            .annotations
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        self
    }
}

impl crate::config::Config {
    /// The default settings with a model gateway at `http://10.96.0.40:80`, pods labelled
    /// `app.kubernetes.io/name=crucible-gateway` in `crucible-system` on port 8080.
    pub fn with_gateway() -> Self {
        Self {
            gateway: Some(crate::config::GatewaySettings {
                base_url: "http://10.96.0.40:80".into(),
                namespace: "crucible-system".into(),
                pod_labels: [(
                    "app.kubernetes.io/name".to_string(),
                    "crucible-gateway".to_string(),
                )]
                .into(),
                port: 8080,
                token_key: crate::config::TokenKey(vec![7; 32].into()),
            }),
            ..Self::default()
        }
    }
}

impl Observed {
    /// Nothing in the cluster yet, the RuntimeClass present, admitted, at time `at(0)`.
    pub fn empty() -> Self {
        Observed {
            now: at(0),
            pods: Vec::new(),
            runtime_class: Some(RuntimeClassCheck::Present),
            logs: Default::default(),
            stop: None,
            source: None,
            head: None,
            model_endpoints: Default::default(),
            daily_budget: Default::default(),
            samples: None,
            usage: None,
        }
    }
}

/// A pod named `name` in `team-a` with pod phase `phase` and the given container statuses.
pub fn mk_pod(name: &str, phase: &str, containers: Vec<ContainerStatus>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: Some(containers),
            ..Default::default()
        }),
    }
}

/// `ev` controlled by the EvaluationSuite `suite` (uid `suite-uid`), as a suite's child.
pub fn suite_child(mut ev: Evaluation, suite: &str) -> Evaluation {
    ev.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "crucible.dev/v1alpha1".into(),
            kind: "EvaluationSuite".into(),
            name: suite.into(),
            uid: "suite-uid".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
    ]);
    ev
}

/// `pod` controlled by the Evaluation with uid `uid` (as the controller creates its pods).
pub fn owned_by(mut pod: Pod, uid: &str) -> Pod {
    pod.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "crucible.dev/v1alpha1".into(),
            kind: "Evaluation".into(),
            name: "arith".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
    ]);
    pod
}

/// A container status in the given state.
pub fn mk_container(name: &str, state: ContainerState) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        image: "localhost/crucible/python:3.11".into(),
        image_id: "sha256:abc".into(),
        state: Some(state),
        ..Default::default()
    }
}

/// A running container state.
pub fn running() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    }
}

/// A waiting container state with `reason`.
pub fn waiting(reason: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: Some(format!("{reason} happened")),
        }),
        ..Default::default()
    }
}

/// A terminated container state.
pub fn terminated(exit_code: i32, reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code,
            reason: Some(reason.into()),
            message: message.map(str::to_string),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl ModelEndpoint {
    /// `team-a/stand-in` (generation 1) serving `models` from the stand-in provider, Ready.
    pub fn ready_test(models: &[&str]) -> Self {
        let mut e = ModelEndpoint::new(
            "stand-in",
            ModelEndpointSpec {
                api: ModelApi::Openai,
                base_url: "http://10.88.0.1:8090/v1".into(),
                secret_ref: KeySecretRef {
                    name: "stand-in-key".into(),
                    key: "apiKey".into(),
                },
                models: models.iter().map(|m| m.to_string()).collect(),
                pricing: Default::default(),
            },
        );
        e.metadata.namespace = Some("team-a".into());
        e.metadata.generation = Some(1);
        e.with_ready("True", "Ready", Some(1))
    }

    /// Sets its `Ready` condition.
    pub fn with_ready(mut self, status: &str, reason: &str, generation: Option<i64>) -> Self {
        let mut conditions = Vec::new();
        crate::crd::conditions::set_condition(
            &mut conditions,
            crate::crd::conditions::READY,
            if status == "True" {
                crate::crd::conditions::Status::True
            } else {
                crate::crd::conditions::Status::False
            },
            reason,
            &format!("{reason} (test)"),
            generation,
            &at(0),
        );
        self.status = Some(ModelEndpointStatus { conditions });
        self
    }
}

type ApiServerHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A mock API server: each `expect` call answers the next request after checking it.
pub struct ApiServerVerifier(ApiServerHandle);

/// A request the mock API server received.
pub struct Received {
    /// Path and query.
    pub uri: String,
    /// JSON body (Null when empty).
    pub body: serde_json::Value,
}

impl ApiServerVerifier {
    /// A client that talks to a new verifier.
    pub fn client() -> (Client, ApiServerVerifier) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), ApiServerVerifier(handle))
    }

    /// A Lease Api in `crucible-system` whose client talks to a new verifier.
    pub fn lease_api() -> (
        kube::Api<k8s_openapi::api::coordination::v1::Lease>,
        ApiServerVerifier,
    ) {
        let (client, verifier) = Self::client();
        (kube::Api::namespaced(client, "crucible-system"), verifier)
    }

    /// Reads every further request and never answers any (a stalled API server).
    pub async fn stall(mut self) {
        let mut pending = Vec::new();
        while let Some(request) = self.0.next_request().await {
            pending.push(request);
        }
    }

    /// Expects the next request to be `method` on a path starting with `path`, answers `code`
    /// with `response`, and returns what was received.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        code: u16,
        response: serde_json::Value,
    ) -> Received {
        let what = format!("{method} {path}");
        tokio::time::timeout(
            Duration::from_secs(2),
            self.answer(method, path, code, response),
        )
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    /// Expects a run of an Evaluation in `team-a` to start: the namespace's deny-all policy
    /// applied, the workspace ConfigMap and the pod created; returns the pod's request.
    pub async fn expect_run_start(&mut self) -> Received {
        self.expect_apply(
            "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/crucible-sandbox-deny-all",
        )
        .await;
        let created = || serde_json::json!({});
        self.expect(
            Method::POST,
            "/api/v1/namespaces/team-a/configmaps",
            201,
            created(),
        )
        .await;
        self.expect(
            Method::POST,
            "/api/v1/namespaces/team-a/pods",
            201,
            created(),
        )
        .await
    }

    /// [`Self::expect`] without a deadline (for tests on paused time).
    pub async fn answer(
        &mut self,
        method: Method,
        path: &str,
        code: u16,
        response: serde_json::Value,
    ) -> Received {
        let (request, send) = self.0.next_request().await.expect("service not called");
        let uri = request.uri().to_string();
        assert_eq!(request.method(), method, "unexpected method for {uri}");
        assert!(uri.starts_with(path), "expected {method} {path}, got {uri}");
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
        };
        let text = match &response {
            serde_json::Value::String(s) => s.clone().into_bytes(),
            other => serde_json::to_vec(other).expect("json"),
        };
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(text))
                .expect("response"),
        );
        Received { uri, body }
    }

    /// Answers with the request's own body (what a server-side apply returns, near enough).
    pub async fn expect_apply(&mut self, path: &str) -> Received {
        self.expect_apply_after(path, || ()).await
    }

    /// [`Self::expect_apply`], running `meanwhile` after the request arrived and before it is
    /// answered (something that happens while a write is in flight).
    pub async fn expect_apply_after(&mut self, path: &str, meanwhile: impl FnOnce()) -> Received {
        let (request, send) = tokio::time::timeout(Duration::from_secs(2), self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for PATCH {path}"))
            .expect("service not called");
        let uri = request.uri().to_string();
        assert_eq!(
            request.method(),
            Method::PATCH,
            "unexpected method for {uri}"
        );
        assert!(uri.starts_with(path), "expected PATCH {path}, got {uri}");
        assert!(uri.contains("force=true"), "applies are forced: {uri}");
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json body");
        let mut echo = body.clone();
        if echo.get("metadata").is_none() {
            // Status applies carry no metadata; the server's answer always has it.
            echo["metadata"] = serde_json::json!({"name": "echo"});
            echo["spec"] = serde_json::json!({"image": "echo"});
        }
        let echo = serde_json::to_vec(&echo).expect("json");
        meanwhile();
        send.send_response(
            Response::builder()
                .body(Body::from(echo))
                .expect("response"),
        );
        Received { uri, body }
    }

    /// Answers every request with what `answer` returns for its method, path and query, and
    /// JSON body (`Null` when empty), until the client is dropped: a fake API server with
    /// state, for scenarios whose exact order does not matter.
    pub async fn serve(
        mut self,
        mut answer: impl FnMut(&Method, &str, &serde_json::Value) -> (u16, serde_json::Value),
    ) {
        while let Some((request, send)) = self.0.next_request().await {
            let method = request.method().clone();
            let uri = request.uri().to_string();
            let bytes = request.into_body().collect_bytes().await.expect("body");
            let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            let (code, response) = answer(&method, &uri, &body);
            let text = match &response {
                serde_json::Value::String(s) => s.clone().into_bytes(),
                other => serde_json::to_vec(other).expect("json"),
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(text))
                    .expect("response"),
            );
        }
    }

    /// Asserts that no further request arrives.
    pub async fn expect_silence(mut self) {
        let next = tokio::time::timeout(Duration::from_millis(200), self.0.next_request()).await;
        if let Ok(Some((request, _))) = next {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}

/// An API `Status` error body.
pub fn status_error(code: u16, message: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "code": code, "message": message,
        "reason": match code { 404 => "NotFound", 403 => "Forbidden", 409 => "Conflict", _ => "Invalid" }
    })
}

/// An empty pod list.
pub fn pod_list(pods: &[Pod]) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods})
}
