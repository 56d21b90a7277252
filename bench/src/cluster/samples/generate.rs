//! The samples of the `samples` step, made identically by the sandbox (Python, from
//! [`python`]) and by the benchmark on the host (Rust, [`Samples`]) for the store's raw
//! baseline: every line is exactly [`LINE_LEN`] bytes of valid protocol JSON, an `id`, a 0/1
//! `score` and an `output` of words drawn by a 64-bit LCG. Four words, six to a 12-bit draw:
//! about 9× under zstd level 3, so 100,000 lines (50 MB) stay inside the samples container's
//! log budget (9 MiB of base64), as text of few distinct words would.

/// Bytes of every line, newline included.
pub const LINE_LEN: usize = 500;
/// Most lines: the protocol's default line bound (and seven digits of id).
pub const MAX_COUNT: u32 = 1_000_000;
const VOCAB: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];
/// Knuth's MMIX LCG.
const MUL: u64 = 6_364_136_223_846_793_005;
const INC: u64 = 1_442_695_040_888_963_407;
/// Bit offsets of the four 12-bit draws in one LCG step.
const SHIFTS: [u32; 4] = [52, 40, 28, 16];
const PREFIX_LEN: usize = r#"{"id": "s0000000", "score": 0, "output": ""#.len();
const SUFFIX: &str = "\"}\n";
/// Characters of `output`.
const TEXT_LEN: usize = LINE_LEN - PREFIX_LEN - SUFFIX.len();

/// The lines, one at a time.
pub struct Samples {
    chunks: Vec<String>,
    state: u64,
    next: u32,
    count: u32,
    text: String,
}

impl Samples {
    /// `count` lines (at most [`MAX_COUNT`]).
    pub fn new(count: u32) -> Samples {
        let chunks = (0..4096usize)
            .map(|k| {
                let words: Vec<&str> = (0..6).map(|j| VOCAB[(k >> (2 * j)) & 3]).collect();
                words.join(" ") + " "
            })
            .collect();
        Samples {
            chunks,
            state: 1,
            next: 0,
            count: count.min(MAX_COUNT),
            text: String::with_capacity(TEXT_LEN + 64),
        }
    }

    /// Appends the next line to `out`; false when all are out.
    pub fn line(&mut self, out: &mut Vec<u8>) -> bool {
        if self.next >= self.count {
            return false;
        }
        self.text.clear();
        while self.text.len() < TEXT_LEN {
            self.state = self.state.wrapping_mul(MUL).wrapping_add(INC);
            for shift in SHIFTS {
                // Masked to 12 bits: always an index of the 4096 chunks.
                let k = usize::try_from((self.state >> shift) & 4095).unwrap_or_default();
                self.text.push_str(&self.chunks[k]);
            }
        }
        let score = u8::from(self.state >> 62 != 0);
        out.extend_from_slice(
            format!(
                r#"{{"id": "s{:07}", "score": {score}, "output": "{}{SUFFIX}"#,
                self.next,
                &self.text[..TEXT_LEN]
            )
            .as_bytes(),
        );
        self.next += 1;
        true
    }

    /// Every line at once (the baseline uploads them from memory).
    pub fn all(count: u32) -> Vec<u8> {
        let mut samples = Samples::new(count);
        let mut out = Vec::with_capacity(samples.count as usize * LINE_LEN);
        while samples.line(&mut out) {}
        out
    }
}

/// Python writing the same `count` lines to `$CRUCIBLE_SAMPLES_PATH`, then waiting until the
/// Unix time `finish_at` (0: not at all) so that runs started apart end together.
pub fn python(count: u32, finish_at: u64) -> String {
    const SOURCE: &str = r#"import os, time
VOCAB = ("alpha", "bravo", "charlie", "delta")
CHUNKS = [" ".join(VOCAB[(k >> (2 * j)) & 3] for j in range(6)) + " " for k in range(4096)]
x = 1
with open(os.environ["CRUCIBLE_SAMPLES_PATH"], "w") as f:
    for i in range(@COUNT@):
        parts, size = [], 0
        while size < @TEXT_LEN@:
            x = (x * @MUL@ + @INC@) & 0xFFFFFFFFFFFFFFFF
            for s in (@SHIFTS@):
                c = CHUNKS[(x >> s) & 4095]
                parts.append(c)
                size += len(c)
        f.write('{"id": "s%07d", "score": %d, "output": "%s"}\n' % (i, x >> 62 != 0, "".join(parts)[:@TEXT_LEN@]))
while time.time() < @FINISH_AT@:
    time.sleep(0.2)
"#;
    let shifts: Vec<String> = SHIFTS.iter().map(u32::to_string).collect();
    SOURCE
        .replace("@COUNT@", &count.min(MAX_COUNT).to_string())
        .replace("@TEXT_LEN@", &TEXT_LEN.to_string())
        .replace("@MUL@", &MUL.to_string())
        .replace("@INC@", &INC.to_string())
        .replace("@SHIFTS@", &shifts.join(", "))
        .replace("@FINISH_AT@", &finish_at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_a_valid_sample_of_the_fixed_length() {
        let bytes = Samples::all(1000);
        assert_eq!(bytes.len(), 1000 * LINE_LEN);
        let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
        assert_eq!(lines.len(), 1000);
        let mut scores = [0usize; 2];
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line.len(), LINE_LEN, "line {i}");
            let value: serde_json::Value = serde_json::from_slice(line).expect("JSON");
            assert_eq!(value["id"], format!("s{i:07}"));
            let score = value["score"].as_u64().expect("a 0/1 score");
            scores[usize::try_from(score).expect("small")] += 1;
            assert_eq!(value["output"].as_str().map(str::len), Some(TEXT_LEN));
        }
        // Both scores occur, about a quarter failing: the statistics have an interval.
        assert!(scores[0] > 150 && scores[1] > 600, "{scores:?}");
        assert_ne!(lines[0][PREFIX_LEN..], lines[1][PREFIX_LEN..]);
    }

    #[test]
    fn the_count_is_bounded() {
        let mut samples = Samples::new(u32::MAX);
        assert_eq!(samples.count, MAX_COUNT);
        let mut none = Samples::new(0);
        assert!(!none.line(&mut Vec::new()));
        assert!(samples.line(&mut Vec::new()));
    }

    /// The sandbox's Python writes byte for byte what the baseline uploads.
    #[test]
    fn python_writes_the_same_bytes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("samples.jsonl");
        let status = std::process::Command::new("python3")
            .args(["-c", &python(300, 0)])
            .env("CRUCIBLE_SAMPLES_PATH", &path)
            .status()
            .expect("python3 runs");
        assert!(status.success());
        let written = std::fs::read(&path).expect("the samples file");
        assert!(written == Samples::all(300), "the bytes differ");
    }
}
