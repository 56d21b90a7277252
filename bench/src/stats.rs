//! Percentiles of timed samples and the formatting of figures and tables, shared by the
//! benchmarks.

use std::time::Duration;

/// Nearest-rank percentile `p` (0–100) of `samples`; zero when there are none.
pub fn percentile(samples: &[Duration], p: u32) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (usize::try_from(p).unwrap_or(100) * sorted.len()).div_ceil(100);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Seconds with one decimal.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// `a / b` with two decimals; `n/a` when `b` is zero.
pub fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "n/a".into()
    } else {
        format!("{:.2}", a / b)
    }
}

/// KiB (as /proc reports them) in MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A plain-text table: the first column left-aligned, the others right-aligned, every column
/// as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i == 0 {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str("  ");
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(
            row.iter().take(columns).map(String::as_str).collect(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = (1..=10).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 50), Duration::from_millis(5));
        assert_eq!(percentile(&s, 90), Duration::from_millis(9));
        assert_eq!(percentile(&s, 99), Duration::from_millis(10));
        assert_eq!(percentile(&s, 100), Duration::from_millis(10));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
        assert_eq!(ms(Duration::from_micros(12_340)), "12.3 ms");
    }

    #[test]
    fn figures_have_units_and_ratios_guard_zero() {
        assert_eq!(secs(Duration::from_millis(85_340)), "85.3 s");
        assert_eq!(ratio(85.3, 16.8), "5.08");
        assert_eq!(ratio(1.0, 0.0), "n/a");
        assert_eq!(mib(19_046), "18.6 MiB");
    }

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["pods".to_string(), "POST".into(), "1.00".into()],
            vec![
                "evaluations/status".to_string(),
                "PATCH".into(),
                "12.50".into(),
            ],
        ];
        let text = table(&["resource", "verb", "per run"], &rows);
        assert_eq!(
            text,
            "resource             verb  per run\n\
             pods                 POST     1.00\n\
             evaluations/status  PATCH    12.50\n"
        );
    }
}
