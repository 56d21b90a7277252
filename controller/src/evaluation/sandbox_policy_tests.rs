use super::*;
use crate::admission::Decision;
use crate::config::Config;
use crate::crd::Evaluation;
use crate::crd::evaluation::Scorer;
use crate::evaluation::Context;
use crate::evaluation::plan::Child;
use crate::evaluation::plan::{Observed, plan};
use http::Method;
use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyIngressRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

const PATH: &str =
    "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/crucible-sandbox-deny-all";

fn policy_in(namespace: &str) -> NetworkPolicy {
    desired(namespace)
}

fn synced(policies: &SandboxPolicies) {
    policies.observe(None, Ok(watcher::Event::Init));
    policies.observe(None, Ok(watcher::Event::InitDone));
}

#[test]
fn the_policy_selects_every_sandbox_pod_and_allows_nothing() {
    let np = desired("team-a");
    assert!(is_deny_all(&np));
    assert!(
        np.metadata.owner_references.is_none(),
        "owned by no Evaluation"
    );
    let selector = np
        .spec
        .and_then(|s| s.pod_selector)
        .and_then(|s| s.match_labels)
        .expect("matchLabels");
    // The pods of a plain run and of a run with a scorer both carry the selected labels.
    for ev in [
        Evaluation::test(),
        Evaluation::test().with_spec(|s| {
            s.scorer = Some(Scorer {
                image: "scorer".into(),
                ..Default::default()
            })
        }),
    ] {
        let p = plan(
            &ev,
            &Observed::empty(),
            &Decision::Admit,
            &Config::default(),
        )
        .expect("plan");
        let pod = p
            .create
            .iter()
            .find_map(|c| match c {
                Child::Pod(pod) => Some(pod.clone()),
                _ => None,
            })
            .expect("pod");
        let labels = pod.metadata.labels.expect("labels");
        for (key, value) in &selector {
            assert_eq!(labels.get(key), Some(value), "pod lacks {key}={value}");
        }
    }
}

#[test]
fn anything_but_exactly_deny_all_is_not_deny_all() {
    type Edit = Box<dyn Fn(&mut NetworkPolicy)>;
    let edits: Vec<(&str, Edit)> = vec![
        (
            "a narrower selector",
            Box::new(|np| {
                if let Some(labels) = np
                    .spec
                    .as_mut()
                    .and_then(|s| s.pod_selector.as_mut())
                    .and_then(|s| s.match_labels.as_mut())
                {
                    labels.insert("team".into(), "x".into());
                }
            }),
        ),
        (
            "a selector expression",
            Box::new(|np| {
                if let Some(selector) = np.spec.as_mut().and_then(|s| s.pod_selector.as_mut()) {
                    selector.match_expressions = Some(vec![LabelSelectorRequirement {
                        key: "x".into(),
                        operator: "Exists".into(),
                        values: None,
                    }]);
                }
            }),
        ),
        (
            "ingress only",
            Box::new(|np| {
                if let Some(spec) = np.spec.as_mut() {
                    spec.policy_types = Some(vec!["Ingress".into()]);
                }
            }),
        ),
        (
            "an ingress rule",
            Box::new(|np| {
                if let Some(spec) = np.spec.as_mut() {
                    spec.ingress = Some(vec![NetworkPolicyIngressRule::default()]);
                }
            }),
        ),
        (
            "an egress rule",
            Box::new(|np| {
                if let Some(spec) = np.spec.as_mut() {
                    spec.egress = Some(vec![NetworkPolicyEgressRule::default()]);
                }
            }),
        ),
        (
            "another name",
            Box::new(|np| np.metadata.name = Some("other".into())),
        ),
        ("no spec", Box::new(|np| np.spec = None)),
    ];
    for (what, edit) in edits {
        let mut np = desired("team-a");
        edit(&mut np);
        assert!(!is_deny_all(&np), "{what}");
    }
    // As the API server returns it: empty rule lists omitted, types in any order.
    let mut served = desired("team-a");
    if let Some(spec) = served.spec.as_mut() {
        spec.ingress = None;
        spec.egress = None;
        spec.policy_types = Some(vec!["Egress".into(), "Ingress".into()]);
    }
    assert!(is_deny_all(&served));
}

#[tokio::test]
async fn without_a_synced_watch_every_pod_applies_the_policy() {
    let (ctx, mut api) = Context::test();
    let policies = SandboxPolicies::default();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let apply = api.expect_apply(PATH).await;
            assert!(apply.uri.contains("fieldManager=crucible-controller"));
            assert_eq!(
                apply.body["spec"]["podSelector"]["matchLabels"]["crucible.dev/managed"],
                "true"
            );
        }
        api.expect_silence().await;
    });
    for _ in 0..2 {
        policies
            .ensure(&ctx.client, "team-a")
            .await
            .expect("ensure");
    }
    assert!(!policies.is_known("team-a"));
    server.await.expect("scenario");
}

