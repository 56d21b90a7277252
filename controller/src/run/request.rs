//! What one run asks of the cluster, as admission counts it.

/// Resources one run requests (requests equal limits).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Request {
    /// Cores.
    pub cpu: f64,
    /// Bytes.
    pub memory: f64,
    /// Devices.
    pub gpu: f64,
}
