//! GPUs count in admission: an Evaluation's `resources.gpu` is its GPU request, an
//! EvaluationQuota's `hard.gpu` and the controller's `--max-gpu` bound the total, and a run
//! that does not fit waits with the figure named. Through the public API only, the way the
//! controller composes it (`admission::candidate` → `Ledger::decide`).

use clap::Parser;
use crucible::admission::candidate::{candidate, namespace_limits};
use crucible::admission::{Decision, Ledger};
use crucible::cli::{Cli, Command};
use crucible::config::Config;
use crucible::crd::{Evaluation, EvaluationQuota};

/// An Evaluation in namespace `gpu` asking for `gpus` GPUs (and 100m CPU, so CPU never binds).
fn gpu_run(name: &str, gpus: i32, created: &str) -> Evaluation {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "crucible.dev/v1alpha1", "kind": "Evaluation",
        "metadata": {"name": name, "namespace": "gpu", "uid": format!("uid-{name}"),
                     "creationTimestamp": created},
        "spec": {"image": "localhost/crucible/python:3.11",
                 "resources": {"cpu": "100m", "gpu": gpus}}
    }))
    .expect("evaluation manifest")
}

fn quota(gpus: i32) -> EvaluationQuota {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "crucible.dev/v1alpha1", "kind": "EvaluationQuota",
        "metadata": {"name": "q", "namespace": "gpu"},
        "spec": {"maxRunning": 10, "hard": {"gpu": gpus}}
    }))
    .expect("quota manifest")
}

fn config(args: &[&str]) -> Config {
    let cli = Cli::parse_from(["crucible", "controller"].iter().chain(args));
    match cli.command {
        Command::Controller(args) => args.into_parts().0,
        other => panic!("parsed {other:?} instead of the controller"),
    }
}

fn decide(
    ledger: &mut Ledger,
    ev: &Evaluation,
    quota: &EvaluationQuota,
    config: &Config,
) -> Decision {
    let run = format!("{}-run", ev.metadata.name.as_deref().unwrap_or_default());
    let c = candidate(ev, &run, config).expect("namespace and uid");
    ledger.decide(
        &c,
        &namespace_limits(&[quota], config),
        &config.global_limits,
        None,
    )
}

fn reason(d: Decision) -> String {
    match d {
        Decision::Wait { reason, .. } | Decision::Refuse { reason } => reason,
        Decision::Admit => panic!("admitted, expected to wait or be refused"),
    }
}

#[test]
fn namespace_quota_counts_gpus() {
    let config = Config::default();
    let (mut ledger, q) = (Ledger::default(), quota(3));
    let a = gpu_run("a", 2, "2026-01-01T00:00:00Z");
    let b = gpu_run("b", 2, "2026-01-01T00:00:01Z");
    let c = gpu_run("c", 1, "2026-01-01T00:00:02Z");
    assert_eq!(decide(&mut ledger, &a, &q, &config), Decision::Admit);
    // 2 + 2 > 3: b waits, naming the GPU figure.
    assert_eq!(
        reason(decide(&mut ledger, &b, &q, &config)),
        "QuotaExceeded: gpu: requests 2, 2 of 3 in use"
    );
    assert_eq!(ledger.usage(Some("gpu")).gpu, 2.0);
    // Once a's GPUs are free, b (older than c) goes first: 2 of 3.
    assert!(ledger.release("uid-a").is_some());
    assert_eq!(decide(&mut ledger, &b, &q, &config), Decision::Admit);
    assert_eq!(decide(&mut ledger, &c, &q, &config), Decision::Admit);
    assert_eq!(ledger.usage(Some("gpu")).gpu, 3.0);

    // A request larger than the whole quota says so instead of waiting for nothing.
    let huge = gpu_run("huge", 4, "2026-01-01T00:00:03Z");
    assert_eq!(
        reason(decide(&mut Ledger::default(), &huge, &q, &config)),
        "QuotaExceeded: cannot fit under the current quota, even with nothing else running \
         (gpu: requests 4, 0 of 3 in use)"
    );
}

#[test]
fn the_controller_wide_gpu_cap_counts_every_namespace() {
    let config = config(&["--max-gpu", "2"]);
    assert_eq!(config.global_limits.gpu, Some(2.0));
    let (mut ledger, q) = (Ledger::default(), quota(8));
    let a = gpu_run("a", 2, "2026-01-01T00:00:00Z");
    let b = gpu_run("b", 1, "2026-01-01T00:00:01Z");
    assert_eq!(decide(&mut ledger, &a, &q, &config), Decision::Admit);
    assert_eq!(
        reason(decide(&mut ledger, &b, &q, &config)),
        "ControllerLimit: gpu: requests 1, 2 of 2 in use"
    );
    assert!(ledger.release("uid-a").is_some());
    assert_eq!(decide(&mut ledger, &b, &q, &config), Decision::Admit);

    // More GPUs than the whole controller may use: refused, not queued for ever.
    let huge = gpu_run("huge", 3, "2026-01-01T00:00:02Z");
    let refused = decide(&mut ledger, &huge, &q, &config);
    assert!(matches!(refused, Decision::Refuse { .. }), "{refused:?}");
    assert_eq!(
        reason(refused),
        "the request alone exceeds the controller-wide limit (gpu: requests 3, 0 of 2 in use)"
    );
}
