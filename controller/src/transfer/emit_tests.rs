use super::*;
use crate::samples::transport::{Decoder, FrameError, Framed};

/// Decodes a frame as the controller does: unframed, then decompressed.
fn received(output: &[u8]) -> Result<(Framed, Vec<u8>), FrameError> {
    let mut decoder = Decoder::default();
    let mut compressed = Vec::new();
    for line in output.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        compressed.extend(decoder.line(line)?);
    }
    let framed = decoder.finish()?;
    let raw = if compressed.is_empty() {
        Vec::new()
    } else {
        zstd::stream::decode_all(&compressed[..]).expect("zstd")
    };
    Ok((framed, raw))
}

fn samples(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("{{\"id\":\"q{i}\",\"score\":{}}}\n", i % 2))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn a_samples_file_arrives_whole_and_compressed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("samples.jsonl");
    let data = samples(20_000);
    std::fs::write(&path, &data).expect("write");
    let mut out = Vec::new();
    emit(&path, u64::MAX, DEFAULT_MAX_OUTPUT, &mut out).expect("emit");
    assert!(
        out.len() * 4 < data.len(),
        "{} bytes on the log for {}",
        out.len(),
        data.len()
    );
    assert_eq!(received(&out), Ok((Framed::Samples, data)));
}

#[test]
fn no_file_is_none_and_a_symlink_fifo_or_oversize_file_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut out = Vec::new();
    emit(
        &dir.path().join("missing"),
        u64::MAX,
        DEFAULT_MAX_OUTPUT,
        &mut out,
    )
    .expect("emit");
    assert_eq!(received(&out), Ok((Framed::Nothing, Vec::new())));

    let secret = dir.path().join("secret");
    std::fs::write(&secret, samples(3)).expect("write");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&secret, &link).expect("symlink");
    let mut out = Vec::new();
    emit(&link, u64::MAX, DEFAULT_MAX_OUTPUT, &mut out).expect("emit");
    assert!(
        matches!(received(&out), Err(FrameError::Emitter(m)) if m.contains("not read")),
        "{}",
        String::from_utf8_lossy(&out)
    );

    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let mut out = Vec::new();
    emit(&fifo, u64::MAX, DEFAULT_MAX_OUTPUT, &mut out).expect("emit");
    assert!(
        matches!(received(&out), Err(FrameError::Emitter(m)) if m.contains("not a regular file"))
    );

    let mut out = Vec::new();
    emit(&secret, 10, DEFAULT_MAX_OUTPUT, &mut out).expect("emit");
    assert!(
        matches!(received(&out), Err(FrameError::Emitter(m)) if m.contains("more than 10 bytes"))
    );
}

/// Past the log budget the emitter stops with an error line instead of printing what the
/// kubelet would rotate away.
#[test]
fn samples_that_compress_past_the_budget_are_refused_within_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("samples.jsonl");
    // Incompressible: hex of a hash chain.
    let mut data = String::new();
    let mut h = crate::digest::sha256_hex(b"seed");
    for _ in 0..2000 {
        h = crate::digest::sha256_hex(h.as_bytes());
        data.push_str(&format!("{{\"id\":\"{h}\",\"score\":1}}\n"));
    }
    std::fs::write(&path, &data).expect("write");
    let budget = 20_000;
    let mut out = Vec::new();
    emit(&path, u64::MAX, budget, &mut out).expect("emit");
    assert!(out.len() as u64 <= budget + 2 * 4096, "{} bytes", out.len());
    assert!(
        matches!(received(&out), Err(FrameError::Emitter(m)) if m.contains("more than the 20000 bytes")),
        "{}",
        String::from_utf8_lossy(&out[out.len().saturating_sub(300)..])
    );
}
