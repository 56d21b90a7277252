use super::*;

fn candidate(ns: &str, name: &str, priority: i64, created: i64, cpu: f64) -> Candidate {
    Candidate {
        namespace: ns.into(),
        key: QueueKey {
            priority: Reverse(priority),
            created,
            name: name.into(),
            uid: format!("{ns}/{name}"),
        },
        request: Request {
            cpu,
            memory: 1.0,
            gpu: 0.0,
        },
    }
}

fn max_running(n: u32) -> Limits {
    Limits {
        max_running: Some(n),
        ..Default::default()
    }
}

#[test]
fn admits_up_to_max_running_then_queues_with_a_reason() {
    let mut l = Ledger::default();
    let unlimited = Limits::default();
    assert_eq!(
        l.decide(
            &candidate("a", "1", 0, 1, 1.0),
            &max_running(2),
            &unlimited,
            None
        ),
        Decision::Admit
    );
    assert_eq!(
        l.decide(
            &candidate("a", "2", 0, 2, 1.0),
            &max_running(2),
            &unlimited,
            None
        ),
        Decision::Admit
    );
    let third = l.decide(
        &candidate("a", "3", 0, 3, 1.0),
        &max_running(2),
        &unlimited,
        None,
    );
    assert_eq!(
        third,
        Decision::Wait {
            position: 1,
            reason: "QuotaExceeded: maxRunning 2 reached".into()
        }
    );
    assert_eq!(l.usage(Some("a")).running, 2);
    assert_eq!(l.queued("a"), 1);
    assert_eq!(l.release("a/1").as_deref(), Some("a"));
    assert_eq!(
        l.decide(
            &candidate("a", "3", 0, 3, 1.0),
            &max_running(2),
            &unlimited,
            None
        ),
        Decision::Admit
    );
    assert_eq!(l.queued("a"), 0);
}

#[test]
fn deciding_again_for_an_admitted_run_is_idempotent() {
    let mut l = Ledger::default();
    let c = candidate("a", "1", 0, 1, 1.0);
    assert_eq!(
        l.decide(&c, &max_running(1), &Limits::default(), None),
        Decision::Admit
    );
    assert_eq!(
        l.decide(&c, &max_running(1), &Limits::default(), None),
        Decision::Admit
    );
    assert_eq!(l.usage(None).running, 1);
}

#[test]
fn higher_priority_then_older_runs_go_first() {
    let mut l = Ledger::default();
    let limits = max_running(1);
    let none = Limits::default();
    assert_eq!(
        l.decide(&candidate("a", "running", 0, 0, 1.0), &limits, &none, None),
        Decision::Admit
    );
    let old = candidate("a", "old", 0, 10, 1.0);
    let urgent = candidate("a", "urgent", 5, 20, 1.0);
    let young = candidate("a", "young", 0, 30, 1.0);
    for c in [&young, &old, &urgent] {
        assert!(matches!(
            l.decide(c, &limits, &none, None),
            Decision::Wait { .. }
        ));
    }
    assert_eq!(
        l.heads("a", 3)
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
        ["urgent", "old", "young"]
    );
    l.release("a/running");
    // The old one asks first but must wait for the urgent one.
    assert!(matches!(
        l.decide(&old, &limits, &none, None),
        Decision::Wait { position: 2, .. }
    ));
    assert_eq!(l.decide(&urgent, &limits, &none, None), Decision::Admit);
}

#[test]
fn resources_quota_and_controller_limits_are_both_enforced() {
    let mut l = Ledger::default();
    let ns = Limits {
        cpu: Some(2.0),
        ..Default::default()
    };
    let global = max_running(2);
    assert_eq!(
        l.decide(&candidate("a", "1", 0, 1, 1.5), &ns, &global, None),
        Decision::Admit
    );
    let Decision::Wait { reason, .. } =
        l.decide(&candidate("a", "2", 0, 2, 1.0), &ns, &global, None)
    else {
        panic!("cpu quota must be enforced")
    };
    assert_eq!(reason, "QuotaExceeded: cpu 1.5 of 2 in use");
    assert_eq!(
        l.decide(&candidate("b", "1", 0, 1, 1.0), &ns, &global, None),
        Decision::Admit
    );
    let Decision::Wait { reason, .. } =
        l.decide(&candidate("c", "1", 0, 1, 0.1), &ns, &global, None)
    else {
        panic!("controller-wide limit must be enforced")
    };
    assert!(
        reason.starts_with("ControllerLimit: maxRunning 2"),
        "{reason}"
    );
}

#[test]
fn a_request_that_can_never_fit_does_not_block_the_queue() {
    let mut l = Ledger::default();
    let ns = Limits {
        cpu: Some(4.0),
        ..Default::default()
    };
    let none = Limits::default();
    let Decision::Wait { reason, .. } =
        l.decide(&candidate("a", "huge", 9, 1, 16.0), &ns, &none, None)
    else {
        panic!("16 cpus cannot fit a 4-cpu quota")
    };
    assert!(reason.contains("request alone exceeds"), "{reason}");
    assert_eq!(
        l.decide(&candidate("a", "small", 0, 2, 1.0), &ns, &none, None),
        Decision::Admit
    );
}

