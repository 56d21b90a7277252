use super::usage::kube_units;
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
        run: format!("{ns}/{name}#1"),
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
    assert_eq!(reason, "QuotaExceeded: cpu: requests 1, 1500m of 2 in use");
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
    assert_eq!(
        reason,
        "QuotaExceeded: cannot fit under the current quota, even with nothing else running \
         (cpu: requests 16, 0 of 4 in use)"
    );
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
        l.decide(&candidate("a", "1", 0, 1, 1.0), &none, &none, Some("EmergencyStop: maintenance")),
        Decision::Wait { reason, .. } if reason == "EmergencyStop: maintenance"
    ));
    assert_eq!(l.usage(None).running, 0);
}

#[test]
fn deleted_evaluations_lose_their_queue_place_but_hold_until_their_pods_are_gone() {
    let mut l = Ledger::default();
    let none = Limits::default();
    l.decide(&candidate("a", "1", 0, 1, 1.0), &none, &none, None);
    l.decide(&candidate("a", "2", 0, 2, 1.0), &none, &none, Some("stop"));
    l.decide(&candidate("a", "3", 0, 3, 1.0), &none, &none, Some("stop"));
    // Both deleted: the queued one leaves the queue at once, the admitted one still runs.
    l.dequeue("a/2");
    l.dequeue("a/1");
    assert_eq!(l.queued("a"), 1);
    assert_eq!(l.usage(None).running, 1);
    assert!(l.runs_of("a/1").next().is_some());
    // Its pod is gone: the admission is freed.
    assert_eq!(l.settle("a/1", |_| false), 1);
    assert_eq!(l.usage(None).running, 0);
    l.restore("a/9#1", "a/9", "a", Request::default());
    assert!(l.is_admitted("a/9#1"));
}

