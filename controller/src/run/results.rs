//! The results protocol: parsing what an evaluation reports, and scanning its log. Pure.
//!
//! A result is one JSON object, written to the termination-message file (at most 4 KiB, cut by
//! the kubelet) or printed on a stdout line starting with `CRUCIBLE_RESULT ` (at most 64 KiB).
//! Anything that is not exactly the documented shape is refused with a message that says what
//! was wrong: the run then ends as Failed with reason InvalidResult.

use std::collections::{BTreeMap, VecDeque};

use crate::crd::bounds::{MAX_METRICS, MAX_SUMMARY};
use crate::crd::evaluation::EvaluationResult;
use crate::digest::sha256_hex;

/// Default `passThreshold`.
pub const DEFAULT_PASS_THRESHOLD: f64 = 0.5;

/// Prefix of the stdout line that carries a result.
pub const RESULT_PREFIX: &str = "CRUCIBLE_RESULT ";
/// Largest result printed on stdout (after the prefix).
pub const RESULT_LINE_MAX: usize = 64 * 1024;
/// Largest termination message the kubelet keeps; a message of this size may have been cut.
pub const TERMINATION_MESSAGE_MAX: usize = 4096;
/// Bytes of output kept in `status.logTail`.
pub const LOG_TAIL_BYTES: usize = 4096;
/// Most bytes of a log searched for the result line, and of one log read (`limitBytes`): the
/// window is the longest run of whole lines at the end of the log that fits in it. The kubelet
/// cuts a read at this many bytes from the *start* of what it returns, so a read that comes
/// back this long lost its end.
pub const LOG_WINDOW_BYTES: u64 = 16 * 1024 * 1024;
/// A complete read of at least this many bytes ends the search: a result line in the last
/// 8 MiB of a log is always found.
pub const LOG_WINDOW_MIN: u64 = 8 * 1024 * 1024;
/// Lines of a log asked for first: most logs are read whole, at once.
const LOG_READ_LINES: i64 = 1000;
/// Most reads of one log (each at most [`LOG_WINDOW_BYTES`]).
const LOG_READS_MAX: u32 = 16;
/// More lines than a window can hold: every line has at least its newline.
const LOG_LINES_MAX: i64 = LOG_WINDOW_BYTES as i64 + 1;
/// Longest metric name.
const MAX_METRIC_NAME: usize = 128;

/// A valid result as the evaluation reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reported {
    /// Finite score.
    pub score: f64,
    /// `passed`, if the evaluation said so itself.
    pub passed: Option<bool>,
    /// Finite metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Summary.
    pub summary: Option<String>,
    /// `sha256:<hex>` of the JSON bytes.
    pub digest: String,
}

impl Reported {
    /// The status result: `passed` as reported, else `score >= threshold`.
    pub fn into_result(self, threshold: f64) -> EvaluationResult {
        EvaluationResult {
            passed: self.passed.unwrap_or(self.score >= threshold),
            score: self.score,
            metrics: self.metrics,
            summary: self.summary,
        }
    }
}

/// Parses one result object.
///
/// # Errors
/// A sentence saying what is wrong with the result.
pub fn parse(bytes: &[u8]) -> Result<Reported, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("result is not UTF-8: {e}"))?;
    let trimmed = text.trim();
    let value: serde_json::Value = serde_json::from_str(trimmed)
        .map_err(|e| format!("result is not valid JSON (NaN and Infinity are not JSON): {e}"))?;
    let serde_json::Value::Object(object) = value else {
        return Err(format!(
            "result must be a JSON object, got {}",
            kind(&value)
        ));
    };
    let mut score = None;
    let mut passed = None;
    let mut metrics = BTreeMap::new();
    let mut summary = None;
    for (key, value) in object {
        match key.as_str() {
            "score" => score = Some(finite("score", &value)?),
            "passed" => {
                passed = Some(
                    value
                        .as_bool()
                        .ok_or_else(|| format!("passed must be a boolean, got {}", kind(&value)))?,
                )
            }
            "summary" => {
                let s = value
                    .as_str()
                    .ok_or_else(|| format!("summary must be a string, got {}", kind(&value)))?;
                if s.len() > MAX_SUMMARY {
                    return Err(format!(
                        "summary has {} bytes, at most {MAX_SUMMARY} allowed",
                        s.len()
                    ));
                }
                summary = Some(s.to_string());
            }
            "metrics" => {
                let serde_json::Value::Object(m) = value else {
                    return Err(format!("metrics must be an object, got {}", kind(&value)));
                };
                if m.len() > MAX_METRICS {
                    return Err(format!(
                        "metrics has {} entries, at most {MAX_METRICS} allowed",
                        m.len()
                    ));
                }
                for (name, v) in m {
                    if name.is_empty() || name.len() > MAX_METRIC_NAME {
                        return Err(format!(
                            "metric names must have 1 to {MAX_METRIC_NAME} bytes"
                        ));
                    }
                    let number = finite(&format!("metrics.{name}"), &v)?;
                    metrics.insert(name, number);
                }
            }
            other => {
                return Err(format!(
                    "unexpected key {other:?}: a result has only score, passed, metrics and summary"
                ));
            }
        }
    }
    let score = score.ok_or("result has no score")?;
    Ok(Reported {
        score,
        passed,
        metrics,
        summary,
        digest: format!("sha256:{}", sha256_hex(trimmed.as_bytes())),
    })
}

