//! The frame the samples file travels in from a finished pod (docs/samples.md, "Transport"):
//! the pod's trusted `samples` container (`crucible samples-emit`, never code from the
//! evaluation image) prints the file zstd-compressed and base64-encoded on its own log, between
//! a header and a trailer that carries the compressed length and sha256; the controller reads
//! that log through the API server (`pods/log`, which it already reads for results) and checks
//! the frame before the store keeps anything. A log cut short (the container killed, a rotated
//! log) or altered fails the check: the samples are never stored incomplete. Pure.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// First line of a frame with samples.
pub const BEGIN: &str = "crucible-samples/v1 begin";
/// The only line of a frame when the reporting step wrote no samples file.
pub const NONE: &str = "crucible-samples/v1 none";
/// Last line of a frame with samples: `<prefix><compressed bytes> sha256:<hex>`.
const END: &str = "crucible-samples/v1 end ";
/// A line saying why the emitter stopped: `<prefix><message>`.
const ERROR: &str = "crucible-samples/v1 error ";
/// Compressed bytes per data line: 4,096 base64 characters, well under the 16 KiB at which
/// container runtimes split log lines.
pub const LINE_BYTES: usize = 3072;
/// Longest line a well-formed frame has (a data line, or an error line's bounded message).
pub const MAX_LINE: usize = 4096;
/// Largest zstd window of a frame's (and so a bundle's) compressed bytes, as a power of two:
/// 2 MiB, what zstd's level 3 uses for input of unknown size. The compressors set it and every
/// decompressor refuses more, so no frame or bundle can make a reader hold more than that
/// (zstd's own limit is 128 MiB).
pub const ZSTD_WINDOW_LOG: u32 = 21;
/// Longest message on an error line.
const MAX_ERROR_MESSAGE: usize = 1024;

/// Why a frame is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The emitter said why it stopped.
    #[error("{0}")]
    Emitter(String),
    /// The log ended before the trailer.
    #[error(
        "the samples log ends before its trailer (the samples container was stopped before it printed them all, or its log was rotated)"
    )]
    Incomplete,
    /// The log holds no frame at all.
    #[error(
        "the samples container printed nothing (it was stopped before the pod's other containers ended)"
    )]
    Missing,
    /// Something else than the frame.
    #[error("line {line} of the samples log is not part of a samples frame: {problem}")]
    Malformed {
        /// 1-based line of the log.
        line: u64,
        /// What was wrong.
        problem: String,
    },
    /// The trailer disagrees with the data.
    #[error("the samples log's trailer does not match its data: {0}")]
    Mismatch(String),
}

/// The trailer of `compressed` bytes with sha256 `digest` (hex).
pub fn end_line(compressed: u64, digest: &str) -> String {
    format!("{END}{compressed} sha256:{digest}")
}

/// An error line: `message` on one line, bounded.
pub fn error_line(message: &str) -> String {
    let mut one: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one.len() > MAX_ERROR_MESSAGE {
        let mut cut = MAX_ERROR_MESSAGE;
        while !one.is_char_boundary(cut) {
            cut -= 1;
        }
        one.truncate(cut);
    }
    format!("{ERROR}{one}")
}

/// A data line for at most [`LINE_BYTES`] compressed bytes.
pub fn data_line(chunk: &[u8]) -> String {
    STANDARD.encode(chunk)
}

/// What a complete frame held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// No samples file.
    Nothing,
    /// Samples, every compressed byte checked against the trailer.
    Samples,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Body,
    Done(Framed),
}

/// Reads a frame line by line; hands back the compressed bytes of each data line.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    line: u64,
    hasher: Sha256,
    compressed: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Start,
            line: 0,
            hasher: Sha256::new(),
            compressed: 0,
        }
    }
}

impl Decoder {
    /// One line of the log (without its newline): the compressed bytes it carries, if any.
    ///
    /// # Errors
    /// The line is not the frame's next, or the emitter reported an error.
    pub fn line(&mut self, line: &[u8]) -> Result<Vec<u8>, FrameError> {
        self.line += 1;
        let malformed = |problem: &str| FrameError::Malformed {
            line: self.line,
            problem: problem.to_string(),
        };
        if line.len() > MAX_LINE + END.len() {
            return Err(malformed("longer than a frame's lines"));
        }
        let text = std::str::from_utf8(line).map_err(|_| malformed("not UTF-8"))?;
        if let Some(message) = text.strip_prefix(ERROR) {
            return Err(FrameError::Emitter(message.to_string()));
        }
        match self.state {
            State::Start if text == BEGIN => self.state = State::Body,
            State::Start if text == NONE => self.state = State::Done(Framed::Nothing),
            State::Start => return Err(malformed("expected the frame's header")),
            State::Body => {
                if let Some(trailer) = text.strip_prefix(END) {
                    self.check(trailer)?;
                    self.state = State::Done(Framed::Samples);
                    return Ok(Vec::new());
                }
                let bytes = STANDARD
                    .decode(text)
                    .map_err(|e| malformed(&format!("not base64 ({e})")))?;
                self.hasher.update(&bytes);
                self.compressed += bytes.len() as u64;
                return Ok(bytes);
            }
            State::Done(_) => return Err(malformed("after the frame's trailer")),
        }
        Ok(Vec::new())
    }

    fn check(&self, trailer: &str) -> Result<(), FrameError> {
        let digest = crate::digest::hex(&self.hasher.clone().finalize());
        let expected = end_line(self.compressed, &digest);
        if expected.strip_prefix(END) == Some(trailer) {
            Ok(())
        } else {
            Err(FrameError::Mismatch(format!(
                "read {} compressed bytes with sha256:{digest}, the trailer says {trailer}",
                self.compressed
            )))
        }
    }

    /// The end of the log.
    ///
    /// # Errors
    /// The frame did not end.
    pub fn finish(&self) -> Result<Framed, FrameError> {
        match self.state {
            State::Done(framed) => Ok(framed),
            State::Body => Err(FrameError::Incomplete),
            State::Start => Err(FrameError::Missing),
        }
    }
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
