use super::*;

fn limits() -> Limits {
    Limits {
        max_lines: 100,
        max_bytes: 64 * 1024,
        max_line_len: 1024,
        max_ids: 10,
    }
}

/// Validates `text` pushed in chunks of `chunk` bytes.
fn run(text: &str, epochs: u32, chunk: usize, limits: Limits) -> Result<Aggregates, ProtocolError> {
    let mut v = Validator::new(limits, epochs, 0.5);
    for piece in text.as_bytes().chunks(chunk) {
        v.push(piece)?;
    }
    v.finish()
}

fn error(text: &str, epochs: u32) -> ProtocolError {
    run(text, epochs, 7, limits()).expect_err("the file must be refused")
}

#[test]
fn a_valid_file_is_reduced_per_id_whatever_the_chunking() {
    let text = "{\"id\":\"a\",\"epoch\":0,\"score\":1}\n\
                {\"id\":\"a\",\"epoch\":1,\"score\":0,\"passed\":true}\r\n\
                \n\
                {\"id\":\"b\",\"epoch\":0,\"score\":0.25,\"metrics\":{\"f1\":0.5},\"input\":\"2+2\",\
                \"metadata\":{\"k\":[1,2]},\"extra\":\"allowed\"}";
    let whole = run(text, 2, text.len(), limits()).expect("valid");
    for chunk in [1, 2, 3, 5, 64] {
        assert_eq!(
            run(text, 2, chunk, limits()).expect("valid"),
            whole,
            "chunk {chunk}"
        );
    }
    assert_eq!(whole.records, 3);
    // a: 1 passes by threshold, 0 by its own `passed`; b: 0.25 < 0.5.
    assert_eq!(whole.passed, 2);
    let a = whole.ids[&id_key("a")];
    assert_eq!((a.sum, a.count(), a.passed(), a.mean()), (1.0, 2, 2, 0.5));
    assert_eq!(whole.ids[&id_key("b")].mean(), 0.25);
}

#[test]
fn an_empty_file_has_no_samples() {
    let empty = run("", 1, 1, limits()).expect("valid");
    assert_eq!((empty.records, empty.ids.len()), (0, 0));
}

#[test]
fn each_broken_rule_names_its_line_and_what_was_wrong() {
    let ok = "{\"id\":\"ok\",\"score\":1,\"epoch\":0}\n";
    let long_text = "x".repeat(MAX_TEXT_LEN + 1);
    let metrics: Vec<String> = (0..=MAX_SAMPLE_METRICS)
        .map(|i| format!("\"m{i}\":1"))
        .collect();
    let cases: Vec<(String, u32, &str)> = vec![
        ("{\"id\":\"a\",\"score\":1".into(), 1, "invalid JSON"),
        ("[1,2]".into(), 1, "invalid JSON"),
        ("{\"id\":\"a\",\"score\":NaN}".into(), 1, "finite"),
        ("{\"id\":\"a\",\"score\":Infinity}".into(), 1, "finite"),
        ("{\"id\":\"a\",\"score\":-Infinity}".into(), 1, "finite"),
        ("{\"id\":\"a\",\"score\":1e999}".into(), 1, "invalid JSON"),
        (
            "{\"id\":\"a\",\"score\":\"high\"}".into(),
            1,
            "invalid type",
        ),
        ("{\"score\":1}".into(), 1, "id is missing"),
        ("{\"id\":\"\",\"score\":1}".into(), 1, "id is empty"),
        (
            format!("{{\"id\":\"{}\",\"score\":1}}", "i".repeat(MAX_ID_LEN + 1)),
            1,
            "id is over 256",
        ),
        ("{\"id\":\"a\"}".into(), 1, "score is missing"),
        ("{\"id\":\"a\",\"score\":1}".into(), 3, "epoch is missing"),
        (
            "{\"id\":\"a\",\"score\":1,\"epoch\":3}".into(),
            3,
            "epoch 3 is out of range",
        ),
        (
            "{\"id\":\"a\",\"score\":1,\"epoch\":1}".into(),
            1,
            "epoch 1 is out of range",
        ),
        (
            "{\"id\":\"a\",\"score\":1,\"epoch\":-1}".into(),
            3,
            "invalid",
        ),
        (
            format!(
                "{{\"id\":\"a\",\"score\":1,\"metrics\":{{{}}}}}",
                metrics.join(",")
            ),
            1,
            "more than 64 metrics",
        ),
        (
            "{\"id\":\"a\",\"score\":1,\"metrics\":{\"m\":NaN}}".into(),
            1,
            "finite",
        ),
        (
            "{\"id\":\"a\",\"score\":1,\"metadata\":[1]}".into(),
            1,
            "metadata must be an object",
        ),
        (
            "{\"id\":\"ok\",\"score\":0}".into(),
            1,
            "sample \"ok\" epoch 0 appears twice",
        ),
    ];
    for (line, epochs, expected) in cases {
        let e = error(&format!("{ok}{line}\n"), epochs);
        assert_eq!(e.line, 2, "{line}: {e}");
        assert!(e.problem.contains(expected), "{line}: {e}");
    }
    // Text fields and metadata over their bounds (a line bound that lets them through).
    let roomy = Limits {
        max_line_len: 256 * 1024,
        max_bytes: 1024 * 1024,
        ..limits()
    };
    let big_meta = format!("{{\"v\":\"{}\"}}", "m".repeat(MAX_METADATA_LEN));
    for (line, expected) in [
        (
            format!("{{\"id\":\"a\",\"score\":1,\"output\":\"{long_text}\"}}"),
            "output is over",
        ),
        (
            format!("{{\"id\":\"a\",\"score\":1,\"metadata\":{big_meta}}}"),
            "metadata is over",
        ),
    ] {
        let e = run(&line, 1, 4096, roomy).expect_err("refused");
        assert!(e.problem.contains(expected) && e.line == 1, "{e}");
    }
    assert_eq!(
        error(&format!("{ok}{ok}"), 1).to_string(),
        "samples line 2: sample \"ok\" epoch 0 appears twice"
    );
}

#[test]
fn bounds_on_lines_bytes_line_length_and_ids_are_enforced() {
    let line = |i: usize| format!("{{\"id\":\"s{i}\",\"score\":1}}\n");
    let lines: String = (0..11).map(line).collect();
    let e = run(&lines, 1, 5, limits()).expect_err("11 ids");
    assert_eq!(
        (e.line, e.problem.as_str()),
        (11, "more than 10 distinct sample ids")
    );

    let few_lines = Limits {
        max_lines: 3,
        ..limits()
    };
    let e = run(&lines, 1, 5, few_lines).expect_err("lines");
    assert_eq!((e.line, e.problem.as_str()), (4, "more than 3 lines"));

    let few_bytes = Limits {
        max_bytes: 50,
        ..limits()
    };
    let e = run(&lines, 1, 5, few_bytes).expect_err("bytes");
    assert!(e.problem.contains("over 50 bytes"), "{e}");

    // The line bound holds before the line is buffered, even without a newline.
    let mut v = Validator::new(limits(), 1, 0.5);
    v.push(line(0).as_bytes()).expect("first line");
    v.push(&[b' '; 1000]).expect("within the bound");
    let e = v.push(&[b' '; 100]).expect_err("over the bound");
    assert_eq!(
        (e.line, e.problem.as_str()),
        (2, "the line is over 1024 bytes")
    );
    assert!(v.pending.capacity() <= 2 * 1024, "{}", v.pending.capacity());
}