#[tokio::test]
async fn with_a_synced_watch_it_is_applied_once_and_again_after_a_delete_or_change() {
    let (ctx, mut api) = Context::test();
    let policies = Arc::new(SandboxPolicies::default());
    synced(&policies);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let server = tokio::spawn(async move {
        let mut rx = rx;
        // A burst of runs: one apply.
        api.expect_apply(PATH).await;
        assert_eq!(rx.recv().await, Some("burst done"));
        // Deleted: applied again.
        api.expect_apply(PATH).await;
        assert_eq!(rx.recv().await, Some("changed"));
        // Changed to allow ingress: applied again.
        api.expect_apply(PATH).await;
        api.expect_silence().await;
    });
    let burst: Vec<_> = (0..5)
        .map(|_| {
            let (policies, client) = (policies.clone(), ctx.client.clone());
            tokio::spawn(async move { policies.ensure(&client, "team-a").await })
        })
        .collect();
    for run in burst {
        run.await.expect("task").expect("ensure");
    }
    assert!(policies.is_known("team-a"));
    let _ = tx.send("burst done");
    policies.observe(None, Ok(watcher::Event::Delete(policy_in("team-a"))));
    assert!(!policies.is_known("team-a"));
    policies
        .ensure(&ctx.client, "team-a")
        .await
        .expect("ensure");
    policies
        .ensure(&ctx.client, "team-a")
        .await
        .expect("ensure");
    let mut opened = policy_in("team-a");
    if let Some(spec) = opened.spec.as_mut() {
        spec.ingress = Some(vec![NetworkPolicyIngressRule::default()]);
    }
    policies.observe(None, Ok(watcher::Event::Apply(opened)));
    assert!(!policies.is_known("team-a"));
    let _ = tx.send("changed");
    policies
        .ensure(&ctx.client, "team-a")
        .await
        .expect("ensure");
    server.await.expect("scenario");
}

#[test]
fn the_watch_decides_what_is_known() {
    let policies = SandboxPolicies::default();
    // Listed before anything was applied: known without a write.
    policies.observe(None, Ok(watcher::Event::Init));
    policies.observe(None, Ok(watcher::Event::InitApply(policy_in("a"))));
    assert!(!policies.is_known("a"), "not before the list is complete");
    policies.observe(None, Ok(watcher::Event::InitDone));
    assert!(policies.is_known("a"));
    assert!(!policies.is_known("b"));
    // Some other policy carrying the label is not the sandbox policy.
    let mut other = policy_in("b");
    other.metadata.name = Some("other".into());
    policies.observe(None, Ok(watcher::Event::Apply(other)));
    assert!(!policies.is_known("b"));
    policies.observe(None, Ok(watcher::Event::Apply(policy_in("b"))));
    assert!(policies.is_known("b"));
    // A re-list that no longer shows "a" forgets it.
    policies.observe(None, Ok(watcher::Event::Init));
    assert!(
        !policies.is_known("b"),
        "nothing is trusted during a re-list"
    );
    policies.observe(None, Ok(watcher::Event::InitApply(policy_in("b"))));
    policies.observe(None, Ok(watcher::Event::InitDone));
    assert!(!policies.is_known("a"));
    assert!(policies.is_known("b"));
    // A watch error: nothing is trusted until the watch has listed again.
    policies.observe(None, Err(watcher::Error::NoResourceVersion));
    assert!(!policies.is_known("b"));
}

#[test]
fn a_namespace_watch_only_vouches_for_its_namespace() {
    let policies = SandboxPolicies::default();
    policies.observe(Some("a"), Ok(watcher::Event::Init));
    policies.observe(Some("a"), Ok(watcher::Event::InitApply(policy_in("a"))));
    policies.observe(Some("a"), Ok(watcher::Event::InitDone));
    assert!(policies.is_known("a"));
    policies.observe(Some("b"), Ok(watcher::Event::Init));
    assert!(
        policies.is_known("a"),
        "another namespace's re-list changes nothing here"
    );
    policies.observe(Some("a"), Err(watcher::Error::NoResourceVersion));
    assert!(!policies.is_known("a"));
}

#[tokio::test]
async fn a_policy_that_stays_open_refuses_the_pod() {
    let (ctx, mut api) = Context::test();
    let policies = SandboxPolicies::default();
    synced(&policies);
    let server = tokio::spawn(async move {
        let mut opened = serde_json::to_value(policy_in("team-a")).expect("json");
        opened["spec"]["ingress"] = serde_json::json!([{}]);
        api.expect(Method::PATCH, PATH, 200, opened).await;
        api.expect_silence().await;
    });
    let outcome = policies.ensure(&ctx.client, "team-a").await;
    assert!(
        matches!(outcome, Err(PolicyError::NotDenyAll)),
        "{outcome:?}"
    );
    assert!(!policies.is_known("team-a"));
    server.await.expect("scenario");
}

#[tokio::test]
async fn a_delete_seen_while_applying_is_not_overwritten() {
    let (ctx, mut api) = Context::test();
    let policies = Arc::new(SandboxPolicies::default());
    synced(&policies);
    let watcher_side = policies.clone();
    let server = tokio::spawn(async move {
        // While the apply is in flight, the watch reports a delete.
        api.expect_apply_after(PATH, || {
            watcher_side.observe(None, Ok(watcher::Event::Delete(policy_in("team-a"))))
        })
        .await;
        api.expect_silence().await;
    });
    policies
        .ensure(&ctx.client, "team-a")
        .await
        .expect("ensure");
    assert!(
        !policies.is_known("team-a"),
        "the apply raced a delete: the next pod must apply it again"
    );
    server.await.expect("scenario");
}