fn finite(field: &str, value: &serde_json::Value) -> Result<f64, String> {
    match value.as_f64() {
        Some(n) if n.is_finite() => Ok(n),
        Some(_) => Err(format!("{field} must be a finite number")),
        None => Err(format!("{field} must be a number, got {}", kind(value))),
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Where a result came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// `$CRUCIBLE_RESULT_PATH`.
    TerminationMessage,
    /// The `CRUCIBLE_RESULT ` stdout line.
    Stdout,
}

/// How the message of a run that wrote no result starts (a result may then be derived from its
/// samples).
pub const NO_RESULT: &str = "no result: ";

/// Picks and parses the result of a container that exited: the termination message when it
/// is not empty, else the last `CRUCIBLE_RESULT ` line of the log.
///
/// # Errors
/// Why there is no valid result.
pub fn select(
    termination_message: Option<&str>,
    log: Option<&LogCapture>,
) -> Result<(Reported, Channel), String> {
    if let Some(message) = termination_message.filter(|m| !m.trim().is_empty()) {
        if message.len() >= TERMINATION_MESSAGE_MAX {
            return Err(format!(
                "the result file has {} bytes or more, at most {} allowed (print larger results on a CRUCIBLE_RESULT line)",
                TERMINATION_MESSAGE_MAX,
                TERMINATION_MESSAGE_MAX - 1
            ));
        }
        return parse(message.as_bytes()).map(|r| (r, Channel::TerminationMessage));
    }
    match log.and_then(|l| l.result_line.as_ref()) {
        Some(ResultLine::Oversized) => Err(format!(
            "the CRUCIBLE_RESULT line is longer than {RESULT_LINE_MAX} bytes"
        )),
        Some(ResultLine::Json(bytes)) => parse(bytes).map(|r| (r, Channel::Stdout)),
        None => Err(format!(
            "{NO_RESULT}nothing was written to $CRUCIBLE_RESULT_PATH and no stdout line starts with `CRUCIBLE_RESULT `{}",
            log.map(LogCapture::window).unwrap_or_default()
        )),
    }
}

/// `n` bytes for people: `512 bytes`, `3.5 KiB`, `12.0 MiB`.
fn human_bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    match n as f64 {
        b if b >= KIB * KIB => format!("{:.1} MiB", b / (KIB * KIB)),
        b if b >= KIB => format!("{:.1} KiB", b / KIB),
        _ => format!("{n} bytes"),
    }
}

/// The last result line of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResultLine {
    /// The bytes after the prefix.
    Json(Vec<u8>),
    /// The line was longer than [`RESULT_LINE_MAX`].
    Oversized,
}

/// What the controller keeps of a container's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogCapture {
    /// The last [`LOG_TAIL_BYTES`] bytes, as text (invalid UTF-8 replaced).
    pub tail: String,
    /// The last line starting with [`RESULT_PREFIX`].
    pub result_line: Option<ResultLine>,
    /// Bytes of the log scanned: its end, as whole lines.
    pub searched: u64,
    /// The scanned bytes are the whole log.
    pub whole: bool,
    /// The log could not be read: `tail` says why.
    pub unread: bool,
}