/// The quota bypass: a spec change (or rerun) of a running Evaluation is a new run; it must
/// queue behind the quota like any other while the old run's pod still holds its share.
#[test]
fn a_new_run_of_an_admitted_evaluation_is_checked_like_any_other() {
    let mut l = Ledger::default();
    let quota = Limits {
        max_running: Some(1),
        cpu: Some(1.0),
        ..Default::default()
    };
    let none = Limits::default();
    let first = candidate("a", "a", 0, 1, 0.5);
    assert_eq!(l.decide(&first, &quota, &none, None), Decision::Admit);
    let bigger = Candidate {
        run: "a/a#2".into(),
        request: Request {
            cpu: 2.0,
            memory: 1.0,
            gpu: 0.0,
        },
        ..first.clone()
    };
    assert!(matches!(
        l.decide(&bigger, &quota, &none, None),
        Decision::Wait { reason, .. } if reason.contains("cannot fit under the current quota")
    ));
    let same_size = Candidate {
        run: "a/a#3".into(),
        ..first.clone()
    };
    assert!(matches!(
        l.decide(&same_size, &quota, &none, None),
        Decision::Wait { reason, .. } if reason == "QuotaExceeded: maxRunning 1 reached"
    ));
    assert!(matches!(
        l.decide(&same_size, &none, &none, Some("EmergencyStop: drill")),
        Decision::Wait { reason, .. } if reason.starts_with("EmergencyStop")
    ));
    // The old run's pod is gone: only then does the new run fit.
    assert_eq!(l.settle("a/a", |run| run != "a/a#1"), 1);
    assert_eq!(l.decide(&same_size, &quota, &none, None), Decision::Admit);
    assert_eq!(l.usage(None).running, 1);
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

/// The cluster as the randomized test sees it: which pods are alive, per run.
#[derive(Default)]
struct Cluster {
    /// run id → (namespace, uid, cpu) of its live pod.
    pods: HashMap<String, (String, String, f64)>,
}

impl Cluster {
    fn usage(&self, namespace: Option<&str>) -> (u32, f64) {
        self.pods
            .values()
            .filter(|(ns, _, _)| namespace.is_none_or(|n| n == ns))
            .fold((0, 0.0), |(n, cpu), (_, _, c)| (n + 1, cpu + c))
    }
}

/// Never over-admit, measured against the pods that really run, across spec changes (a new
/// run while the old pod still terminates), deletes (pods outlive their Evaluation), restarts
/// and failovers (the ledger rebuilt from the live pods and the queued Evaluations).
#[test]
fn randomized_spec_changes_deletes_and_restarts_never_over_admit_the_cluster() {
    let namespaces = ["a", "b"];
    let ns_limits = Limits {
        max_running: Some(2),
        cpu: Some(2.0),
        ..Default::default()
    };
    let global = Limits {
        max_running: Some(3),
        ..Default::default()
    };
    for seed in 1..=30u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut ledger = Ledger::default();
        let mut cluster = Cluster::default();
        // Evaluations: uid → the candidate of its current run (None once deleted).
        let mut evaluations: HashMap<String, Candidate> = HashMap::new();
        let mut next_run = 0u64;
        let mut new_run = |c: &Candidate, rng: &mut Rng| {
            next_run += 1;
            Candidate {
                run: format!("{}#{next_run}", c.key.uid),
                request: Request {
                    cpu: (1 + rng.below(2)) as f64 * 0.5,
                    memory: 1.0,
                    gpu: 0.0,
                },
                ..c.clone()
            }
        };
        for step in 0..2000i64 {
            match rng.below(12) {
                // A new Evaluation.
                0..=2 => {
                    let ns = namespaces[rng.below(2) as usize];
                    let c = candidate(ns, &format!("e{step}"), rng.below(2) as i64, step, 0.5);
                    let c = new_run(&c, &mut rng);
                    evaluations.insert(c.key.uid.clone(), c);
                }
                // A reconcile of an Evaluation whose current run has no pod yet: it asks.
                3..=5 if !evaluations.is_empty() => {
                    let mut uids: Vec<&String> = evaluations.keys().collect();
                    uids.sort();
                    let uid = uids[rng.below(uids.len() as u64) as usize].clone();
                    let c = evaluations[&uid].clone();
                    if cluster.pods.contains_key(&c.run) {
                        continue;
                    }
                    if ledger.decide(&c, &ns_limits, &global, None) == Decision::Admit {
                        let (n_ns, cpu_ns) = cluster.usage(Some(&c.namespace));
                        let (n_all, _) = cluster.usage(None);
                        assert!(
                            n_ns < 2 && cpu_ns + c.request.cpu <= 2.0 + 1e-9 && n_all < 3,
                            "seed {seed} step {step}: admitted {} over what runs ({n_ns} pods, \
                             {cpu_ns} cpu in {}, {n_all} in all)",
                            c.run,
                            c.namespace
                        );
                        cluster.pods.insert(
                            c.run.clone(),
                            (c.namespace.clone(), uid.clone(), c.request.cpu),
                        );
                    }
                }
                // A spec change or rerun: a new run; the old pod keeps terminating.
                6 if !evaluations.is_empty() => {
                    let mut uids: Vec<&String> = evaluations.keys().collect();
                    uids.sort();
                    let uid = uids[rng.below(uids.len() as u64) as usize].clone();
                    let c = new_run(&evaluations[&uid], &mut rng);
                    evaluations.insert(uid, c);
                }
                // An Evaluation is deleted; its pods terminate later.
                7 if !evaluations.is_empty() => {
                    let mut uids: Vec<String> = evaluations.keys().cloned().collect();
                    uids.sort();
                    let uid = uids[rng.below(uids.len() as u64) as usize].clone();
                    evaluations.remove(&uid);
                    ledger.dequeue(&uid);
                }
                // A pod ends (finished, or its deletion completed); the next look at its
                // Evaluation (a reconcile, or the sweep) settles what it holds.
                8..=9 if !cluster.pods.is_empty() => {
                    let mut runs: Vec<String> = cluster.pods.keys().cloned().collect();
                    runs.sort();
                    let run = runs[rng.below(runs.len() as u64) as usize].clone();
                    let (_, uid, _) = cluster.pods.remove(&run).expect("listed");
                    let live: BTreeSet<String> = cluster
                        .pods
                        .iter()
                        .filter(|(_, (_, u, _))| u == &uid)
                        .map(|(r, _)| r.clone())
                        .collect();
                    ledger.settle(&uid, |r| live.contains(r));
                    // A finished current run also leaves: it will not ask again.
                    if evaluations.get(&uid).is_some_and(|c| c.run == run) {
                        evaluations.remove(&uid);
                    }
                }
                // A restart or a failover: the new leader rebuilds the ledger from the cluster.
                10 => {
                    ledger = Ledger::default();
                    for (run, (ns, uid, cpu)) in &cluster.pods {
                        let request = Request {
                            cpu: *cpu,
                            memory: 1.0,
                            gpu: 0.0,
                        };
                        ledger.restore(run, uid, ns, request);
                    }
                    let mut waiting: Vec<&Candidate> = evaluations
                        .values()
                        .filter(|c| !cluster.pods.contains_key(&c.run))
                        .collect();
                    waiting.sort_by(|a, b| a.key.cmp(&b.key));
                    for c in waiting {
                        ledger.queue(c);
                    }
                }
                _ => {}
            }
            let (held, cpu) = (ledger.usage(None), cluster.usage(None));
            assert!(
                held.running >= cpu.0,
                "seed {seed} step {step}: the ledger holds {} runs but {} pods run",
                held.running,
                cpu.0
            );
        }
    }
}

