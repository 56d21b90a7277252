use super::*;

fn frame(data: &[u8]) -> Vec<String> {
    let mut lines = vec![BEGIN.to_string()];
    lines.extend(data.chunks(LINE_BYTES).map(data_line));
    let digest = crate::digest::hex(&Sha256::digest(data));
    lines.push(end_line(data.len() as u64, &digest));
    lines
}

fn decode(lines: &[String]) -> Result<(Framed, Vec<u8>), FrameError> {
    let mut decoder = Decoder::default();
    let mut bytes = Vec::new();
    for line in lines {
        bytes.extend(decoder.line(line.as_bytes())?);
    }
    Ok((decoder.finish()?, bytes))
}

#[test]
fn a_frame_gives_back_its_bytes_and_none_gives_nothing() {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let lines = frame(&data);
    assert_eq!(lines.len(), 2 + data.len().div_ceil(LINE_BYTES));
    assert!(lines.iter().all(|l| l.len() <= MAX_LINE));
    assert_eq!(decode(&lines), Ok((Framed::Samples, data)));
    assert_eq!(
        decode(&[NONE.to_string()]),
        Ok((Framed::Nothing, Vec::new()))
    );
}

#[test]
fn a_cut_altered_or_foreign_log_is_refused() {
    let data = vec![42u8; 7000];
    let lines = frame(&data);
    assert_eq!(
        decode(&lines[..lines.len() - 1]),
        Err(FrameError::Incomplete),
        "no trailer"
    );
    assert_eq!(decode(&[]), Err(FrameError::Missing));
    let mut dropped = lines.clone();
    dropped.remove(1);
    assert!(
        matches!(decode(&dropped), Err(FrameError::Mismatch(_))),
        "a line lost"
    );
    let mut altered = lines.clone();
    altered[1] = data_line(&[0u8; LINE_BYTES]);
    assert!(
        matches!(decode(&altered), Err(FrameError::Mismatch(_))),
        "a line changed"
    );
    let mut foreign = lines.clone();
    foreign.insert(0, "hello".into());
    assert!(matches!(
        decode(&foreign),
        Err(FrameError::Malformed { line: 1, .. })
    ));
    let mut after = lines;
    after.push(data_line(b"more"));
    assert!(matches!(decode(&after), Err(FrameError::Malformed { .. })));
}

#[test]
fn the_emitters_error_is_what_the_run_says() {
    let lines = [
        BEGIN.to_string(),
        data_line(b"x"),
        error_line("the samples compress\nto more than 9 bytes"),
    ];
    assert_eq!(
        decode(&lines),
        Err(FrameError::Emitter(
            "the samples compress to more than 9 bytes".into()
        ))
    );
    assert!(error_line(&"é".repeat(5000)).len() <= MAX_LINE);
}
