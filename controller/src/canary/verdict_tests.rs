use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
};
use serde_json::{Value, json};

use super::*;

const LISTENER: &str = "10.88.0.1:40001";
const UNLISTED: &str = "10.88.0.1:40002";
const NONCE: &str = "0123456789abcdef";
const GVISOR: &str = "Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016";
const HOST: &str = "Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)";

fn expect(network: NetworkMode) -> Expectation<'static> {
    Expectation {
        network,
        listener: LISTENER,
        unlisted: UNLISTED,
        gateway: None,
        nonce: NONCE,
        host_kernel: Some(HOST),
    }
}

/// What a healthy sandbox of `network` reports.
fn good(network: NetworkMode) -> Value {
    let refused = json!({"connected": false, "error": "OSError: errno 113", "read": ""});
    let connect = match network {
        NetworkMode::None => json!({ LISTENER: refused }),
        NetworkMode::Allowlist => json!({
            LISTENER: {"connected": true, "error": null, "read": format!("{GREETING} {NONCE}\n")},
            UNLISTED: refused,
        }),
    };
    let interfaces = match network {
        NetworkMode::None => json!(["lo"]),
        NetworkMode::Allowlist => json!(["lo", "eth0"]),
    };
    json!({
        "kernel": format!("{GVISOR}\n"),
        "interfaces": interfaces,
        "uid": 65534,
        "gid": 65534,
        "token": false,
        "rootReadOnly": true,
        "capEff": "0000000000000000",
        "connect": connect,
    })
}

fn log_of(report: &Value) -> String {
    format!("some noise\n{REPORT_PREFIX}{report}\n")
}

fn judge_report(network: NetworkMode, report: &Value) -> Verdict {
    judge(
        &expect(network),
        &Observation::Ran {
            log: log_of(report),
            exit_code: Some(0),
        },
    )
}

/// The check named by a failed verdict, and its message.
fn failure(v: Verdict) -> (Check, String) {
    match v {
        Verdict::Failed { check, message } => (check, message),
        other => panic!("expected a failed verdict, got {other:?}"),
    }
}

#[test]
fn a_healthy_sandbox_is_verified_for_each_network_mode() {
    let none = judge_report(NetworkMode::None, &good(NetworkMode::None));
    let Verdict::Verified(proven) = none else {
        panic!("{none:?}")
    };
    assert!(
        proven.contains("only lo") && proven.contains(LISTENER),
        "{proven}"
    );
    let allowlist = judge_report(NetworkMode::Allowlist, &good(NetworkMode::Allowlist));
    let Verdict::Verified(proven) = allowlist else {
        panic!("{allowlist:?}")
    };
    assert!(proven.contains(UNLISTED), "{proven}");
}

#[test]
fn every_check_of_a_sandbox_without_network_can_fail() {
    let cases: [(Check, &str, Value); 8] = [
        (Check::Kernel, "kernel", json!(HOST)),
        (Check::Interfaces, "interfaces", json!(["lo", "eth0"])),
        (
            Check::Egress,
            "connect",
            json!({ LISTENER: {"connected": true, "read": "x"} }),
        ),
        (Check::ServiceAccountToken, "token", json!(true)),
        (Check::Uid, "uid", json!(0)),
        (Check::Uid, "gid", json!(0)),
        (Check::ReadOnlyRoot, "rootReadOnly", json!(false)),
        (Check::Capabilities, "capEff", json!("00000000a80425fb")),
    ];
    for (check, field, value) in cases {
        let mut report = good(NetworkMode::None);
        report[field] = value;
        let (failed, message) = failure(judge_report(NetworkMode::None, &report));
        assert_eq!(failed, check, "{field}: {message}");
        assert!(!message.is_empty());
    }
}

#[test]
fn every_egress_check_of_an_allowlist_sandbox_can_fail() {
    let refused = json!({"connected": false, "error": "TimeoutError: timed out"});
    let cases: [(Check, Value, &str); 4] = [
        (
            Check::EgressAllowed,
            json!({ LISTENER: refused, UNLISTED: refused }),
            "timed out",
        ),
        (
            Check::EgressAllowed,
            json!({ LISTENER: {"connected": true, "read": "HTTP/1.1 400"}, UNLISTED: refused }),
            "not this controller's greeting",
        ),
        (
            Check::EgressBlocked,
            json!({
                LISTENER: {"connected": true, "read": format!("{GREETING} {NONCE}")},
                UNLISTED: {"connected": true, "read": format!("{GREETING} {NONCE}")},
            }),
            "not enforced",
        ),
        (Check::Output, json!({}), "did not report"),
    ];
    for (check, connect, says) in cases {
        let mut report = good(NetworkMode::Allowlist);
        report["connect"] = connect;
        let (failed, message) = failure(judge_report(NetworkMode::Allowlist, &report));
        assert_eq!(failed, check, "{message}");
        assert!(message.contains(says), "{message}");
    }
}

