//! The samples protocol (DESIGN.md "Samples", docs/samples.md): a streaming validator of the
//! JSON Lines a run writes at `$CRUCIBLE_SAMPLES_PATH`. Pure.
//!
//! Bytes are pushed in chunks as they arrive (from a file, a log stream, an upload), so the
//! whole file is never held: memory is one line (bounded by [`Limits::max_line_len`], checked
//! before the line buffer grows) plus one small aggregate per distinct sample id (bounded by
//! [`Limits::max_ids`]). What the statistics need (per id: sum of scores and count over epochs)
//! is kept; the records themselves go on to the store.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::crd::bounds::shown;
use crate::crd::samples::MAX_EPOCHS;

/// Longest sample id, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Most `metrics` in one record.
pub const MAX_SAMPLE_METRICS: usize = 64;
/// Longest metric name, in bytes.
pub const MAX_METRIC_NAME_LEN: usize = 256;
/// Longest `input`, `target` or `output`, in bytes.
pub const MAX_TEXT_LEN: usize = 64 * 1024;
/// Longest `metadata`, serialized, in bytes.
pub const MAX_METADATA_LEN: usize = 16 * 1024;

/// Bounds of one run's samples file: controller flags (`--samples-max-*`), in the config.
pub use crate::config::SampleLimits as Limits;

/// Why a samples file is refused: the 1-based line and what was wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("samples line {line}: {problem}")]
pub struct ProtocolError {
    /// 1-based line number.
    pub line: u64,
    /// What was wrong.
    pub problem: String,
}

/// 128 bits of sha256 of a sample id: ids are matched across runs by it, and a fixed-size key
/// keeps the memory per id small whatever the ids' lengths.
pub type IdKey = [u8; 16];

/// The key of sample id `id`.
pub fn id_key(id: &str) -> IdKey {
    let digest = Sha256::digest(id.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// What the statistics need of one sample id, in 24 bytes: with its key and the map's own
/// byte, 41 bytes an id (the most ids a run may have are kept in memory at once).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IdAggregate {
    /// Sum of the scores over its epochs.
    pub sum: f64,
    /// Bits 0–99: bit `e` set once epoch `e` was seen (epochs are at most 100, so the count
    /// of records is how many are set); bits 100–127: how many of them passed. Two words, not
    /// a `u128`, whose alignment would pad the aggregate to 32 bytes.
    seen: [u64; 2],
}

/// Bits of [`IdAggregate`]'s epochs; the bits above count the records that passed.
const EPOCH_BITS: u32 = 100;
const _: () = assert!(MAX_EPOCHS as u32 <= EPOCH_BITS);

impl IdAggregate {
    fn bits(&self) -> u128 {
        u128::from(self.seen[0]) | (u128::from(self.seen[1]) << 64)
    }

    fn epochs(&self) -> u128 {
        self.bits() & ((1u128 << EPOCH_BITS) - 1)
    }

    /// Records (epochs seen).
    pub fn count(&self) -> u32 {
        self.epochs().count_ones()
    }

    /// Records that passed.
    pub fn passed(&self) -> u32 {
        // At most 100: fits.
        u32::try_from(self.bits() >> EPOCH_BITS).unwrap_or(u32::MAX)
    }

    /// The id's mean score over its epochs.
    pub fn mean(&self) -> f64 {
        self.sum / f64::from(self.count().max(1))
    }

    /// Adds the record of `epoch` (below [`EPOCH_BITS`]); false when that epoch was seen.
    fn add(&mut self, epoch: u32, score: f64, passed: bool) -> bool {
        let bit = 1u128 << epoch;
        if self.epochs() & bit != 0 {
            return false;
        }
        let bits = self.bits() | bit;
        let bits = bits + (u128::from(passed) << EPOCH_BITS);
        // Truncation is the split into the two words.
        self.seen = [bits as u64, (bits >> 64) as u64];
        self.sum += score;
        true
    }
}

/// A validated samples file, reduced for the statistics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Aggregates {
    /// Records (lines with a sample).
    pub records: u64,
    /// Records that passed.
    pub passed: u64,
    /// Per sample id.
    pub ids: HashMap<IdKey, IdAggregate>,
}

/// One line of the protocol. Unknown fields are allowed (and bounded by the line length), so a
/// harness may add its own.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    score: Option<f64>,
    #[serde(default)]
    passed: Option<bool>,
    #[serde(default)]
    epoch: Option<u64>,
    #[serde(borrow, default)]
    metrics: Option<BTreeMap<std::borrow::Cow<'a, str>, f64>>,
    #[serde(borrow, default)]
    input: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    target: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    output: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