#[test]
fn pause_and_emergency_hold_admit_nothing() {
    let mut l = Ledger::default();
    let paused = Limits {
        paused: true,
        ..Default::default()
    };
    let none = Limits::default();
    assert!(matches!(
        l.decide(&candidate("a", "1", 0, 1, 1.0), &paused, &none, None),
        Decision::Wait { reason, .. } if reason.starts_with("Paused")
    ));
    assert!(matches!(
        l.decide(&candidate("a", "1", 0, 1, 1.0), &none, &none, Some("maintenance")),
        Decision::Wait { reason, .. } if reason == "EmergencyStop: maintenance"
    ));
    assert_eq!(l.usage(None).running, 0);
}

#[test]
fn retain_forgets_deleted_runs() {
    let mut l = Ledger::default();
    let none = Limits::default();
    l.decide(&candidate("a", "1", 0, 1, 1.0), &none, &none, None);
    l.decide(&candidate("a", "2", 0, 2, 1.0), &none, &none, Some("stop"));
    l.retain(|uid, _| uid == "a/2");
    assert_eq!(l.usage(None).running, 0);
    assert_eq!(l.queued("a"), 1);
    l.restore("a/9", "a", Request::default());
    assert!(l.is_admitted("a/9"));
}

/// A small deterministic generator (xorshift64*), so the randomized test needs no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn randomized_submissions_completions_and_quota_edits_never_over_admit() {
    let namespaces = ["a", "b", "c"];
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut ledger = Ledger::default();
        let mut limits: HashMap<&str, Limits> =
            namespaces.iter().map(|ns| (*ns, max_running(2))).collect();
        let global = Limits {
            max_running: Some(5),
            cpu: Some(6.0),
            ..Default::default()
        };
        let mut pending: Vec<Candidate> = Vec::new();
        let mut admitted: Vec<String> = Vec::new();
        for step in 0..3000 {
            match rng.below(10) {
                // Submit a new run.
                0..=3 => {
                    let ns = namespaces[rng.below(3) as usize];
                    let c = candidate(
                        ns,
                        &format!("e{step}"),
                        rng.below(3) as i64,
                        step,
                        (1 + rng.below(3)) as f64 * 0.5,
                    );
                    pending.push(c);
                }
                // A queued run asks again (its requeue, or a wake-up).
                4..=6 if !pending.is_empty() => {
                    let i = rng.below(pending.len() as u64) as usize;
                    let c = pending[i].clone();
                    let ns_limits = limits[c.namespace.as_str()].clone();
                    let before_ns = ledger.usage(Some(&c.namespace));
                    let before_all = ledger.usage(None);
                    if ledger.decide(&c, &ns_limits, &global, None) == Decision::Admit {
                        // The invariant: admitting never takes a figure over its limit.
                        let ns_usage = ledger.usage(Some(&c.namespace));
                        let all = ledger.usage(None);
                        assert!(
                            before_ns.exceeds(&c.request, &ns_limits).is_none(),
                            "seed {seed} step {step}: over namespace quota"
                        );
                        assert!(
                            before_all.exceeds(&c.request, &global).is_none(),
                            "seed {seed} step {step}: over controller limit"
                        );
                        assert!(ns_usage.running <= ns_limits.max_running.unwrap_or(u32::MAX));
                        assert!(
                            all.running <= 5 && all.cpu <= 6.0 + 1e-6,
                            "seed {seed} step {step}: {all:?}"
                        );
                        admitted.push(c.key.uid.clone());
                        pending.remove(i);
                    }
                }
                // A run finishes (or is deleted).
                7..=8 if !admitted.is_empty() => {
                    let i = rng.below(admitted.len() as u64) as usize;
                    let uid = admitted.swap_remove(i);
                    assert!(ledger.release(&uid).is_some());
                }
                // A quota edit (it may go below current usage: nothing is preempted, but
                // nothing more is admitted until usage is back under it).
                9 => {
                    let ns = namespaces[rng.below(3) as usize];
                    limits.insert(ns, max_running(rng.below(4) as u32));
                }
                _ => {}
            }
            for ns in namespaces.iter().filter(|_| step % 50 == 0) {
                let queued_in_ns = pending
                    .iter()
                    .filter(|c| c.namespace == *ns && ledger.queued.contains_key(&c.key.uid))
                    .count();
                assert_eq!(
                    ledger.queued(ns),
                    queued_in_ns,
                    "seed {seed} step {step}: queue bookkeeping"
                );
            }
            assert_eq!(ledger.usage(None).running as usize, admitted.len());
        }
        // Liveness: with every run finished, the queue drains in order.
        for uid in admitted.drain(..) {
            ledger.release(&uid);
        }
        let generous = Limits::default();
        while let Some(c) = pending
            .iter()
            .find(|c| ledger.heads(&c.namespace, 1).first().map(|h| &h.1) == Some(&c.key.uid))
            .cloned()
        {
            assert_eq!(
                ledger.decide(&c, &generous, &Limits::default(), None),
                Decision::Admit
            );
            ledger.release(&c.key.uid);
            pending.retain(|p| p.key.uid != c.key.uid);
        }
        assert!(
            pending
                .iter()
                .all(|c| !ledger.queued.contains_key(&c.key.uid))
        );
    }
}