#[test]
fn a_request_over_a_controller_wide_limit_is_refused_not_queued_forever() {
    let mut l = Ledger::default();
    let global = Limits {
        cpu: Some(8.0),
        ..Default::default()
    };
    let none = Limits::default();
    let huge = candidate("a", "huge", 9, 1, 16.0);
    assert!(matches!(
        l.decide(&huge, &none, &global, None),
        Decision::Refuse { reason } if reason.contains("controller-wide limit (cpu: requests 16, 0 of 8 in use)")
    ));
    assert_eq!(l.queued("a"), 0, "it holds no queue place");
    assert_eq!(
        l.decide(&candidate("a", "small", 0, 2, 1.0), &none, &global, None),
        Decision::Admit
    );
}

/// Two Evaluations can never share an admission, even if a run id repeated.
#[test]
fn another_evaluation_never_rides_on_an_admitted_run() {
    let mut l = Ledger::default();
    let quota = max_running(1);
    let none = Limits::default();
    let first = candidate("a", "one", 0, 1, 1.0);
    assert_eq!(l.decide(&first, &quota, &none, None), Decision::Admit);
    let twin = Candidate {
        run: first.run.clone(),
        ..candidate("a", "two", 0, 2, 1.0)
    };
    assert!(matches!(
        l.decide(&twin, &quota, &none, None),
        Decision::Wait { reason, .. } if reason == "QuotaExceeded: maxRunning 1 reached"
    ));
}

#[test]
fn queue_positions_are_exact_up_front_and_coarse_far_back() {
    let reported: Vec<usize> = [0, 1, 7, 10, 11, 19, 20, 21, 100, 101, 250, 9_999, 10_001]
        .into_iter()
        .map(reported_position)
        .collect();
    assert_eq!(
        reported,
        [0, 1, 7, 10, 20, 20, 20, 30, 100, 200, 300, 10_000, 11_000]
    );
    assert_eq!(reported_position(usize::MAX - 5), usize::MAX, "saturates");
    // Draining a queue of 10,000 changes the reported position of the run at its back only
    // when it crosses a bucket: about 40 status writes, not 10,000.
    let changes = (1..=10_000)
        .rev()
        .map(reported_position)
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] != w[1])
        .count();
    assert!(changes < 40, "{changes} writes for 10,000 moves");
}

#[test]
fn a_freed_slot_wakes_the_head_of_the_queue_and_nothing_else() {
    let mut l = Ledger::default();
    let (limits, none) = (max_running(1), Limits::default());
    assert_eq!(
        l.decide(&candidate("a", "running", 0, 0, 1.0), &limits, &none, None),
        Decision::Admit
    );
    for (name, created) in [("first", 1), ("second", 2)] {
        let c = candidate("a", name, 0, created, 1.0);
        assert!(matches!(
            l.decide(&c, &limits, &none, None),
            Decision::Wait { .. }
        ));
    }
    l.take_wakes();
    assert_eq!(l.settle("a/running", |_| false), 1);
    assert_eq!(
        l.take_wakes(),
        [("a".to_string(), "first".to_string())],
        "only the run that can start now"
    );
    assert_eq!(
        l.decide(&candidate("a", "first", 0, 1, 1.0), &limits, &none, None),
        Decision::Admit
    );
}