/// One valid sample line, as [`Validator::push_with`] hands it on.
#[derive(Clone, Copy, Debug)]
pub struct Line<'a> {
    /// Its sample id.
    pub id: &'a str,
    /// Its epoch (0 when the line has none).
    pub epoch: u32,
    /// Its score.
    pub score: f64,
    /// Whether it passed (`passed`, else `score >= pass_threshold`).
    pub passed: bool,
    /// The line as stored, without its newline.
    pub raw: &'a [u8],
}

/// Validates a samples file pushed in chunks of any size.
#[derive(Debug)]
pub struct Validator {
    limits: Limits,
    epochs: u32,
    /// A stored bundle read back without its run's spec: any epoch below the most, and a line
    /// without one is epoch 0.
    epochs_unknown: bool,
    pass_threshold: f64,
    /// The current line's bytes so far, when it spans chunks.
    pending: Vec<u8>,
    lines: u64,
    bytes: u64,
    aggregates: Aggregates,
}

impl Validator {
    /// A validator for a run with `epochs` epochs (1 to 100); a record without `passed` passes
    /// when `score >= pass_threshold`, as a result without `passed` does.
    pub fn new(limits: Limits, epochs: u32, pass_threshold: f64) -> Self {
        Validator {
            limits,
            epochs: epochs.clamp(1, MAX_EPOCHS.unsigned_abs()),
            epochs_unknown: false,
            pass_threshold,
            pending: Vec::new(),
            lines: 0,
            bytes: 0,
            aggregates: Aggregates::default(),
        }
    }

    /// A validator for a stored bundle whose run's epochs are not known (`crucible samples
    /// --bundle`): epochs up to the most allowed, a line without one counting as epoch 0.
    pub fn reading(limits: Limits, pass_threshold: f64) -> Self {
        Validator {
            epochs_unknown: true,
            ..Validator::new(limits, MAX_EPOCHS.unsigned_abs(), pass_threshold)
        }
    }

