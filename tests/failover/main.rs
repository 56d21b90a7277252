//! Leader election on a real cluster: a second, standby controller takes over within the lease
//! duration after the leader is killed, and the Evaluation in flight is neither lost nor run
//! twice.
//!
//! Needs the leader controller started with `--leader-election` and these variables (set by
//! `scripts/test.sh`): `CRUCIBLE_BIN` (the crucible binary), `CRUCIBLE_E2E_CONTROLLER_PID`
//! (the leader), `CRUCIBLE_SYSTEM_NAMESPACE`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crucible::crd::Evaluation;
use crucible::crd::evaluation::Phase;
use crucible::leader::{LEASE_DURATION, RETRY_INTERVAL};
use crucible_e2e::{
    apply_evaluation, parse_evaluation, poll_until, wait_finished, wait_phase, with_temp_ns,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::ListParams;

const STANDBY: &str = "e2e-standby";

/// Kills the standby controller when the test ends, whatever happens.
struct Standby(Child);

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set (run scripts/test.sh)"))
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("crucible-controller")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

#[tokio::test]
async fn the_standby_takes_over_within_the_lease_and_the_run_in_flight_finishes_once() {
    let (bin, leader_pid, system) = (
        env("CRUCIBLE_BIN"),
        env("CRUCIBLE_E2E_CONTROLLER_PID"),
        env("CRUCIBLE_SYSTEM_NAMESPACE"),
    );
    with_temp_ns("failover", |client, ns| async move {
      let (bin, system) = (bin.clone(), system.clone());
      with_temp_ns("held", |_, stopped_ns| async move {
        let leases: Api<Lease> = Api::namespaced(client.clone(), &system);
        let before = holder(&leases).await.expect("the leader holds the Lease");
        assert_ne!(before, STANDBY);
        let log = std::fs::File::create(std::env::temp_dir().join("crucible-standby.log")).expect("log file");
        // Configured as the leader is: the same results store (scripts/test.sh's).
        let store: Vec<String> = std::env::var("CRUCIBLE_E2E_RESULTS_STORE")
            .map(|url| vec!["--results-store".to_string(), url])
            .unwrap_or_default();
        let _standby = Standby(
            Command::new(&bin)
                .args(["controller", "--leader-election", "--system-namespace", &system])
                .args(["--metrics-addr", "127.0.0.1:18091", "--identity", STANDBY])
                .args(&store)
                .stdout(Stdio::from(log.try_clone().expect("log")))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("start the standby controller"),
        );
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let ev = parse_evaluation(
            "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {name: in-flight}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -c, \"import time; time.sleep(15); print('CRUCIBLE_RESULT {\\\"score\\\": 1}')\"]\n  timeout: 2m\n",
        );
        apply_evaluation(&client, &ns, &ev).await;
        wait_phase(&api, "in-flight", Phase::Running, Duration::from_secs(90))
        .await;
        assert_eq!(holder(&leases).await.as_deref(), Some(before.as_str()), "the standby must wait");
        let stopped = crucible(&bin, &system, &["stop", "--namespace", &stopped_ns, "--timeout", "10s"]);
        assert!(stopped.status.success(), "stop {}", String::from_utf8_lossy(&stopped.stderr));
        let killed = Command::new("kill").args(["-9", &leader_pid]).status().expect("kill");
        assert!(killed.success(), "kill the leader {leader_pid}");
        let crash = Instant::now();
        poll_until(LEASE_DURATION + Duration::from_secs(10), "the standby to take the Lease", || {
            let leases = leases.clone();
            async move { (holder(&leases).await.as_deref() == Some(STANDBY)).then_some(()) }
        })
        .await;
        let takeover = crash.elapsed();
        // The Lease may have been renewed just before the kill: it is valid for LEASE_DURATION
        // after that, and the standby looks every RETRY_INTERVAL.
        let bound = LEASE_DURATION + RETRY_INTERVAL + Duration::from_secs(5);
        assert!(takeover <= bound, "takeover took {takeover:?}, more than {bound:?}");
        // The new leader starts with the emergency stop set for another namespace (set before
        // the crash): from its first decision it admits nothing there.
        let held = parse_evaluation(
            "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {name: held}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, -c, \"print('CRUCIBLE_RESULT {\\\"score\\\": 1}')\"]\n  timeout: 2m\n",
        );
        apply_evaluation(&client, &stopped_ns, &held).await;
        let held_api: Api<Evaluation> = Api::namespaced(client.clone(), &stopped_ns);
        let queued = wait_phase(&held_api, "held", Phase::Queued, Duration::from_secs(30)).await;
        let reason = queued.status.and_then(|s| s.queue).and_then(|q| q.reason).unwrap_or_default();
        assert!(reason.starts_with("EmergencyStop"), "{reason}");
        let resumed = crucible(&bin, &system, &["resume", "--namespace", &stopped_ns]);
        assert!(resumed.status.success(), "resume");
        let ran = wait_finished(&held_api, "held", Duration::from_secs(90)).await;
        assert_eq!(ran.status.and_then(|s| s.phase), Some(Phase::Succeeded));
        let done = wait_finished(&api, "in-flight", Duration::from_secs(120)).await;
        let status = done.status.expect("status");
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
        assert_eq!(status.attempts, Some(1), "the run was not started twice");
        assert!(status.history.is_empty());
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        let admitted = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Admitted"))
            .map(|e| {
                let series = e.series.and_then(|s| s.count).unwrap_or(1);
                e.count.unwrap_or(1).max(series)
            })
            .sum::<i32>();
        assert_eq!(admitted, 1, "exactly one admission, one pod");
        eprintln!("takeover after {takeover:?}");
      })
      .await;
    })
    .await;
}

/// Runs the crucible CLI against the cluster.
fn crucible(bin: &str, system: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .args(args)
        .args(["--system-namespace", system])
        .output()
        .expect("run crucible")
}
