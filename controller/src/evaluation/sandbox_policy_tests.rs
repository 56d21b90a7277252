use super::*;
use crate::admission::Decision;
use crate::config::Config;
use crate::crd::Evaluation;
use crate::crd::evaluation::Scorer;
use crate::evaluation::Context;
use crate::lifecycle::Child;
use crate::lifecycle::{Observed, plan};
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

/// An Allowlist run's plan and the labels of its pod.
fn allowlist_plan() -> (Evaluation, crate::lifecycle::Plan, BTreeMap<String, String>) {
    use crate::crd::evaluation::{EgressRule, NetworkMode, Sandbox};
    let ev = Evaluation::test().with_spec(|s| {
        s.sandbox = Some(Sandbox {
            network: Some(NetworkMode::Allowlist),
            egress: Some(vec![EgressRule {
                cidr: "203.0.113.0/24".into(),
                ports: Some(vec![443]),
            }]),
            ..Default::default()
        })
    });
    let p = plan(
        &ev,
        &Observed::empty(),
        &Decision::Admit,
        &Config::default(),
    )
    .expect("plan");
    let labels = p
        .create
        .iter()
        .find_map(|c| match c {
            Child::Pod(pod) => pod.metadata.labels.clone(),
            _ => None,
        })
        .expect("a pod with labels");
    (ev, p, labels)
}

fn egress_policy(name: &str, selector: LabelSelector, types: Option<Vec<&str>>) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector),
            policy_types: types.map(|t| t.into_iter().map(str::to_string).collect()),
            egress: Some(vec![NetworkPolicyEgressRule::default()]),
            ..Default::default()
        }),
    }
}

#[test]
fn policies_that_give_sandbox_pods_egress_widen_an_allowlist() {
    let (_, _, labels) = allowlist_plan();
    let everything = LabelSelector::default();
    let managed = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: MANAGED_LABEL.into(),
            operator: "Exists".into(),
            values: None,
        }]),
        ..Default::default()
    };
    let web = LabelSelector {
        match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
        ..Default::default()
    };
    let not_managed = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: MANAGED_LABEL.into(),
            operator: "DoesNotExist".into(),
            values: None,
        }]),
        ..Default::default()
    };
    let mut ingress_only = egress_policy("ingress-only", everything.clone(), Some(vec!["Ingress"]));
    ingress_only.spec.as_mut().expect("spec").ingress =
        Some(vec![NetworkPolicyIngressRule::default()]);
    let policies = [
        desired("team-a"),
        egress_policy("own", everything.clone(), Some(vec!["Egress"])),
        egress_policy("allow-all", everything.clone(), None),
        egress_policy("sandboxes", managed, Some(vec!["Ingress", "Egress"])),
        egress_policy("web", web, Some(vec!["Egress"])),
        egress_policy("apps", not_managed, Some(vec!["Egress"])),
        ingress_only,
    ];
    assert_eq!(
        widening(&policies, &labels, "own"),
        ["allow-all", "sandboxes"]
    );
}

/// Another policy of the namespace gives sandbox pods egress: the Allowlist run does not
/// start (no policy, no pod), and waits with the policy named, to be tried again.
#[tokio::test]
async fn an_allowlist_run_waits_while_another_policy_widens_it() {
    let (ev, p, _) = allowlist_plan();
    let (ctx, mut api) = Context::test();
    let server = tokio::spawn(async move {
        let list = serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicyList", "metadata": {},
            "items": [egress_policy("allow-all-egress", LabelSelector::default(), None)],
        });
        let listed = api
            .expect(
                Method::GET,
                "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies",
                200,
                list,
            )
            .await;
        assert!(listed.uri.contains("limit=500"), "{}", listed.uri);
        api.expect_silence().await;
    });
    let refusal = crate::evaluation::apply::create(&ev, &p, &ctx)
        .await
        .expect("no error")
        .expect("refused");
    server.await.expect("scenario");
    assert_eq!(refusal.reason, "EgressWidened");
    assert!(refusal.retry, "it starts once the policy is gone");
    assert!(
        refusal.message.contains("allow-all-egress"),
        "{}",
        refusal.message
    );
}