#[test]
fn a_quota_raise_wakes_as_many_as_now_fit() {
    let mut l = Ledger::default();
    let none = Limits::default();
    for i in 0..5 {
        let c = candidate("a", &format!("e{i}"), 0, i, 1.0);
        l.decide(&c, &max_running(0), &none, None);
    }
    l.take_wakes();
    l.set_limits("a", max_running(3));
    // Every queued run's reason named the old limit: all five are looked at again (the front
    // of the queue, up to WAKE_BATCH), and three of them fit.
    let woken: Vec<String> = l.take_wakes().into_iter().map(|(_, n)| n).collect();
    assert_eq!(woken, ["e0", "e1", "e2", "e3", "e4"]);
    // The same limits again (a quota's status write comes back as a watch event): only the
    // runs that fit, not the queue again.
    l.set_limits("a", max_running(3));
    let woken: Vec<String> = l.take_wakes().into_iter().map(|(_, n)| n).collect();
    assert_eq!(woken, ["e0", "e1", "e2"]);
}

/// Plays the Evaluation controller over the ledger: a work queue of woken runs (each once
/// while pending), each decided with `limits` in namespace "a"; the last reason of every
/// queued run is kept in `reasons`. Returns the most runs any one decision (or the change
/// before) woke, and how many decisions were made.
fn drive(
    l: &mut Ledger,
    runs: &HashMap<String, Candidate>,
    limits: &Limits,
    global: &Limits,
    reasons: &mut HashMap<String, String>,
) -> (usize, usize) {
    let mut pending = std::collections::VecDeque::new();
    let mut waiting: HashSet<String> = HashSet::new();
    let (mut most, mut decisions) = (0, 0);
    loop {
        let woken = l.take_wakes();
        most = most.max(woken.len());
        for (ns, name) in woken {
            if ns == "a" && waiting.insert(name.clone()) {
                pending.push_back(name);
            }
        }
        let Some(name) = pending.pop_front() else {
            break;
        };
        waiting.remove(&name);
        decisions += 1;
        assert!(decisions <= 10 * runs.len(), "the wake-ups never end");
        match l.decide(&runs[&name], limits, global, None) {
            Decision::Wait { reason, .. } => {
                reasons.insert(name, reason);
            }
            _ => {
                reasons.remove(&name);
            }
        }
    }
    (most, decisions)
}

/// A pause, an invalid quota and the quota's deletion each reach the reason of every one of
/// 200 queued runs, not only the first WAKE_BATCH: the queue is looked at again batch after
/// batch, each batch woken by the decision of the last run of the one before, so no change
/// and no decision wakes more than a batch (and the positions that moved).
#[test]
fn changed_limits_reach_the_reason_of_every_queued_run_batch_by_batch() {
    let mut l = Ledger::default();
    let (none, global) = (Limits::default(), max_running(2));
    // One run of another namespace and one of "a" hold the controller-wide limit's two slots.
    assert_eq!(
        l.decide(&candidate("b", "x", 0, 0, 1.0), &none, &global, None),
        Decision::Admit
    );
    let quota = max_running(1);
    l.set_limits("a", quota.clone());
    assert_eq!(
        l.decide(&candidate("a", "running", 0, 0, 1.0), &quota, &global, None),
        Decision::Admit
    );
    let count = 200;
    let runs: HashMap<String, Candidate> = (0..count)
        .map(|i| {
            let name = format!("e{i:03}");
            let c = candidate("a", &name, 0, 1 + i as i64, 1.0);
            (name, c)
        })
        .collect();
    let mut reasons = HashMap::new();
    let mut names: Vec<&String> = runs.keys().collect();
    names.sort();
    for name in names {
        if let Decision::Wait { reason, .. } = l.decide(&runs[name], &quota, &global, None) {
            reasons.insert(name.clone(), reason);
        }
    }
    assert_eq!(reasons.len(), count);
    l.take_wakes();
    let paused = Limits {
        paused: true,
        ..quota.clone()
    };
    let invalid = Limits {
        invalid: Some("spec.cpu: quantity \"lots\" is not a number".into()),
        ..quota.clone()
    };
    // The quota deleted: no namespace limit; the controller-wide one still keeps all waiting.
    let steps = [
        (paused, "Paused: "),
        (invalid, "QuotaInvalid: spec.cpu"),
        (none.clone(), "ControllerLimit: maxRunning 2 reached"),
    ];
    for (limits, expected) in steps {
        l.set_limits("a", limits.clone());
        let (most, decisions) = drive(&mut l, &runs, &limits, &global, &mut reasons);
        assert!(
            most <= WAKE_BATCH + 50,
            "{most} runs woken at once from a queue of {count}"
        );
        assert!(decisions >= count, "{decisions} decisions for {count} runs");
        assert_eq!(reasons.len(), count, "all still queued");
        let stale: Vec<_> = reasons
            .iter()
            .filter(|(_, r)| !r.starts_with(expected))
            .collect();
        assert!(stale.is_empty(), "{} stale: {stale:?}", stale.len());
    }
}

