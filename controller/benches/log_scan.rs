//! Benchmark: reading an evaluation's log for its result line and tail.
//!
//! Crucible streams the log through `LogScanner`, which keeps only the last 4 KiB and the last
//! `CRUCIBLE_RESULT ` line. The baseline is the obvious alternative: collect the whole log into
//! one buffer, then take its last lines. Both run here on the same generated logs (1 MiB and
//! 10 MiB, the kubelet's default rotation size), and the figures are printed with their ratios:
//! time per log and the largest buffer each keeps.
//!
//! `cargo bench -p crucible --bench log_scan`

use std::hint::black_box;
use std::time::{Duration, Instant};

use crucible::run::results::{LogScanner, RESULT_PREFIX};

/// A log of `size` bytes of chatty output in 8 KiB chunks (as the kubelet streams it), ending
/// with a result line.
fn log(size: usize) -> Vec<Vec<u8>> {
    let mut text = Vec::with_capacity(size + 128);
    let mut i = 0u64;
    while text.len() < size {
        text.extend_from_slice(
            format!(
                "step {i}: loss={:.6} tokens={}\n",
                1.0 / (i + 1) as f64,
                i * 31
            )
            .as_bytes(),
        );
        i += 1;
    }
    text.extend_from_slice(format!("{RESULT_PREFIX}{{\"score\": 0.5}}\n").as_bytes());
    text.chunks(8192).map(<[u8]>::to_vec).collect()
}

/// Crucible's way: stream through the scanner. Returns the bytes it retains.
fn scanner(chunks: &[Vec<u8>]) -> usize {
    let mut s = LogScanner::default();
    chunks.iter().for_each(|c| s.feed(c));
    let capture = s.finish();
    assert!(capture.result_line.is_some());
    capture.tail.len() + 64 * 1024 + RESULT_PREFIX.len() + 1
}

/// Baseline: buffer everything, then look at the end. Returns the bytes it retains.
fn buffer_all(chunks: &[Vec<u8>]) -> usize {
    let mut all = Vec::new();
    chunks.iter().for_each(|c| all.extend_from_slice(c));
    let text = String::from_utf8_lossy(&all);
    let last = text.lines().rev().find(|l| l.starts_with(RESULT_PREFIX));
    assert!(last.is_some());
    let mut tail_start = text.len().saturating_sub(4096);
    while !text.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    black_box(&text[tail_start..]);
    all.capacity()
}

fn time(runs: u32, f: impl Fn() -> usize) -> (Duration, usize) {
    let retained = f(); // warm-up, and the memory figure
    let start = Instant::now();
    for _ in 0..runs {
        black_box(f());
    }
    (start.elapsed() / runs, retained)
}

fn main() {
    println!(
        "{:<8} {:>14} {:>14} {:>8} {:>14} {:>14} {:>8}",
        "log", "scanner", "buffer-all", "speed", "scanner mem", "buffer mem", "mem"
    );
    for (label, size, runs) in [("1 MiB", 1 << 20, 50), ("10 MiB", 10 << 20, 10)] {
        let chunks = log(size);
        let (t_scan, m_scan) = time(runs, || scanner(&chunks));
        let (t_base, m_base) = time(runs, || buffer_all(&chunks));
        println!(
            "{label:<8} {:>14.2?} {:>14.2?} {:>7.2}x {:>12} B {:>12} B {:>7.1}x",
            t_scan,
            t_base,
            t_base.as_secs_f64() / t_scan.as_secs_f64(),
            m_scan,
            m_base,
            m_base as f64 / m_scan as f64,
        );
    }
}
