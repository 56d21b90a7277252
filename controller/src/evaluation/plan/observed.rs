//! What `observe` read from the cluster for one Evaluation: the input of `plan`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::error::Result;
use crate::evaluation::results::LogCapture;

/// Whether the sandbox's RuntimeClass exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeClassCheck {
    /// The class exists.
    Present,
    /// The class does not exist.
    Missing,
}

/// What `observe` read from the cluster for one Evaluation.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Time of observation.
    pub now: Time,
    /// Pods labelled with the Evaluation's uid.
    pub pods: Vec<Pod>,
    /// The RuntimeClass lookup; `None` when the run is finished and it was not needed.
    pub runtime_class: Option<RuntimeClassCheck>,
    /// Log captures of the current pod's containers, by container name.
    pub logs: BTreeMap<String, LogCapture>,
    /// Why an emergency stop covers the namespace, if one does.
    pub stop: Option<String>,
    /// For a git source: the files at the run's commit, or why they could not be had. Read
    /// when a run starts (and while it has not finished, pinned to its commit).
    pub source: Option<Result<FetchedSource, SourceProblem>>,
    /// For a finished run with `follow: true`: the commit the followed ref points to now.
    pub head: Option<String>,
}

/// Files of a git source at a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedSource {
    /// Repository URL without credentials.
    pub repo: String,
    /// Commit id.
    pub commit: String,
    /// Path → bytes.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Why a git source could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceProblem {
    /// PascalCase reason (`SourceUnreachable`, `UnknownRef`, `SourceTooLarge`, …).
    pub reason: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// Whether trying again later may work (network trouble).
    pub transient: bool,
}

/// Reason of a source whose fetch is queued or running: the run waits for its end.
pub const FETCHING_SOURCE: &str = "FetchingSource";

impl SourceProblem {
    /// The fetch of the source has not ended yet; `message` says whether it waits or runs.
    pub fn pending(message: String) -> SourceProblem {
        SourceProblem {
            reason: FETCHING_SOURCE,
            message,
            transient: true,
        }
    }

    /// Whether the source is still being fetched (nothing went wrong yet).
    pub fn is_pending(&self) -> bool {
        self.reason == FETCHING_SOURCE
    }
}