/// A refresh goes on when the run that ends its batch leaves the queue (deleted) instead of
/// being decided; and the same limits again (the quota's own status write coming back as a
/// watch event) start no refresh.
#[test]
fn a_refresh_goes_on_past_a_run_that_left_and_unchanged_limits_start_none() {
    let mut l = Ledger::default();
    let none = Limits::default();
    let full = max_running(0);
    l.set_limits("a", full.clone());
    for i in 0..3 * WAKE_BATCH {
        let c = candidate("a", &format!("e{i:03}"), 0, i as i64, 1.0);
        l.decide(&c, &full, &none, None);
    }
    l.take_wakes();
    l.set_limits("a", full.clone());
    assert!(
        l.take_wakes().is_empty(),
        "the same limits: nothing to refresh"
    );
    let paused = Limits {
        paused: true,
        ..full
    };
    l.set_limits("a", paused);
    let woken: Vec<String> = l.take_wakes().into_iter().map(|(_, n)| n).collect();
    let front: Vec<String> = (0..WAKE_BATCH).map(|i| format!("e{i:03}")).collect();
    assert_eq!(woken, front, "the first WAKE_BATCH, not the whole queue");
    // The batch's last run is deleted before it is decided.
    l.dequeue(&format!("a/e{:03}", WAKE_BATCH - 1));
    let woken: Vec<String> = l
        .take_wakes()
        .into_iter()
        .map(|(_, n)| n)
        .filter(|n| n.as_str() >= format!("e{WAKE_BATCH:03}").as_str())
        .collect();
    let next: Vec<String> = (WAKE_BATCH..2 * WAKE_BATCH)
        .map(|i| format!("e{i:03}"))
        .collect();
    assert!(
        next.iter().all(|n| woken.contains(n)),
        "the next batch: {woken:?}"
    );
}

/// The race CI met: a reconcile read the quota cache just after the watch updated it and
/// decided one run with the new (paused) limits before the watch reported them. The report
/// is still a change: every queued run's reason is looked at again, not only that one's.
/// And a reconcile's older snapshot, decided after the report, does not undo it.
#[test]
fn limits_a_decision_saw_first_still_refresh_every_queued_reason() {
    let mut l = Ledger::default();
    let none = Limits::default();
    let full = max_running(0);
    l.set_limits("a", full.clone());
    for i in 0..4 {
        let c = candidate("a", &format!("e{i}"), 0, i, 1.0);
        l.decide(&c, &full, &none, None);
    }
    l.take_wakes();
    let paused = Limits {
        paused: true,
        ..full.clone()
    };
    let first = candidate("a", "e0", 0, 0, 1.0);
    assert!(matches!(
        l.decide(&first, &paused, &none, None),
        Decision::Wait { reason, .. } if reason.starts_with("Paused: ")
    ));
    l.set_limits("a", paused.clone());
    let woken: Vec<String> = l.take_wakes().into_iter().map(|(_, n)| n).collect();
    assert_eq!(
        woken,
        ["e0", "e1", "e2", "e3"],
        "every queued run looked at again"
    );
    // A reconcile still holding the old snapshot decides afterwards: the ledger keeps the
    // reported limits, so the same report again is no change.
    l.decide(&candidate("a", "e1", 0, 1, 1.0), &full, &none, None);
    l.set_limits("a", paused);
    assert!(l.take_wakes().is_empty(), "the reported limits were kept");
}

#[test]
fn a_run_behind_others_starts_when_there_is_room_for_all_of_them() {
    let mut l = Ledger::default();
    let none = Limits::default();
    let limits = Limits {
        cpu: Some(4.0),
        ..Default::default()
    };
    // Queued, not decided yet (a held run would reserve nothing).
    l.queue(&candidate("a", "big", 0, 1, 3.0));
    // With room for both, the one behind need not wait for the head's reconcile.
    assert_eq!(
        l.decide(&candidate("a", "small", 0, 2, 1.0), &limits, &none, None),
        Decision::Admit
    );
    // Without room for both, a small run never overtakes a large one.
    l.queue(&candidate("a", "big2", 0, 3, 3.0));
    assert!(matches!(
        l.decide(&candidate("a", "small2", 0, 4, 1.0), &limits, &none, None),
        Decision::Wait { reason, .. } if reason.starts_with("Queued: waiting behind")
    ));
}