#[test]
fn the_first_failed_check_names_the_verdict() {
    let mut report = good(NetworkMode::None);
    report["uid"] = json!(0);
    report["token"] = json!(true);
    report["interfaces"] = json!(["lo", "eth0"]);
    let (check, message) = failure(judge_report(NetworkMode::None, &report));
    assert_eq!(check, Check::Interfaces, "{message}");
    assert!(message.contains("eth0"), "{message}");
}

#[test]
fn the_controllers_own_kernel_is_not_gvisor_even_with_the_stamp() {
    let mut e = expect(NetworkMode::None);
    e.host_kernel = Some(GVISOR);
    let v = judge(
        &e,
        &Observation::Ran {
            log: log_of(&good(NetworkMode::None)),
            exit_code: Some(0),
        },
    );
    let (check, message) = failure(v);
    assert_eq!(check, Check::Kernel);
    assert!(message.contains("controller's own kernel"), "{message}");
}

#[test]
fn garbage_output_is_a_failed_output_check() {
    let missing_field = {
        let mut r = good(NetworkMode::None);
        r.as_object_mut().map(|o| o.remove("capEff"));
        format!("{REPORT_PREFIX}{r}")
    };
    let cases = [
        (
            "Traceback (most recent call last):\n  boom".to_string(),
            "boom",
        ),
        (format!("{REPORT_PREFIX}{{not json"), "not valid"),
        (missing_field, "capEff"),
        (String::new(), "no `CRUCIBLE_CANARY` line"),
        (format!("{REPORT_PREFIX}[1, 2]"), "not valid"),
    ];
    for (log, says) in cases {
        let v = judge(
            &expect(NetworkMode::None),
            &Observation::Ran {
                log,
                exit_code: Some(1),
            },
        );
        let (check, message) = failure(v);
        assert_eq!(check, Check::Output, "{message}");
        assert!(message.contains(says), "{message}");
        assert!(message.contains("exit code 1"), "{message}");
    }
}

#[test]
fn a_huge_log_is_quoted_briefly() {
    let log = "é".repeat(10_000);
    let (_, message) = failure(judge(
        &expect(NetworkMode::None),
        &Observation::Ran {
            log,
            exit_code: None,
        },
    ));
    assert!(message.len() < 400, "{}", message.len());
}

#[test]
fn a_run_that_could_not_start_fails_its_step() {
    for (step, check) in [
        (Stage::RuntimeClass, Check::RuntimeClass),
        (Stage::Listener, Check::Listener),
        (Stage::Pod, Check::Pod),
    ] {
        let v = judge(
            &expect(NetworkMode::None),
            &Observation::NotRun {
                step,
                message: "the canary pod cannot be scheduled: 0/1 nodes".into(),
            },
        );
        assert_eq!(
            v,
            Verdict::Failed {
                check,
                message: "the canary pod cannot be scheduled: 0/1 nodes".into()
            }
        );
    }
}

#[test]
fn check_names_are_distinct() {
    let names: std::collections::BTreeSet<&str> = Check::ALL.iter().map(|c| c.name()).collect();
    let reasons: std::collections::BTreeSet<&str> = Check::ALL.iter().map(|c| c.reason()).collect();
    assert_eq!(
        (names.len(), reasons.len()),
        (Check::ALL.len(), Check::ALL.len())
    );
}

fn pod_with(status: PodStatus) -> Pod {
    Pod {
        status: Some(status),
        ..Default::default()
    }
}

