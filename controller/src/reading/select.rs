//! Which samples `crucible samples` prints and how: the `limit` worst (lowest score first; ties
//! by id, then epoch) kept in a bounded heap while the bundle streams, optionally only those
//! that did not pass, as a table, a JSON array or the stored lines. Pure.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde_json::Value;

use crate::crd::samples::SamplesStatus;
use crate::crd::shown_number;
use crate::samples::protocol::Line;
use crate::table::pad;

/// Most bytes of sample lines kept for printing: `--limit` samples of up to the protocol's
/// line bound could otherwise take gigabytes.
pub const MAX_KEPT_BYTES: usize = 64 * 1024 * 1024;
/// Characters of a message shown in the table.
const EXCERPT_CHARS: usize = 60;
/// Characters of an id shown in the table.
const ID_CHARS: usize = 48;
/// Fields whose text the table shows, the first present.
const MESSAGE_FIELDS: [&str; 3] = ["message", "explanation", "output"];

/// Output of `crucible samples`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Id, epoch, score, passed and an excerpt of the message.
    Table,
    /// A JSON array of the samples.
    Json,
    /// The samples' lines as stored (JSON Lines).
    Jsonl,
}

/// One sample kept for printing.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Sample id.
    pub id: String,
    /// Epoch.
    pub epoch: u32,
    /// Score.
    pub score: f64,
    /// Whether it passed.
    pub passed: bool,
    /// The line as stored.
    pub raw: Vec<u8>,
}

/// Worst first: lower score, then id, then epoch.
fn order(a: (f64, &str, u32), b: (f64, &str, u32)) -> Ordering {
    a.0.total_cmp(&b.0)
        .then_with(|| a.1.cmp(b.1))
        .then_with(|| a.2.cmp(&b.2))
}

impl Sample {
    fn key(&self) -> (f64, &str, u32) {
        (self.score, &self.id, self.epoch)
    }
}

impl PartialEq for Sample {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Sample {}
impl PartialOrd for Sample {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Sample {
    fn cmp(&self, other: &Self) -> Ordering {
        order(self.key(), other.key())
    }
}

/// The worst samples of a bundle, gathered line by line.
#[derive(Debug)]
pub struct Worst {
    limit: usize,
    failed_only: bool,
    /// A max-heap: its top is the best kept, the first to go.
    heap: BinaryHeap<Sample>,
    bytes: usize,
    over_budget: bool,
    matched: u64,
}

impl Worst {
    /// Keeps the `limit` worst samples (only failed ones with `failed_only`).
    pub fn new(limit: usize, failed_only: bool) -> Self {
        Worst {
            limit,
            failed_only,
            heap: BinaryHeap::new(),
            bytes: 0,
            over_budget: false,
            matched: 0,
        }
    }

    /// Takes the next sample line.
    pub fn offer(&mut self, line: Line<'_>) {
        if self.failed_only && line.passed {
            return;
        }
        self.matched += 1;
        if self.limit == 0 || self.over_budget {
            return;
        }
        if self.heap.len() == self.limit {
            // Only a line better placed than the best kept one is copied.
            let better = self.heap.peek().is_some_and(|top| {
                order((line.score, line.id, line.epoch), top.key()) == Ordering::Less
            });
            if !better {
                return;
            }
            if let Some(gone) = self.heap.pop() {
                self.bytes -= gone.raw.len();
            }
        }
        if self.bytes + line.raw.len() > MAX_KEPT_BYTES {
            self.over_budget = true;
            return;
        }
        self.bytes += line.raw.len();
        self.heap.push(Sample {
            id: line.id.to_string(),
            epoch: line.epoch,
            score: line.score,
            passed: line.passed,
            raw: line.raw.to_vec(),
        });
    }

    /// The kept samples, worst first, and how many matched the filter.
    ///
    /// # Errors
    /// The kept lines would exceed [`MAX_KEPT_BYTES`].
    pub fn finish(self) -> Result<(Vec<Sample>, u64), String> {
        if self.over_budget {
            return Err(format!(
                "the {} worst samples' lines are over {} MiB together: use a smaller --limit",
                self.limit,
                MAX_KEPT_BYTES / (1024 * 1024)
            ));
        }
        Ok((self.heap.into_sorted_vec(), self.matched))
    }
}

/// `text` with control characters (terminal escapes a sample could carry) shown as `�`, cut
/// to `chars` characters.
fn printable(text: &str, chars: usize) -> String {
    let mut out: String = text
        .chars()
        .take(chars)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    if text.chars().nth(chars).is_some() {
        out.push('…');
    }
    out
}

/// The first of [`MESSAGE_FIELDS`] the line has, shortened.
fn excerpt(raw: &[u8]) -> String {
    let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(raw) else {
        return String::new();
    };
    MESSAGE_FIELDS
        .iter()
        .find_map(|f| record.get(*f).and_then(Value::as_str))
        .map(|m| printable(m, EXCERPT_CHARS))
        .unwrap_or_default()
}

/// What the table's last line says about the whole bundle.
#[derive(Debug)]
pub struct Footer<'a> {
    /// Samples that matched the filter.
    pub matched: u64,
    /// Whether only failed samples were asked for.
    pub failed_only: bool,
    /// The bundle's statistics.
    pub stats: Option<&'a SamplesStatus>,
    /// The stored bundle's digest.
    pub digest: &'a str,
}

/// `samples` in `format`.
///
/// # Errors
/// A stored line that is not JSON (never for a validated bundle).
pub fn render(samples: &[Sample], format: Format, footer: &Footer<'_>) -> Result<String, String> {
    match format {
        Format::Jsonl => {
            let mut out = Vec::new();
            for s in samples {
                out.extend_from_slice(&s.raw);
                out.push(b'\n');
            }
            String::from_utf8(out).map_err(|e| format!("a stored line is not UTF-8: {e}"))
        }
        Format::Json => {
            let values = samples
                .iter()
                .map(|s| serde_json::from_slice::<Value>(&s.raw))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("a stored line is not JSON: {e}"))?;
            serde_json::to_string_pretty(&values)
                .map(|t| t + "\n")
                .map_err(|e| e.to_string())
        }
        Format::Table => Ok(table(samples, footer)),
    }
}

fn table(samples: &[Sample], footer: &Footer<'_>) -> String {
    let mut rows = vec![
        ["ID", "EPOCH", "SCORE", "PASSED", "MESSAGE"]
            .map(String::from)
            .to_vec(),
    ];
    for s in samples {
        rows.push(vec![
            printable(&s.id, ID_CHARS),
            s.epoch.to_string(),
            shown_number(s.score),
            s.passed.to_string(),
            excerpt(&s.raw),
        ]);
    }
    let mut out = if samples.is_empty() {
        String::new()
    } else {
        pad(&rows)
    };
    let which = if footer.failed_only {
        "failed samples"
    } else {
        "samples"
    };
    out.push_str(&format!(
        "{} of {} {which}, worst first",
        samples.len(),
        footer.matched
    ));
    if let Some(s) = footer.stats {
        out.push_str(&format!(
            "; bundle: {} samples, {} passed, mean {}",
            s.count,
            s.passed,
            s.shown()
        ));
    }
    out.push_str(&format!("; {}\n", footer.digest));
    out
}