#[test]
fn an_admission_rewrites_only_the_runs_whose_coarse_position_moved() {
    let mut l = Ledger::default();
    let none = Limits::default();
    for i in 0..3_000 {
        let c = candidate("a", &format!("e{i:05}"), 0, i, 1.0);
        l.decide(&c, &max_running(0), &none, None);
    }
    l.take_wakes();
    l.dequeue("a/e00000");
    let woken = l.take_wakes();
    assert!(
        (20..=50).contains(&woken.len()),
        "{} runs woken by one admission from a queue of 3,000",
        woken.len()
    );
    // The new head (position 1) and the run now at 11 (bucket 20 → 11 is still 20: not
    // woken) — but the one now at 10 (was 11, reported 20, now 10) is.
    let names: Vec<&str> = woken.iter().map(|(_, n)| n.as_str()).collect();
    assert!(names.contains(&"e00001") && names.contains(&"e00010"));
    assert!(!names.contains(&"e00011"), "{names:?}");
}

/// Fairness and safety over many namespaces and priorities, against a controller-wide cap
/// smaller than the demand: never over any limit, and every namespace with work is served.
#[test]
fn randomized_namespaces_and_priorities_share_the_controller_fairly() {
    let namespaces: Vec<String> = (0..8).map(|i| format!("ns{i}")).collect();
    let global = Limits {
        max_running: Some(6),
        cpu: Some(8.0),
        ..Default::default()
    };
    for seed in 1..=10u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut ledger = Ledger::default();
        let limits: HashMap<String, Limits> = namespaces
            .iter()
            .map(|ns| (ns.clone(), max_running(1 + rng.below(4) as u32)))
            .collect();
        let mut queued: Vec<Candidate> = Vec::new();
        let mut running: Vec<Candidate> = Vec::new();
        let mut served: HashMap<String, usize> = HashMap::new();
        // Namespace 0 floods; the others submit a little.
        for step in 0..1500i64 {
            let roll = rng.below(10);
            if roll < 3 {
                let ns = if rng.below(2) == 0 {
                    &namespaces[0]
                } else {
                    &namespaces[rng.below(8) as usize]
                };
                let priority = rng.below(3) as i64;
                let cpu = [0.5, 1.0, 2.0][rng.below(3) as usize];
                queued.push(candidate(ns, &format!("e{step}"), priority, step, cpu));
            } else if roll < 6 && !running.is_empty() {
                let done = running.swap_remove(rng.below(running.len() as u64) as usize);
                ledger.settle(&done.key.uid, |_| false);
            }
            // The work queue reconciles what the ledger woke, and anything new.
            let woken: std::collections::HashSet<(String, String)> =
                ledger.take_wakes().into_iter().collect();
            let mut i = 0;
            while i < queued.len() {
                let c = &queued[i];
                let asks = !ledger.queued.contains_key(&c.key.uid)
                    || woken.contains(&(c.namespace.clone(), c.key.name.clone()));
                if asks && ledger.decide(c, &limits[&c.namespace], &global, None) == Decision::Admit
                {
                    let c = queued.swap_remove(i);
                    *served.entry(c.namespace.clone()).or_default() += 1;
                    running.push(c);
                    continue;
                }
                i += 1;
            }
            let total = ledger.usage(None);
            assert!(
                total.running <= 6 && total.cpu <= 8.0 + 1e-9,
                "seed {seed}: {total:?}"
            );
            for ns in &namespaces {
                let used = ledger.usage(Some(ns));
                assert!(
                    limits[ns].max_running.is_none_or(|m| used.running <= m),
                    "seed {seed}: {ns} {used:?}"
                );
            }
            assert_eq!(total.running as usize, running.len(), "seed {seed}");
        }
        let submitted: std::collections::HashSet<&str> = queued
            .iter()
            .chain(&running)
            .map(|c| c.namespace.as_str())
            .collect();
        for ns in &namespaces {
            assert!(
                served.get(ns).copied().unwrap_or(0) > 0 || !submitted.contains(ns.as_str()),
                "seed {seed}: {ns} never served: {served:?}"
            );
        }
        // The flooding namespace does not take more than its fair part while others wait:
        // its share of admissions stays below what it asked for.
        let flood = served.get(&namespaces[0]).copied().unwrap_or(0);
        let all: usize = served.values().sum();
        assert!(
            flood * 10 < all * 9,
            "seed {seed}: ns0 took {flood} of {all}"
        );
    }
}

