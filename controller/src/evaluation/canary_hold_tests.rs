//! The canary's hold, end to end through one Evaluation reconcile against the mock API server: a run of
//! an unverified RuntimeClass stays Queued with the canary's reason and nothing is created;
//! once the class is verified (which wakes the held runs) the next reconcile starts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::Method;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::canary::{Check, SandboxVerdicts, Verdict};
use crate::crd::Evaluation;
use crate::crd::evaluation::EvaluationStatus;
use crate::evaluation::Context;
use crate::evaluation::reconcile::reconcile;
use crate::fixtures::ApiServerVerifier;

const STATUS: &str = "/apis/crucible.dev/v1alpha1/namespaces/team-a/evaluations/arith/status";
const EVALUATION: &str = "/apis/crucible.dev/v1alpha1/namespaces/team-a/evaluations/arith";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events";

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// A context whose sandbox has `gvisor` pending, counting wake-ups.
fn context(wakes: &Arc<AtomicUsize>) -> (Arc<Context>, ApiServerVerifier, Arc<SandboxVerdicts>) {
    let (mut ctx, verifier) = Context::test();
    let wakes = wakes.clone();
    let sandbox = Arc::new(SandboxVerdicts::new(
        [(
            "gvisor".to_string(),
            Verdict::Pending("the sandbox canary has not reported yet".into()),
        )],
        false,
        move || {
            wakes.fetch_add(1, Ordering::SeqCst);
        },
        &now(),
    ));
    Arc::get_mut(&mut ctx).expect("unshared context").sandbox = sandbox.clone();
    (ctx, verifier, sandbox)
}

/// The first request of a reconcile of an Evaluation with a status (pods and the RuntimeClass
/// come from caches; a new Evaluation from the cache too).
async fn observe(api: &mut ApiServerVerifier, ev: &Evaluation) {
    let latest = serde_json::to_value(ev).expect("evaluation json");
    api.expect(Method::GET, EVALUATION, 200, latest).await;
}

#[tokio::test]
async fn an_unverified_sandbox_holds_the_run_and_a_verified_one_releases_it() {
    let wakes = Arc::new(AtomicUsize::new(0));
    let (ctx, mut api, sandbox) = context(&wakes);
    let failed = Verdict::Failed {
        check: Check::Kernel,
        message: "the sandbox runs kernel \"Linux version 6.1.0\", not gVisor's".into(),
    };
    sandbox.record("gvisor", failed, &now());
    let woken = wakes.load(Ordering::SeqCst);
    let ev = Evaluation::test();
    let server = tokio::spawn(async move {
        // No read (it is new), no NetworkPolicy, workspace or pod: straight to the status.
        let status = api.expect_apply(STATUS).await;
        let s = &status.body["status"];
        assert_eq!(s["phase"], "Queued", "{s}");
        assert_eq!(
            s["queue"]["reason"],
            "SandboxUnverified: gvisor: kernel: the sandbox runs kernel \"Linux version 6.1.0\", not gVisor's"
        );
        let event = api
            .expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        assert_eq!(event.body["reason"], "Queued");
        (api, status.body)
    });
    reconcile(Arc::new(ev.clone()), ctx.clone())
        .await
        .expect("reconcile succeeds");
    let (mut api, written) = server.await.expect("scenario completed");

    assert!(sandbox.record("gvisor", Verdict::Verified("every check".into()), &now()));
    assert_eq!(
        wakes.load(Ordering::SeqCst),
        woken + 1,
        "the release wakes held runs"
    );
    let status: EvaluationStatus =
        serde_json::from_value(written["status"].clone()).expect("status");
    let queued = ev.with_status(status);
    let latest = queued.clone();
    let server = tokio::spawn(async move {
        observe(&mut api, &latest).await;
        let pod = api.expect_run_start().await;
        assert_eq!(pod.body["spec"]["runtimeClassName"], "gvisor");
        let status = api.expect_apply(STATUS).await;
        assert_eq!(status.body["status"]["phase"], "Pending");
        let event = api
            .expect(Method::POST, EVENTS, 201, serde_json::json!({}))
            .await;
        assert_eq!(event.body["reason"], "Admitted");
        api.expect_silence().await;
    });
    reconcile(Arc::new(queued), ctx)
        .await
        .expect("reconcile succeeds");
    server.await.expect("scenario completed");
}
