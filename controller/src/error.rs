//! The controller's error type: one variant per action that can fail, a fixed `reason()` for
//! Events and metric labels, and `is_transient()` for the requeue policy.

/// Errors of the reconcilers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the Evaluation itself failed.
    #[error("failed to read the Evaluation: {0}")]
    GetEvaluation(#[source] kube::Error),
    /// Reading an EvaluationSuite failed.
    #[error("failed to read the EvaluationSuite: {0}")]
    GetSuite(#[source] kube::Error),
    /// Reading a ModelEndpoint a run names failed.
    #[error("failed to read ModelEndpoint {name}: {source}")]
    GetModelEndpoint {
        /// Its name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Reading the Secret a ModelEndpoint names failed.
    #[error("failed to read Secret {name}: {source}")]
    GetSecret {
        /// Its name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Reading the pod log failed.
    #[error("failed to read the log of pod {pod}: {source}")]
    ReadLog {
        /// Pod name.
        pod: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// A reconcile took longer than its deadline (a slow or silent API server).
    #[error("the reconcile did not finish within {0}s")]
    ReconcileTimeout(u64),
    /// Reading the pod log took too long (its kubelet may be unreachable).
    #[error("reading the log of pod {pod} timed out")]
    ReadLogTimeout {
        /// Pod name.
        pod: String,
    },
    /// Creating or updating a child object failed.
    #[error("failed to apply {kind} {name}: {source}")]
    ApplyChild {
        /// Kind of the child.
        kind: &'static str,
        /// Name of the child.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Deleting a child object failed.
    #[error("failed to delete {kind} {name}: {source}")]
    DeleteChild {
        /// Kind of the child.
        kind: &'static str,
        /// Name of the child.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// A workspace ConfigMap of the right name exists but cannot be used yet.
    #[error("workspace ConfigMap {name} cannot be used yet: {why}")]
    WorkspaceBusy {
        /// ConfigMap name.
        name: String,
        /// Why not.
        why: String,
    },
    /// Writing status failed.
    #[error("failed to patch status: {0}")]
    PatchStatus(#[source] kube::Error),
    /// Writing status did not finish in time.
    #[error("timed out patching status")]
    PatchStatusTimeout,
    /// The namespace is being deleted: the API server creates nothing in it any more, and the
    /// Evaluation goes with it.
    #[error("namespace {0} is being deleted; nothing new is created in it")]
    NamespaceTerminating(String),
    /// The object lacks something the API server always sets.
    #[error("object is missing {0}")]
    MissingObjectKey(&'static str),
    /// Serializing an object failed (a bug).
    #[error("failed to serialize {0}: {1}")]
    Serialize(&'static str, #[source] serde_json::Error),
}

impl Error {
    /// Fixed PascalCase name of the variant, for Event reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::GetEvaluation(_) => "GetEvaluationFailed",
            Error::GetSuite(_) => "GetSuiteFailed",
            Error::GetModelEndpoint { .. } => "GetModelEndpointFailed",
            Error::GetSecret { .. } => "GetSecretFailed",
            Error::ReadLog { .. } => "ReadLogFailed",
            Error::ReconcileTimeout(_) => "ReconcileTimeout",
            Error::ReadLogTimeout { .. } => "ReadLogTimeout",
            Error::ApplyChild { .. } => "ApplyChildFailed",
            Error::DeleteChild { .. } => "DeleteChildFailed",
            Error::WorkspaceBusy { .. } => "WorkspaceBusy",
            Error::PatchStatus(_) => "PatchStatusFailed",
            Error::PatchStatusTimeout => "PatchStatusTimeout",
            Error::NamespaceTerminating(_) => "NamespaceTerminating",
            Error::MissingObjectKey(_) => "MissingObjectKey",
            Error::Serialize(..) => "SerializeFailed",
        }
    }

    /// Whether retrying the same reconcile may succeed (network, conflicts, server errors).
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            Error::NamespaceTerminating(_) | Error::MissingObjectKey(_) | Error::Serialize(..)
        )
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_pascal_case_and_bugs_are_not_transient() {
        let missing = Error::MissingObjectKey("metadata.uid");
        assert_eq!(missing.reason(), "MissingObjectKey");
        assert!(!missing.is_transient());
        assert!(Error::PatchStatusTimeout.is_transient());
        assert!(
            Error::PatchStatusTimeout
                .reason()
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        );
    }
}