impl LogCapture {
    /// What is kept of a log that could not be read: the reason, as the tail.
    pub fn unavailable(error: &impl std::fmt::Display) -> Self {
        LogCapture {
            tail: format!("(log unavailable: {error})"),
            unread: true,
            ..LogCapture::default()
        }
    }

    /// Which part of the log was searched, for a message that says no result line was there.
    fn window(&self) -> String {
        match (self.whole, self.searched) {
            (true, n) => format!(" in the whole log ({})", human_bytes(n)),
            (false, 0) => " (the log could not be read)".into(),
            (false, n) => format!(
                " in the last {} of the log (whole lines from its end, up to {}: an earlier result line is not read)",
                human_bytes(n),
                human_bytes(LOG_WINDOW_BYTES)
            ),
        }
    }
}

/// Streams a log through bounded memory: keeps the tail and the last result line.
#[derive(Debug, Default)]
pub struct LogScanner {
    tail: VecDeque<u8>,
    line: Vec<u8>,
    line_len: usize,
    result_line: Option<ResultLine>,
    fed: u64,
}

impl LogScanner {
    const LINE_KEEP: usize = RESULT_PREFIX.len() + RESULT_LINE_MAX + 1;

    /// Feeds the next bytes of the log.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.fed = self.fed.saturating_add(chunk.len() as u64);
        let keep_from = chunk.len().saturating_sub(LOG_TAIL_BYTES);
        self.tail.extend(&chunk[keep_from..]);
        let excess = self.tail.len().saturating_sub(LOG_TAIL_BYTES);
        self.tail.drain(..excess);
        let mut rest = chunk;
        while !rest.is_empty() {
            let (part, ended) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            self.keep(part);
            self.line_len += part.len();
            rest = &rest[(part.len() + usize::from(ended)).min(rest.len())..];
            if ended {
                self.end_line();
            }
        }
    }

    /// Keeps the start of the current line, and all of it (up to the limit) only when it is a
    /// result line: ordinary output is never copied beyond the prefix length.
    fn keep(&mut self, mut part: &[u8]) {
        let prefix = RESULT_PREFIX.as_bytes();
        if self.line.len() < prefix.len() {
            let n = part.len().min(prefix.len() - self.line.len());
            self.line.extend_from_slice(&part[..n]);
            part = &part[n..];
        }
        if !part.is_empty() && self.line.starts_with(prefix) {
            let room = Self::LINE_KEEP.saturating_sub(self.line.len());
            self.line.extend_from_slice(&part[..part.len().min(room)]);
        }
    }

    fn end_line(&mut self) {
        let mut line = std::mem::take(&mut self.line);
        let mut len = std::mem::take(&mut self.line_len);
        if line.last() == Some(&b'\r') {
            line.pop();
            len -= 1;
        }
        if let Some(json) = line.strip_prefix(RESULT_PREFIX.as_bytes()) {
            // `line` keeps at most LINE_KEEP bytes; `len` is the real length.
            self.result_line = Some(if len - RESULT_PREFIX.len() > RESULT_LINE_MAX {
                ResultLine::Oversized
            } else {
                ResultLine::Json(json.to_vec())
            });
        }
    }

    /// The capture of everything fed so far, as a whole log (a caller that fed only the end of
    /// one clears [`LogCapture::whole`]).
    pub fn finish(mut self) -> LogCapture {
        if self.line_len > 0 {
            self.end_line();
        }
        let tail: Vec<u8> = self.tail.into_iter().collect();
        LogCapture {
            tail: String::from_utf8_lossy(&tail).into_owned(),
            result_line: self.result_line,
            searched: self.fed,
            whole: true,
            unread: false,
        }
    }
}

/// Which `tailLines` to read a log with, so that the result line is looked for in a window of
/// whole lines at the end of the log of up to [`LOG_WINDOW_BYTES`]. Pure; the caller does the
/// reads (each with `limitBytes` = [`LOG_WINDOW_BYTES`], streamed through a [`LogScanner`]).
///
/// Only a complete read (its end is the log's true end) is kept. The search stops at a complete
/// read that holds a result line (the last one of the log), that is the whole log, or that has
/// at least [`LOG_WINDOW_MIN`] bytes. Until a read is cut, the lines grow by the factor that
/// would fill three quarters of the window at the bytes per line seen; after, they are bisected
/// between the most lines that fit and the fewest that did not. Only a single line over the
/// window (a runtime that does not split lines; containerd splits at 16 KiB) leaves a cut read,
/// the best there is. At most [`LOG_READS_MAX`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailSearch {
    /// Lines to ask for next.
    lines: i64,
    /// Most lines known to fit (0: none yet), and their bytes.
    fits: i64,
    fits_bytes: Option<u64>,
    /// Fewest lines known not to fit.
    too_many: Option<i64>,
    /// Reads recorded.
    reads: u32,
}