    /// Takes the next bytes of the file.
    ///
    /// # Errors
    /// The first line that breaks the protocol or a bound; the validator must not be used after.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ProtocolError> {
        self.push_with(chunk, &mut |_| {})
    }

    /// As [`Validator::push`], handing each valid sample line to `on_line`.
    ///
    /// # Errors
    /// As [`Validator::push`].
    pub fn push_with(
        &mut self,
        mut chunk: &[u8],
        on_line: &mut impl FnMut(Line<'_>),
    ) -> Result<(), ProtocolError> {
        self.bytes = self.bytes.saturating_add(chunk.len() as u64);
        if self.bytes > self.limits.max_bytes {
            return Err(self.error(
                self.lines + 1,
                format!("the file is over {} bytes", self.limits.max_bytes),
            ));
        }
        while let Some(end) = memchr::memchr(b'\n', chunk) {
            self.check_line_len(end)?;
            if self.pending.is_empty() {
                self.line(&chunk[..end], on_line)?;
            } else {
                self.pending.extend_from_slice(&chunk[..end]);
                let line = std::mem::take(&mut self.pending);
                self.line(&line, on_line)?;
                // Keep the buffer's allocation for the next long line.
                self.pending = line;
                self.pending.clear();
            }
            chunk = &chunk[end + 1..];
        }
        self.check_line_len(chunk.len())?;
        self.pending.extend_from_slice(chunk);
        Ok(())
    }

    /// Ends the file (a last line without a newline counts).
    ///
    /// # Errors
    /// As [`Validator::push`], for the last line.
    pub fn finish(self) -> Result<Aggregates, ProtocolError> {
        self.finish_with(&mut |_| {})
    }

    /// As [`Validator::finish`], handing the last line to `on_line`.
    ///
    /// # Errors
    /// As [`Validator::push`], for the last line.
    pub fn finish_with(
        mut self,
        on_line: &mut impl FnMut(Line<'_>),
    ) -> Result<Aggregates, ProtocolError> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.line(&line, on_line)?;
        }
        Ok(self.aggregates)
    }

    /// Refuses the current line before it grows past the bound by `more` bytes.
    fn check_line_len(&self, more: usize) -> Result<(), ProtocolError> {
        if self.pending.len().saturating_add(more) > self.limits.max_line_len {
            return Err(self.error(
                self.lines + 1,
                format!("the line is over {} bytes", self.limits.max_line_len),
            ));
        }
        Ok(())
    }

    fn error(&self, line: u64, problem: String) -> ProtocolError {
        ProtocolError { line, problem }
    }

    /// Validates and aggregates one complete line.
    fn line(
        &mut self,
        bytes: &[u8],
        on_line: &mut impl FnMut(Line<'_>),
    ) -> Result<(), ProtocolError> {
        self.lines += 1;
        let n = self.lines;
        if n > self.limits.max_lines {
            return Err(self.error(n, format!("more than {} lines", self.limits.max_lines)));
        }
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let record: Record<'_> =
            serde_json::from_slice(bytes).map_err(|e| self.error(n, json_problem(bytes, &e)))?;
        let (key, epoch, passed, score) = self
            .check(&record)
            .map_err(|problem| self.error(n, problem))?;
        let known = self.aggregates.ids.len();
        let max_ids = self.limits.max_ids;
        let entry = match self.aggregates.ids.get_mut(&key) {
            Some(entry) => entry,
            None if known >= max_ids => {
                return Err(self.error(n, format!("more than {max_ids} distinct sample ids")));
            }
            None => self.aggregates.ids.entry(key).or_default(),
        };
        if !entry.add(epoch, score, passed) {
            let id = record.id.as_deref().unwrap_or_default();
            return Err(self.error(
                n,
                format!("sample {} epoch {epoch} appears twice", shown(id)),
            ));
        }
        self.aggregates.records += 1;
        self.aggregates.passed += u64::from(passed);
        on_line(Line {
            id: record.id.as_deref().unwrap_or_default(),
            epoch,
            score,
            passed,
            raw: bytes,
        });
        Ok(())
    }

    /// The record's id key, epoch, passed and score, or what is wrong with it.
    fn check(&self, record: &Record<'_>) -> Result<(IdKey, u32, bool, f64), String> {
        let id = match record.id.as_deref() {
            None => return Err("id is missing".into()),
            Some("") => return Err("id is empty".into()),
            Some(id) if id.len() > MAX_ID_LEN => {
                return Err(format!("id is over {MAX_ID_LEN} bytes"));
            }
            Some(id) => id,
        };
        let score = record.score.ok_or("score is missing")?;
        let epoch = match record.epoch {
            None if self.epochs > 1 && !self.epochs_unknown => {
                return Err(format!(
                    "epoch is missing (the run has {} epochs)",
                    self.epochs
                ));
            }
            None => 0,
            Some(e) if e >= u64::from(self.epochs) => {
                return Err(format!(
                    "epoch {e} is out of range: the run has {} epochs, numbered from 0",
                    self.epochs
                ));
            }
            Some(e) => e as u32,
        };
        if let Some(metrics) = &record.metrics {
            if metrics.len() > MAX_SAMPLE_METRICS {
                return Err(format!("more than {MAX_SAMPLE_METRICS} metrics"));
            }
            if let Some(name) = metrics.keys().find(|k| k.len() > MAX_METRIC_NAME_LEN) {
                return Err(format!(
                    "metric name {} is over {MAX_METRIC_NAME_LEN} bytes",
                    shown(name)
                ));
            }
        }
        for (field, text) in [
            ("input", &record.input),
            ("target", &record.target),
            ("output", &record.output),
        ] {
            if text.as_ref().is_some_and(|t| t.len() > MAX_TEXT_LEN) {
                return Err(format!("{field} is over {MAX_TEXT_LEN} bytes"));
            }
        }
        match &record.metadata {
            None | Some(serde_json::Value::Null) => {}
            Some(m @ serde_json::Value::Object(_)) => {
                if crate::crd::bounds::json_len(m) > MAX_METADATA_LEN {
                    return Err(format!("metadata is over {MAX_METADATA_LEN} bytes"));
                }
            }
            Some(_) => return Err("metadata must be an object".into()),
        }
        let passed = record.passed.unwrap_or(score >= self.pass_threshold);
        Ok((id_key(id), epoch, passed, score))
    }
}

/// A parse error as a user reads it: the column, and a plain word for NaN and Infinity (which
/// JSON does not have; serde_json calls them "expected value").
fn json_problem(line: &[u8], e: &serde_json::Error) -> String {
    let message = e.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(m, _)| m);
    let from = e.column().saturating_sub(2).min(line.len());
    let near = &line[from..line.len().min(from + 10)];
    let non_finite = [&b"NaN"[..], b"Infinity"]
        .iter()
        .any(|t| near.windows(t.len()).any(|w| w == *t));
    if non_finite {
        format!(
            "column {}: numbers must be finite (NaN and Infinity are not JSON)",
            e.column()
        )
    } else {
        format!("column {}: invalid JSON: {message}", e.column())
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
