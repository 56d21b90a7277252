//! A run's git source as the run sees it: the files at a commit, or why they could not be
//! had. The git library (`source/`) produces these. Pure.

use std::collections::BTreeMap;

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