/// What to do with a read of [`TailSearch::lines`] lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailVerdict {
    /// This read is the best so far: keep its capture.
    pub keep: bool,
    /// This read is the whole log.
    pub whole: bool,
    /// Read again with this many lines; `None`: stop with the kept capture.
    pub next: Option<i64>,
}

impl Default for TailSearch {
    fn default() -> Self {
        TailSearch {
            lines: LOG_READ_LINES,
            fits: 0,
            fits_bytes: None,
            too_many: None,
            reads: 0,
        }
    }
}

impl TailSearch {
    /// Lines to ask for now.
    pub fn lines(&self) -> i64 {
        self.lines
    }

    /// Records that the read of [`Self::lines`] returned `received` bytes, and whether they held
    /// a result line.
    pub fn record(&mut self, received: u64, found: bool) -> TailVerdict {
        self.reads += 1;
        let cut = received >= LOG_WINDOW_BYTES;
        // Fewer bytes than lines asked for, or more lines bringing no more bytes: the log has no
        // more lines than that.
        let whole =
            !cut && (received < self.lines.unsigned_abs() || self.fits_bytes == Some(received));
        if cut {
            self.too_many = Some(self.lines);
        } else {
            self.fits = self.lines;
            self.fits_bytes = Some(received);
        }
        // A single line over the limit cannot be read whole: keep what came.
        let keep = !cut || self.lines <= 1;
        let settled = if cut {
            self.lines <= 1
        } else {
            found || whole || received >= LOG_WINDOW_MIN
        };
        let next = match self.too_many {
            _ if settled || self.reads >= LOG_READS_MAX => None,
            None => Some(grown(self.lines, received)),
            Some(too_many) if too_many - self.fits <= 1 => None,
            Some(too_many) => Some(self.fits + (too_many - self.fits) / 2),
        };
        if let Some(lines) = next {
            self.lines = lines;
        }
        TailVerdict { keep, whole, next }
    }
}

