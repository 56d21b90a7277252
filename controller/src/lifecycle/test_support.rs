//! Helpers of the planner tests.

use super::*;
use crate::admission::Decision;
use crate::crd::conditions::find;
use crate::crd::evaluation::Source;
use crate::fixtures::{mk_container, mk_pod, terminated};
use crate::run::fetched::FetchedSource;
use crate::run::pod::EVALUATION_CONTAINER;
use crate::run::results::LogCapture;
use crate::run::results::LogScanner;
use std::collections::BTreeMap;

/// The outcome of a pod that reported score 1, passing at threshold 0.5.
pub(super) fn passed_outcome() -> crate::run::phase::Outcome {
    crate::run::phase::scored(
        crate::crd::evaluation::EvaluationResult {
            score: 1.0,
            passed: true,
            ..Default::default()
        },
        Some("sha256:r".into()),
        0.5,
        "",
    )
}

pub(super) fn run(ev: &Evaluation, obs: &Observed) -> Plan {
    run_with(ev, obs, &Decision::Admit)
}

pub(super) fn run_with(ev: &Evaluation, obs: &Observed, admission: &Decision) -> Plan {
    plan(ev, obs, admission, &Config::default()).expect("plan")
}

pub(super) fn wait(position: usize, reason: &str) -> Decision {
    Decision::Wait {
        position,
        reason: reason.into(),
    }
}

/// The Evaluation as it reads after the plan's status was written.
pub(super) fn after(ev: &Evaluation, plan: &Plan) -> Evaluation {
    ev.clone().with_status(plan.status.clone())
}

pub(super) fn condition(plan: &Plan, type_: &str) -> (String, String) {
    let c = find(&plan.status.conditions, type_).unwrap_or_else(|| panic!("{type_} missing"));
    (c.status.clone(), c.reason.clone())
}

pub(super) fn pod_of(plan: &Plan) -> &Pod {
    plan.create
        .iter()
        .find_map(|c| match c {
            Child::Pod(p) => Some(p.as_ref()),
            _ => None,
        })
        .expect("a pod is created")
}

pub(super) fn with_pods(pods: Vec<Pod>) -> Observed {
    Observed {
        pods,
        ..Observed::empty()
    }
}

pub(super) fn log(text: &str) -> BTreeMap<String, LogCapture> {
    let mut s = LogScanner::default();
    s.feed(text.as_bytes());
    BTreeMap::from([(EVALUATION_CONTAINER.to_string(), s.finish())])
}

/// An Evaluation whose first attempt has been started, and the name of its pod.
pub(super) fn started() -> (Evaluation, String) {
    let ev = Evaluation::test();
    let p = run(&ev, &Observed::empty());
    let name = p.status.pod_name.clone().expect("pod name");
    (after(&ev, &p), name)
}

pub(super) fn succeeded_pod(name: &str, message: &str) -> Pod {
    mk_pod(
        name,
        "Succeeded",
        vec![mk_container(
            "evaluation",
            terminated(0, "Completed", Some(message)),
        )],
    )
}

pub(super) fn git_ev(follow: bool) -> Evaluation {
    Evaluation::test().with_spec(|s| {
        s.source = Some(Source::Git(crate::crd::evaluation::GitSource {
            url: "file:///repos/evals".into(),
            r#ref: Some("main".into()),
            path: Some("arith".into()),
            follow: Some(follow),
            ..Default::default()
        }))
    })
}

pub(super) fn fetched(commit: &str) -> Option<Result<FetchedSource, SourceProblem>> {
    Some(Ok(FetchedSource {
        repo: "file:///repos/evals".into(),
        commit: commit.into(),
        files: BTreeMap::from([("eval.py".to_string(), b"print(1)".to_vec())]),
    }))
}
