//! Resource accounting: what a namespace or the controller uses, its share of the limits, the
//! first limit a request would exceed, and how figures are written (Kubernetes units).

use super::*;

/// What is admitted now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// Runs.
    pub running: u32,
    /// Cores.
    pub cpu: f64,
    /// Bytes.
    pub memory: f64,
    /// GPUs.
    pub gpu: f64,
}

impl Usage {
    pub(super) fn add(&mut self, r: &Request) {
        self.running += 1;
        self.cpu += r.cpu;
        self.memory += r.memory;
        self.gpu += r.gpu;
    }

    pub(super) fn sub(&mut self, r: &Request) {
        self.running = self.running.saturating_sub(1);
        self.cpu = (self.cpu - r.cpu).max(0.0);
        self.memory = (self.memory - r.memory).max(0.0);
        self.gpu = (self.gpu - r.gpu).max(0.0);
    }

    /// The largest fraction of any limit in `limits` that this usage takes (0 without limits).
    pub(super) fn dominant_share(&self, limits: &Limits) -> f64 {
        let share = |used: f64, limit: Option<f64>| match limit {
            Some(l) if l > 0.0 => used / l,
            Some(_) => f64::INFINITY,
            None => 0.0,
        };
        [
            share(f64::from(self.running), limits.max_running.map(f64::from)),
            share(self.cpu, limits.cpu),
            share(self.memory, limits.memory),
            share(self.gpu, limits.gpu),
        ]
        .into_iter()
        .fold(0.0, f64::max)
    }

    /// The first limit that `self + request` would exceed, as a reason.
    pub(super) fn exceeds(&self, request: &Request, limits: &Limits) -> Option<String> {
        // A small tolerance: quantities are parsed into floats.
        const EPSILON: f64 = 1e-9;
        if let Some(max) = limits.max_running
            && self.running + 1 > max
        {
            return Some(format!("maxRunning {max} reached"));
        }
        let checks = [
            ("cpu", self.cpu + request.cpu, limits.cpu),
            ("memory", self.memory + request.memory, limits.memory),
            ("gpu", self.gpu + request.gpu, limits.gpu),
        ];
        checks.into_iter().find_map(|(name, total, limit)| {
            let limit = limit?;
            (total > limit * (1.0 + EPSILON) + EPSILON).then(|| {
                let requested = request_of(name, request);
                let shown = |v: f64| kube_units(name, v);
                format!(
                    "{name}: requests {}, {} of {} in use",
                    shown(requested),
                    shown(total - requested),
                    shown(limit)
                )
            })
        })
    }
}

/// `value` of resource `name` in the units a quota is written in: cpu in cores or millicores
/// (`2`, `1500m`), memory with the largest binary suffix that keeps it whole (`256Mi`, `2Gi`,
/// else bytes), GPUs as a count.
pub(super) fn kube_units(name: &str, value: f64) -> String {
    match name {
        "cpu" => {
            let milli = (value * 1000.0).round() as i64;
            if milli % 1000 == 0 {
                (milli / 1000).to_string()
            } else {
                format!("{milli}m")
            }
        }
        "memory" => {
            let bytes = value.round() as i64;
            ["Ei", "Pi", "Ti", "Gi", "Mi", "Ki"]
                .iter()
                .zip((1..=6).rev())
                .find_map(|(suffix, power)| {
                    let unit = 1i64 << (10 * power);
                    (bytes != 0 && bytes % unit == 0).then(|| format!("{}{suffix}", bytes / unit))
                })
                .unwrap_or_else(|| bytes.to_string())
        }
        _ => round(value).to_string(),
    }
}

pub(super) fn request_of(name: &str, r: &Request) -> f64 {
    match name {
        "cpu" => r.cpu,
        "memory" => r.memory,
        _ => r.gpu,
    }
}

pub(super) fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