#[test]
fn admitting_queueing_and_freeing_touch_only_their_namespace() {
    let mut l = Ledger::default();
    let unlimited = Limits::default();
    let touched = |l: &mut Ledger| l.take_touched().into_iter().collect::<Vec<_>>();
    assert!(touched(&mut l).is_empty());
    l.decide(
        &candidate("a", "1", 0, 1, 1.0),
        &max_running(1),
        &unlimited,
        None,
    );
    assert_eq!(touched(&mut l), ["a"], "an admission");
    assert!(touched(&mut l).is_empty(), "taken once");
    l.decide(
        &candidate("a", "2", 0, 2, 1.0),
        &max_running(1),
        &unlimited,
        None,
    );
    assert_eq!(touched(&mut l), ["a"], "a run queued");
    l.decide(
        &candidate("b", "1", 0, 3, 1.0),
        &unlimited,
        &unlimited,
        None,
    );
    l.release_run("a/1#1");
    assert_eq!(touched(&mut l), ["a", "b"], "b admitted, a freed");
    l.set_limits("c", max_running(3));
    assert_eq!(touched(&mut l), ["c"], "limits changed");
    // Deciding the same admitted run again changes nothing.
    l.decide(
        &candidate("b", "1", 0, 3, 1.0),
        &unlimited,
        &unlimited,
        None,
    );
    assert!(touched(&mut l).is_empty());
}

/// The reported positions of every queued run of `ns`, by name.
fn reported(l: &Ledger, ns: &str) -> HashMap<String, usize> {
    l.heads(ns, usize::MAX)
        .into_iter()
        .enumerate()
        .map(|(i, (name, _))| (name, reported_position(i + 1)))
        .collect()
}

#[test]
fn joining_or_leaving_wakes_exactly_the_runs_whose_reported_position_changed() {
    let mut l = Ledger::default();
    let paused = Limits {
        paused: true,
        ..Default::default()
    };
    let unlimited = Limits::default();
    let mut x: u64 = 11;
    let mut next = |m: u64| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        (x >> 33) % m
    };
    for i in 0..2_500 {
        let c = candidate("a", &format!("r{i}"), 0, i, 1.0);
        l.decide(&c, &paused, &unlimited, None);
    }
    l.take_wakes();
    for step in 0..300 {
        let before = reported(&l, "a");
        let len = before.len() as u64;
        if step % 2 == 0 {
            // A run leaves from anywhere in the queue.
            let uid = l.heads("a", usize::MAX)[next(len) as usize].1.clone();
            l.dequeue(&uid);
        } else {
            // A run joins anywhere (an older creation time).
            let c = candidate("a", &format!("n{step}"), 0, next(2_500) as i64, 1.0);
            l.decide(&c, &paused, &unlimited, None);
        }
        let after = reported(&l, "a");
        let mut expected: Vec<(String, String)> = after
            .iter()
            .filter(|(name, p)| before.get(*name).is_some_and(|b| b != *p))
            .map(|(name, _)| ("a".to_string(), name.clone()))
            .collect();
        expected.sort();
        assert_eq!(l.take_wakes(), expected, "step {step}");
    }
}

#[test]
fn reasons_name_amounts_in_kubernetes_units() {
    assert_eq!(kube_units("cpu", 2.0), "2");
    assert_eq!(kube_units("cpu", 1.5), "1500m");
    assert_eq!(kube_units("cpu", 0.0), "0");
    assert_eq!(kube_units("memory", 268435456.0), "256Mi");
    assert_eq!(kube_units("memory", 2.0 * 1024.0 * 1024.0 * 1024.0), "2Gi");
    assert_eq!(kube_units("memory", 1536.0 * 1024.0 * 1024.0), "1536Mi");
    assert_eq!(kube_units("memory", 1000.0), "1000");
    assert_eq!(kube_units("memory", 0.0), "0");
    assert_eq!(kube_units("gpu", 1.0), "1");
}

