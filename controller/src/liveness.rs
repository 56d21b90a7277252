//! Whether a sandbox pod still runs (and so holds its admission). Pure; shared by the
//! controllers, the admission gate and `crucible stop`.

use k8s_openapi::api::core::v1::Pod;

/// Whether the pod has stopped for good (restartPolicy Never).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}