fn waiting(reason: &str) -> PodStatus {
    PodStatus {
        phase: Some("Pending".into()),
        container_statuses: Some(vec![ContainerStatus {
            name: "evaluation".into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some("pull access denied".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

#[test]
fn pods_that_can_never_run_are_recognised() {
    let unschedulable = pod_with(PodStatus {
        phase: Some("Pending".into()),
        conditions: Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/1 nodes are available: 1 Insufficient cpu.".into()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    assert_eq!(
        pod_problem(&unschedulable, false),
        None,
        "a node may still come (a node pool scaling up)"
    );
    let Some(PodProblem::Fatal(problem)) = pod_problem(&unschedulable, true) else {
        panic!("unschedulable past the grace is fatal");
    };
    assert!(problem.contains("Insufficient cpu"), "{problem}");
    let Some(PodProblem::Transient(pull)) =
        pod_problem(&pod_with(waiting("ImagePullBackOff")), true)
    else {
        panic!("an image pull failure is a registry hiccup");
    };
    assert!(
        pull.contains("ImagePullBackOff: pull access denied"),
        "{pull}"
    );
    assert!(matches!(
        pod_problem(&pod_with(waiting("CreateContainerError")), false),
        Some(PodProblem::Fatal(_))
    ));
    let creating = pod_with(waiting("ContainerCreating"));
    assert_eq!(pod_problem(&creating, true), None);
    assert!(!pod_finished(&creating));
    assert_eq!(
        describe(&creating),
        "phase Pending, container evaluation waiting (ContainerCreating)"
    );
    assert_eq!(pod_problem(&Pod::default(), true), None);
    let done = pod_with(PodStatus {
        phase: Some("Failed".into()),
        ..Default::default()
    });
    assert!(pod_finished(&done));
}

/// Runs that prove nothing keep the last verdict: under `--allow-unsandboxed` a class that
/// failed the kernel check is never turned into a "missing" one (which would lift its hold);
/// a verified class survives a few hiccups in a row, then is pending (held), never failed.
#[test]
fn inconclusive_runs_keep_the_last_verdict() {
    let kernel = Verdict::failed(Check::Kernel, "the sandbox runs the host's kernel");
    let verified = Verdict::Verified("gVisor's kernel".into());
    let hiccup = || Err("cannot read the RuntimeClass gvisor: 500".to_string());
    for streak in 1..=10 {
        assert_eq!(settle(Some(&kernel), hiccup(), streak), None);
    }
    for streak in 1..=INCONCLUSIVE_TOLERATED {
        assert_eq!(settle(Some(&verified), hiccup(), streak), None, "{streak}");
    }
    assert!(matches!(
        settle(Some(&verified), hiccup(), INCONCLUSIVE_TOLERATED + 1),
        Some(Verdict::Pending(why)) if why.contains("500")
    ));
    assert!(matches!(
        settle(Some(&Verdict::Pending("not yet".into())), hiccup(), 1),
        Some(Verdict::Pending(why)) if why.contains("500")
    ));
    assert_eq!(
        settle(Some(&verified), Ok(kernel.clone()), 0),
        Some(kernel),
        "a conclusive run is recorded as it is"
    );
}

#[test]
fn with_a_gateway_the_allowlist_canary_proves_the_path_of_runs_with_models() {
    const GATEWAY: &str = "10.96.0.40:8080";
    let with_gateway = Expectation {
        gateway: Some(GATEWAY),
        ..expect(NetworkMode::Allowlist)
    };
    let judged = |connect: Value| {
        let mut report = good(NetworkMode::Allowlist);
        report["connect"][GATEWAY] = connect;
        judge(
            &with_gateway,
            &Observation::Ran {
                log: log_of(&report),
                exit_code: Some(0),
            },
        )
    };
    let Verdict::Verified(proven) = judged(json!({"connected": true, "read": ""})) else {
        panic!("a reachable gateway proves the path")
    };
    assert!(
        proven.contains(GATEWAY) && proven.contains(UNLISTED),
        "{proven}"
    );
    let (check, message) = failure(judged(
        json!({"connected": false, "error": "TimeoutError: timed out"}),
    ));
    assert_eq!(check, Check::Gateway);
    assert!(
        message.contains(GATEWAY) && message.contains("timed out"),
        "{message}"
    );
    // A report without the gateway's attempt proves nothing.
    let report = good(NetworkMode::Allowlist);
    let (check, _) = failure(judge(
        &with_gateway,
        &Observation::Ran {
            log: log_of(&report),
            exit_code: Some(0),
        },
    ));
    assert_eq!(check, Check::Output);
}