/// A stopped namespace's queued run keeps no controller-wide room: the fair share does not
/// reserve for it, and a freed slot wakes a run that can start, not the held one.
#[test]
fn a_held_namespace_keeps_no_fair_share_and_takes_no_wake_up() {
    let mut l = Ledger::default();
    let (unlimited, global) = (Limits::default(), max_running(2));
    let stop = Some("EmergencyStop: incident");
    assert_eq!(
        l.decide(&candidate("b", "1", 0, 0, 1.0), &unlimited, &global, None),
        Decision::Admit
    );
    assert!(matches!(
        l.decide(&candidate("a", "1", 0, 1, 1.0), &unlimited, &global, stop),
        Decision::Wait { .. }
    ));
    // "a" has the smaller share, but cannot start: its room goes to "b".
    assert_eq!(
        l.decide(&candidate("b", "2", 0, 2, 1.0), &unlimited, &global, None),
        Decision::Admit
    );
    assert!(matches!(
        l.decide(&candidate("b", "3", 0, 3, 1.0), &unlimited, &global, None),
        Decision::Wait { .. }
    ));
    l.take_wakes();
    l.release("b/1");
    assert_eq!(l.take_wakes(), [("b".to_string(), "3".to_string())]);
    // Resumed: its next decision finds it free, and it is reserved for again.
    assert_eq!(
        l.decide(&candidate("a", "1", 0, 1, 1.0), &unlimited, &global, None),
        Decision::Admit
    );
}

/// Runs come and go, namespaces are stopped and resumed at random; the work queue asks only
/// for new runs, runs the ledger woke, and (as the controller does on a switch change) every
/// run when the stop switch changes. At every quiescence (no wake-up pending), no queued run
/// could be admitted: no run missed its wake-up, and no held run keeps room from others.
#[test]
fn randomized_holds_leave_no_queued_run_that_could_start() {
    let namespaces = ["a", "b", "c", "d"];
    let global = Limits {
        max_running: Some(4),
        cpu: Some(5.0),
        ..Default::default()
    };
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut ledger = Ledger::default();
        let limits: HashMap<&str, Limits> = namespaces
            .iter()
            .map(|ns| (*ns, max_running(1 + rng.below(3) as u32)))
            .collect();
        let mut stopped: HashSet<&str> = HashSet::new();
        let mut queued: Vec<Candidate> = Vec::new();
        let mut running: Vec<Candidate> = Vec::new();
        for step in 0..600i64 {
            let mut asking: Vec<Candidate> = Vec::new();
            match rng.below(10) {
                0..=3 => {
                    let ns = namespaces[rng.below(4) as usize];
                    let cpu = [0.5, 1.0, 2.0][rng.below(3) as usize];
                    let c = candidate(ns, &format!("e{step}"), rng.below(2) as i64, step, cpu);
                    queued.push(c.clone());
                    asking.push(c);
                }
                4..=6 if !running.is_empty() => {
                    let done = running.swap_remove(rng.below(running.len() as u64) as usize);
                    ledger.release(&done.key.uid);
                }
                7..=8 => {
                    let ns = namespaces[rng.below(4) as usize];
                    if !stopped.remove(ns) {
                        stopped.insert(ns);
                    }
                    asking.extend(queued.iter().cloned());
                }
                _ => {}
            }
            // Reconcile until nothing is woken any more.
            loop {
                let woken: HashSet<(String, String)> = ledger.take_wakes().into_iter().collect();
                asking.extend(
                    queued
                        .iter()
                        .filter(|c| woken.contains(&(c.namespace.clone(), c.key.name.clone())))
                        .cloned(),
                );
                if asking.is_empty() {
                    break;
                }
                for c in asking.drain(..) {
                    let hold = stopped
                        .contains(c.namespace.as_str())
                        .then_some("EmergencyStop: test");
                    let decision = ledger.decide(&c, &limits[c.namespace.as_str()], &global, hold);
                    if decision == Decision::Admit && queued.iter().any(|q| q.key == c.key) {
                        queued.retain(|q| q.key != c.key);
                        running.push(c);
                    }
                }
            }
            let total = ledger.usage(None);
            assert!(
                total.running <= 4 && total.cpu <= 5.0 + 1e-9,
                "seed {seed}: {total:?}"
            );
            for c in queued
                .iter()
                .filter(|c| !stopped.contains(c.namespace.as_str()))
            {
                let mut probe = ledger.clone();
                let decision = probe.decide(c, &limits[c.namespace.as_str()], &global, None);
                assert_ne!(
                    decision,
                    Decision::Admit,
                    "seed {seed} step {step}: {} could start but was never woken (stopped: {stopped:?})",
                    c.key.uid
                );
            }
        }
    }
}