/// Lines to ask for after `lines` came back complete as `received` bytes: enough to fill three
/// quarters of the window at that many bytes per line, at least twice as many.
fn grown(lines: i64, received: u64) -> i64 {
    let factor = (LOG_WINDOW_BYTES / 4 * 3 / received.max(1)).max(2);
    lines
        .saturating_mul(i64::try_from(factor).unwrap_or(i64::MAX))
        .min(LOG_LINES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> LogCapture {
        let mut s = LogScanner::default();
        chunks.iter().for_each(|c| s.feed(c));
        s.finish()
    }

    #[test]
    fn good_results_parse() {
        let r = parse(br#"{"score": 0.93, "passed": true, "metrics": {"accuracy": 0.93, "n": 100}, "summary": "ok"}"#)
            .expect("valid");
        assert_eq!(r.score, 0.93);
        assert_eq!(r.passed, Some(true));
        assert_eq!(r.metrics["n"], 100.0);
        assert_eq!(r.summary.as_deref(), Some("ok"));
        assert!(r.digest.starts_with("sha256:"));
        let minimal = parse(b" {\"score\": 1}\n").expect("valid");
        assert_eq!(minimal.passed, None);
        assert!(minimal.into_result(0.5).passed);
    }

    #[test]
    fn hostile_results_are_refused_with_a_reason() {
        let five_kib = format!(r#"{{"score": 1, "summary": "{}"}}"#, "x".repeat(5 * 1024));
        let many_metrics = format!(
            r#"{{"score": 1, "metrics": {{{}}}}}"#,
            (0..65)
                .map(|i| format!("\"m{i}\": 1"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let cases: Vec<(&[u8], &str)> = vec![
            (b"{\"score\": NaN}", "not valid JSON"),
            (b"{\"score\": Infinity}", "not valid JSON"),
            (b"{\"score\": 1e400}", "not valid JSON"),
            (b"{\"score\": \"0.9\"}", "score must be a number"),
            (b"{\"score\": null}", "score must be a number"),
            (b"{\"passed\": true}", "no score"),
            (
                b"{\"score\": 1, \"metrics\": {\"a\": {\"b\": 1}}}",
                "metrics.a must be a number",
            ),
            (
                b"{\"score\": 1, \"metrics\": [1]}",
                "metrics must be an object",
            ),
            (
                b"{\"score\": 1, \"passed\": \"yes\"}",
                "passed must be a boolean",
            ),
            (b"{\"score\": 1, \"extra\": 1}", "unexpected key \"extra\""),
            (b"[1, 2]", "must be a JSON object"),
            (b"0.9", "must be a JSON object"),
            (b"\xff\xfe{\"score\": 1}", "not UTF-8"),
            (b"", "not valid JSON"),
            (five_kib.as_bytes(), "summary has"),
            (many_metrics.as_bytes(), "metrics has 65 entries"),
        ];
        for (input, expected) in cases {
            let err = parse(input).expect_err(&String::from_utf8_lossy(input));
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn reported_passed_wins_over_the_threshold() {
        let r = parse(br#"{"score": 0.1, "passed": true}"#).expect("valid");
        assert!(r.into_result(0.5).passed);
        let r = parse(br#"{"score": 0.4}"#).expect("valid");
        assert!(!r.into_result(0.5).passed);
    }

    #[test]
    fn scanner_keeps_the_last_result_line_and_a_bounded_tail() {
        let log = scan(&[
            b"starting\nCRUCIBLE_RESULT {\"score\": 0}\nwork ",
            b"done\nCRUCIBLE_RESULT {\"sc",
            b"ore\": 1}\r\ntrailing stderr\n",
        ]);
        assert_eq!(
            log.result_line,
            Some(ResultLine::Json(b"{\"score\": 1}".to_vec()))
        );
        assert!(log.tail.ends_with("trailing stderr\n"));

        let mut big = LogScanner::default();
        for _ in 0..100 {
            big.feed(&[b'x'; 1000]);
            big.feed(b"\n");
        }
        let log = big.finish();
        assert_eq!(log.tail.len(), LOG_TAIL_BYTES);
        assert_eq!(log.result_line, None);
    }

    #[test]
    fn scanner_flags_oversized_result_lines_and_reads_unterminated_ones() {
        let huge = format!("{RESULT_PREFIX}{}", "1".repeat(RESULT_LINE_MAX + 10));
        let log = scan(&[huge.as_bytes()]);
        assert_eq!(log.result_line, Some(ResultLine::Oversized));
        let log = scan(&[b"CRUCIBLE_RESULT {\"score\": 2}"]);
        assert_eq!(
            log.result_line,
            Some(ResultLine::Json(b"{\"score\": 2}".to_vec()))
        );
    }

    /// A log as runs of identical lines (each with its `\n`), so 200 MB cost nothing.
    struct FakeLog(Vec<(usize, Vec<u8>)>);

    impl FakeLog {
        /// What the kubelet returns for `tailLines = tail, limitBytes = LOG_WINDOW_BYTES`: the
        /// last `tail` lines, cut after the limit from their start.
        fn serve(&self, tail: i64) -> Vec<u8> {
            let mut want = usize::try_from(tail).expect("positive");
            let mut window = Vec::new();
            for (count, line) in self.0.iter().rev() {
                let n = (*count).min(want);
                window.push((n, line));
                want -= n;
                if want == 0 {
                    break;
                }
            }
            let limit = usize::try_from(LOG_WINDOW_BYTES).expect("positive");
            let mut out = Vec::new();
            for (n, line) in window.into_iter().rev() {
                for _ in 0..n {
                    if out.len() >= limit {
                        return out;
                    }
                    out.extend_from_slice(&line[..line.len().min(limit - out.len())]);
                }
            }
            out
        }

        /// The true last `n` bytes.
        fn last_bytes(&self, n: usize) -> Vec<u8> {
            let mut out: Vec<u8> = Vec::new();
            for (count, line) in self.0.iter().rev() {
                for _ in 0..*count {
                    if out.len() >= n {
                        break;
                    }
                    out.splice(0..0, line.iter().copied());
                }
            }
            out[out.len().saturating_sub(n)..].to_vec()
        }

        fn total(&self) -> usize {
            self.0.iter().map(|(c, l)| c * l.len()).sum()
        }
    }

    /// Runs the search against `log` the way `observe::read_log` does; the capture and the
    /// number of reads.
    fn read_from_end(log: &FakeLog) -> (LogCapture, usize) {
        let mut search = TailSearch::default();
        let (mut kept, mut reads) = (None, 0);
        loop {
            reads += 1;
            let bytes = log.serve(search.lines());
            let capture = scan(&[&bytes]);
            let verdict = search.record(bytes.len() as u64, capture.result_line.is_some());
            if verdict.keep {
                kept = Some(LogCapture {
                    whole: verdict.whole,
                    ..capture
                });
            }
            if verdict.next.is_none() {
                return (kept.expect("a read is always kept"), reads);
            }
        }
    }

    fn line(fill: u8, len: usize) -> Vec<u8> {
        let mut l = vec![fill; len - 1];
        l.push(b'\n');
        l
    }

    #[test]
    fn the_result_line_and_true_tail_survive_any_log_size() {
        let result = format!(
            "{RESULT_PREFIX}{{\"score\": 0.5, \"summary\": \"{}\"}}\n",
            "s".repeat(1000)
        );
        let json_of = |line: &str| {
            Some(ResultLine::Json(
                line.trim_end().as_bytes()[RESULT_PREFIX.len()..].to_vec(),
            ))
        };
        let result_line = || json_of(&result);
        let biggest = format!(
            "{RESULT_PREFIX}{{\"score\": 1, \"summary\": \"{}\"}}\n",
            " ".repeat(RESULT_LINE_MAX - 40)
        );
        let mb200 = 200 * 1024 * 1024;
        let logs = [
            // 200 MB of short lines, the result, a last word.
            (
                FakeLog(vec![
                    (mb200 / 100, line(b'x', 100)),
                    (1, result.clone().into_bytes()),
                    (1, b"bye\n".to_vec()),
                ]),
                result_line(),
            ),
            // 200 MB of 16 KiB lines (containerd's split size).
            (
                FakeLog(vec![
                    (mb200 / 16384, line(b'y', 16384)),
                    (1, result.clone().into_bytes()),
                ]),
                result_line(),
            ),
            // Long lines, then hundreds of empty ones after the result: the tail still reaches
            // back into the long lines.
            (
                FakeLog(vec![
                    (20_000, line(b'z', 16384)),
                    (1, result.clone().into_bytes()),
                    (600, b"\n".to_vec()),
                ]),
                result_line(),
            ),
            // The largest result line allowed, last.
            (
                FakeLog(vec![
                    (100_000, line(b'w', 4000)),
                    (1, biggest.clone().into_bytes()),
                ]),
                json_of(&biggest),
            ),
            // A short log is read whole, at once.
            (
                FakeLog(vec![
                    (1, b"hello\n".to_vec()),
                    (1, result.clone().into_bytes()),
                ]),
                result_line(),
            ),
        ];
        for (i, (log, expected)) in logs.iter().enumerate() {
            let (capture, reads) = read_from_end(log);
            assert_eq!(&capture.result_line, expected, "log {i}");
            let tail = log.last_bytes(LOG_TAIL_BYTES.min(log.total()));
            assert_eq!(capture.tail.as_bytes(), &tail[..], "log {i}");
            assert!(reads <= LOG_READS_MAX as usize, "log {i}: {reads} reads");
            if log.total() < 1024 * 1024 {
                assert_eq!(reads, 1, "log {i}");
            }
        }
    }

    #[test]
    fn a_result_followed_by_more_output_is_found_within_the_window() {
        let result = format!("{RESULT_PREFIX}{{\"score\": 0.75}}\n");
        let expected = Some(ResultLine::Json(b"{\"score\": 0.75}".to_vec()));
        let mib = 1024 * 1024;
        // The run of issue 22: the result, then 1,500 lines of teardown.
        let teardown = FakeLog(vec![
            (200, line(b'a', 80)),
            (1, result.clone().into_bytes()),
            (1500, line(b't', 60)),
        ]);
        let (capture, reads) = read_from_end(&teardown);
        assert_eq!(capture.result_line, expected);
        assert!(capture.whole, "{capture:?}");
        assert_eq!(capture.searched, teardown.total() as u64);
        assert_eq!(reads, 2);
        // 7.5 MiB of output after the result, in long lines: still inside the window.
        let far = FakeLog(vec![
            (100_000, line(b'b', 100)),
            (1, result.clone().into_bytes()),
            (7 * mib / 4096, line(b'c', 4096)),
            (mib / 2 / 64, line(b'd', 64)),
        ]);
        let (capture, _) = read_from_end(&far);
        assert_eq!(capture.result_line, expected);
        assert!(capture.searched >= LOG_WINDOW_MIN, "{}", capture.searched);
        // 20 MiB after it: out of the window, and the message says which window was searched.
        let out = FakeLog(vec![
            (1, result.clone().into_bytes()),
            (20 * mib / 1024, line(b'e', 1024)),
        ]);
        let (capture, _) = read_from_end(&out);
        assert_eq!(capture.result_line, None);
        assert!(!capture.whole);
        assert!(
            (LOG_WINDOW_MIN..LOG_WINDOW_BYTES).contains(&capture.searched),
            "{}",
            capture.searched
        );
        let err = select(None, Some(&capture)).expect_err("no result in the window");
        assert!(
            err.contains("in the last ") && err.contains("MiB of the log"),
            "{err}"
        );
    }

    #[test]
    fn tail_search_grows_then_bisects_to_a_complete_window() {
        let limit = LOG_WINDOW_BYTES;
        let mut search = TailSearch::default();
        assert_eq!(search.lines(), LOG_READ_LINES);
        // Complete, no result, small: grow to fill three quarters of the window.
        let verdict = search.record(100_000, false);
        assert!(verdict.keep && !verdict.whole);
        assert_eq!(verdict.next, Some(1000 * (limit / 4 * 3 / 100_000) as i64));
        // Cut: not kept, bisect.
        let grown = search.lines();
        assert_eq!(
            search.record(limit, false),
            TailVerdict {
                keep: false,
                whole: false,
                next: Some(1000 + (grown - 1000) / 2)
            }
        );
        // Complete and long enough: kept, done.
        assert_eq!(
            search.record(LOG_WINDOW_MIN, false),
            TailVerdict {
                keep: true,
                whole: false,
                next: None
            }
        );

        // A complete read holding a result line is the answer.
        let mut search = TailSearch::default();
        assert_eq!(search.record(50_000, true).next, None);
        // Fewer bytes than lines asked for: the whole log.
        let mut search = TailSearch::default();
        assert_eq!(
            search.record(10, false),
            TailVerdict {
                keep: true,
                whole: true,
                next: None
            }
        );
        // More lines, no more bytes: the whole log.
        let mut search = TailSearch::default();
        search.record(5000, false);
        assert!(search.record(5000, false).whole);

        // One line over the limit: the cut read is the best there is.
        let mut search = TailSearch::default();
        let mut reads = 1;
        while search.record(limit, false).next.is_some() {
            reads += 1;
        }
        assert_eq!((search.lines(), reads), (1, 10));
        // Reads are bounded: a long bisection stops at the last complete read.
        let mut search = TailSearch::default();
        search.record(100_000, false);
        search.record(limit, false);
        let mut reads = 2;
        loop {
            let verdict = search.record(search.lines().unsigned_abs() + reads, false);
            reads += 1;
            if verdict.next.is_none() {
                break;
            }
        }
        assert_eq!(reads, u64::from(LOG_READS_MAX));
    }

    #[test]
    fn non_utf8_logs_keep_a_lossy_tail() {
        let log = scan(&[b"\xff\xfeabc\n"]);
        assert!(log.tail.ends_with("abc\n"));
    }

    #[test]
    fn selection_prefers_the_termination_message_and_explains_absence() {
        let log = scan(&[b"CRUCIBLE_RESULT {\"score\": 2}\n"]);
        let (r, ch) = select(Some("{\"score\": 1}"), Some(&log)).expect("valid");
        assert_eq!((r.score, ch), (1.0, Channel::TerminationMessage));
        let (r, ch) = select(Some(""), Some(&log)).expect("valid");
        assert_eq!((r.score, ch), (2.0, Channel::Stdout));
        let err = select(None, Some(&scan(&[b"hello\n"]))).expect_err("no result");
        assert!(err.starts_with("no result"));
        let cut = format!("{{\"score\": 1, \"summary\": \"{}", "x".repeat(4096));
        let err = select(Some(&cut[..4096]), None).expect_err("cut");
        assert!(err.contains("4096 bytes or more"));
    }
}
