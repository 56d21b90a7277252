//! The pure parts of the `samples` step: memory quantities, how many runs the node holds,
//! and the figures as the report prints them.

use std::time::Duration;

use crate::stats::{ms, percentile, ratio};

/// Bytes of a memory quantity (`256Mi`, `1G`, `24576000Ki`, `1048576`); `None` if unreadable.
pub fn bytes(quantity: &str) -> Option<u64> {
    const SUFFIXES: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, unit) in SUFFIXES {
        if let Some(number) = quantity.strip_suffix(suffix) {
            return number.parse::<u64>().ok()?.checked_mul(unit);
        }
    }
    quantity.parse().ok()
}

/// What a pod asks of a node: millicores and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ask {
    pub millicpus: u64,
    pub bytes: u64,
}

impl Ask {
    pub fn plus(self, other: Ask) -> Ask {
        Ask {
            millicpus: self.millicpus.saturating_add(other.millicpus),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

/// How many runs asking `each` fit in `free`, at most `wanted`.
pub fn runs_that_fit(free: Ask, each: Ask, wanted: usize) -> usize {
    // Nothing asked of a resource: it bounds nothing.
    let by = |free: u64, each: u64| {
        free.checked_div(each)
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    wanted
        .min(by(free.millicpus, each.millicpus))
        .min(by(free.bytes, each.bytes))
}

/// Decimal megabytes with one decimal (`50.0 MB`), as throughputs are given.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `bytes` over `took` in MB/s; `n/a` for no time.
pub fn mb_per_s(bytes: u64, took: Duration) -> String {
    if took.is_zero() {
        "n/a".into()
    } else {
        format!("{:.1} MB/s", bytes as f64 / 1e6 / took.as_secs_f64())
    }
}

/// `p50 12.0 ms, max 40.0 ms (n=20)`.
pub fn latencies(samples: &[Duration]) -> String {
    format!(
        "p50 {}, max {} (n={})",
        ms(percentile(samples, 50)),
        ms(samples.iter().max().copied().unwrap_or_default()),
        samples.len()
    )
}

/// `busy / idle` of the p50s and of the maxima.
pub fn slowdown(busy: &[Duration], idle: &[Duration]) -> String {
    let max = |s: &[Duration]| s.iter().max().copied().unwrap_or_default().as_secs_f64();
    format!(
        "p50 ×{}, max ×{}",
        ratio(
            percentile(busy, 50).as_secs_f64(),
            percentile(idle, 50).as_secs_f64()
        ),
        ratio(max(busy), max(idle))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities_as_kubernetes_writes_them() {
        assert_eq!(bytes("256Mi"), Some(256 << 20));
        assert_eq!(bytes("24576000Ki"), Some(24_576_000 << 10));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("1048576"), Some(1 << 20));
        assert_eq!(bytes("1.5Gi"), None);
    }

    #[test]
    fn the_scarcer_resource_bounds_the_runs() {
        let free = Ask {
            millicpus: 1700,
            bytes: 20 << 30,
        };
        let each = Ask {
            millicpus: 70,
            bytes: 320 << 20,
        };
        assert_eq!(runs_that_fit(free, each, 100), 24, "CPU: 1700 / 70");
        let roomy = Ask {
            millicpus: 100_000,
            bytes: 20 << 30,
        };
        assert_eq!(
            runs_that_fit(roomy, each, 100),
            64,
            "memory: 20 GiB / 320 MiB"
        );
        assert_eq!(runs_that_fit(roomy, Ask::default(), 100), 100);
        assert_eq!(each.plus(each).millicpus, 140);
    }

    #[test]
    fn figures_have_units() {
        assert_eq!(megabytes(50_000_000), "50.0 MB");
        assert_eq!(mb_per_s(50_000_000, Duration::from_secs(4)), "12.5 MB/s");
        assert_eq!(mb_per_s(1, Duration::ZERO), "n/a");
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            latencies(&ms(&[30, 10, 20])),
            "p50 20.0 ms, max 30.0 ms (n=3)"
        );
        assert_eq!(
            slowdown(&ms(&[40, 20, 60]), &ms(&[20, 10, 30])),
            "p50 ×2.00, max ×2.00"
        );
        assert_eq!(slowdown(&ms(&[1]), &[]), "p50 ×n/a, max ×n/a");
    }
}
