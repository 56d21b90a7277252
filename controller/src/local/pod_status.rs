//! What the local kubelet reports about a pod, built as the kubelet builds it: a container that
//! could not start is `waiting` with the kubelet's reason, one that ran is `terminated` with its
//! exit code and reason, and the pod's phase follows from its containers (the first failing
//! step ends the pod; a deadline ends it `DeadlineExceeded`). Pure: time is passed in.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodSpec,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// A container that never ran, with the kubelet's reason (`CreateContainerError`, …).
pub fn waiting(reason: &str, message: String) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: Some(message),
        }),
        ..Default::default()
    }
}

/// How a container that ran ended.
pub struct Ended {
    /// Exit code (128 + signal when killed).
    pub code: i32,
    /// Killed by the kernel for exceeding its memory limit.
    pub oom_killed: bool,
    /// Its termination message.
    pub message: Option<String>,
    /// When it started and ended.
    pub started: Time,
    /// When it ended.
    pub finished: Time,
}

/// A container that ran, as the kubelet reports it.
pub fn terminated(ended: Ended) -> ContainerState {
    let reason = match (ended.code, ended.oom_killed) {
        (0, _) => "Completed",
        (_, true) => "OOMKilled",
        _ => "Error",
    };
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: ended.code,
            reason: Some(reason.into()),
            message: ended.message,
            started_at: Some(ended.started),
            finished_at: Some(ended.finished),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The containers of one pod so far, init containers first, in the order they ran.
#[derive(Default)]
pub struct Containers {
    /// Each container's status, and whether it is an init container.
    pub statuses: Vec<(bool, ContainerStatus)>,
    /// A container was started.
    pub started: bool,
    /// A container exited non-zero.
    pub failed: bool,
    /// A container was killed at the pod's deadline.
    pub timed_out: bool,
}

impl Containers {
    /// Whether every container of `spec` ran to its end (so the pod's outputs exist).
    pub fn all_ran(&self, spec: &PodSpec) -> bool {
        self.statuses.len() == spec.init_containers.iter().flatten().count() + spec.containers.len()
            && self
                .statuses
                .iter()
                .all(|(_, c)| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
    }

    /// Whether the pod succeeded: every container ran and none failed or timed out.
    pub fn succeeded(&self, spec: &PodSpec) -> bool {
        self.all_ran(spec) && !self.failed && !self.timed_out
    }

    /// The pod's status: its phase from its containers, as the kubelet sets it.
    pub fn pod_status(self, spec: &PodSpec, start_time: Time) -> PodStatus {
        let mut status = PodStatus {
            phase: Some(if self.started { "Running" } else { "Pending" }.into()),
            start_time: Some(start_time),
            ..Default::default()
        };
        if self.timed_out {
            status.phase = Some("Failed".into());
            status.reason = Some("DeadlineExceeded".into());
            status.message =
                Some("Pod was active on the node longer than the specified deadline".into());
        } else if self.failed {
            status.phase = Some("Failed".into());
        } else if self.all_ran(spec) {
            status.phase = Some("Succeeded".into());
        }
        let (init, main): (Vec<_>, Vec<_>) = self.statuses.into_iter().partition(|(init, _)| *init);
        status.init_container_statuses = Some(init.into_iter().map(|(_, c)| c).collect());
        status.container_statuses = Some(main.into_iter().map(|(_, c)| c).collect());
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Container;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).expect("time"))
    }

    fn spec(init: usize, main: usize) -> PodSpec {
        let named = |n: usize, prefix: &str| -> Vec<Container> {
            (0..n)
                .map(|i| Container {
                    name: format!("{prefix}{i}"),
                    ..Default::default()
                })
                .collect()
        };
        PodSpec {
            init_containers: Some(named(init, "init")),
            containers: named(main, "main"),
            ..Default::default()
        }
    }

    fn ran(name: &str, init: bool, code: i32, oom_killed: bool) -> (bool, ContainerStatus) {
        let state = terminated(Ended {
            code,
            oom_killed,
            message: None,
            started: at(1),
            finished: at(2),
        });
        let status = ContainerStatus {
            name: name.into(),
            state: Some(state),
            ..Default::default()
        };
        (init, status)
    }

    fn reason(status: &ContainerStatus) -> Option<&str> {
        let terminated = status.state.as_ref()?.terminated.as_ref()?;
        terminated.reason.as_deref()
    }

    #[test]
    fn a_pod_whose_containers_all_ran_succeeds_and_keeps_init_and_main_apart() {
        let spec = spec(1, 1);
        let containers = Containers {
            statuses: vec![ran("init0", true, 0, false), ran("main0", false, 0, false)],
            started: true,
            ..Default::default()
        };
        assert!(containers.succeeded(&spec));
        let status = containers.pod_status(&spec, at(0));
        assert_eq!(status.phase.as_deref(), Some("Succeeded"));
        let init = status.init_container_statuses.expect("init");
        let main = status.container_statuses.expect("main");
        assert_eq!(
            (init[0].name.as_str(), main[0].name.as_str()),
            ("init0", "main0")
        );
        assert_eq!(reason(&main[0]), Some("Completed"));
    }

    #[test]
    fn a_failing_or_killed_container_fails_the_pod_with_the_kubelets_reasons() {
        let spec = spec(0, 1);
        let failed = Containers {
            statuses: vec![ran("main0", false, 137, true)],
            started: true,
            failed: true,
            ..Default::default()
        };
        assert!(!failed.succeeded(&spec));
        let status = failed.pod_status(&spec, at(0));
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        assert_eq!(status.reason, None);
        assert_eq!(
            reason(&status.container_statuses.expect("main")[0]),
            Some("OOMKilled")
        );
        assert_eq!(reason(&ran("x", false, 1, false).1), Some("Error"));

        let late = Containers {
            statuses: vec![ran("main0", false, 137, false)],
            started: true,
            timed_out: true,
            ..Default::default()
        };
        let status = late.pod_status(&spec, at(0));
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    }

    #[test]
    fn a_pod_stopped_before_its_last_container_is_neither_succeeded_nor_failed() {
        let spec = spec(1, 1);
        // The init container ran; the main one could not be created.
        let stuck = Containers {
            statuses: vec![
                ran("init0", true, 0, false),
                (
                    false,
                    ContainerStatus {
                        name: "main0".into(),
                        state: Some(waiting("CreateContainerError", "no".into())),
                        ..Default::default()
                    },
                ),
            ],
            started: true,
            ..Default::default()
        };
        assert!(!stuck.all_ran(&spec));
        assert_eq!(
            stuck.pod_status(&spec, at(0)).phase.as_deref(),
            Some("Running")
        );
        let never = Containers::default();
        assert_eq!(
            never.pod_status(&spec, at(0)).phase.as_deref(),
            Some("Pending")
        );
    }
}
