use super::*;
use crate::samples::protocol::Limits;

const KEY: BundleKey<'static> = BundleKey {
    namespace: "team-a",
    evaluation: "arith",
    run_id: "0123456789abcdef",
};

fn validator() -> Validator {
    Validator::new(Limits::default(), 1, 0.5)
}

fn samples(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"id\":\"item-{i}\",\"score\":{},\"output\":\"{}\"}}\n",
                i % 2,
                i * 7919
            )
        })
        .collect()
}

/// `n` samples with random-looking outputs, which compress poorly: over one part.
fn noisy(n: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|i| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{{\"id\":\"item-{i}\",\"score\":1,\"output\":\"{x:016x}{:016x}{:016x}{:016x}\"}}\n", x.rotate_left(17), x.rotate_left(29), x.rotate_left(41))
        })
        .collect()
}

fn store(dir: &tempfile::TempDir) -> Store {
    let url = url::Url::from_directory_path(dir.path()).expect("absolute path");
    Store::open(url.as_str()).expect("file store")
}

fn bundle_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path()
        .join("team-a/arith/0123456789abcdef")
        .join(BUNDLE_NAME)
}

#[tokio::test]
async fn a_bundle_is_stored_compressed_under_its_run_id_with_its_digest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = samples(1000);
    let stored = store(&dir)
        .put_samples(&KEY, text.as_bytes(), validator())
        .await
        .expect("stored");
    assert!(stored.written);
    assert_eq!(
        (stored.aggregates.records, stored.aggregates.ids.len()),
        (1000, 1000)
    );
    let bytes = std::fs::read(bundle_file(&dir)).expect("bundle on disk");
    assert_eq!(stored.size, bytes.len() as u64);
    assert!(
        bytes.len() < text.len() / 2,
        "{} of {}",
        bytes.len(),
        text.len()
    );
    assert_eq!(
        stored.digest,
        format!("sha256:{}", crate::digest::sha256_hex(&bytes))
    );
    let decoded = zstd::stream::decode_all(&bytes[..]).expect("zstd");
    assert_eq!(decoded, text.as_bytes());
    assert!(stored.uri.starts_with("file:///"), "{}", stored.uri);
    assert!(
        stored
            .uri
            .ends_with("/team-a/arith/0123456789abcdef/samples.jsonl.zst")
    );
}

#[tokio::test]
async fn storing_a_run_twice_keeps_the_first_bundle_and_reports_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = store(&dir)
        .put_samples(&KEY, samples(10).as_bytes(), validator())
        .await
        .expect("stored");
    let stored_at = std::fs::metadata(bundle_file(&dir)).and_then(|m| m.modified());
    // A restarted controller stores the same run again: the stored bundle is read back, and
    // what it now reads (here: nothing) is not stored.
    let again = store(&dir)
        .put_samples(&KEY, &b""[..], validator())
        .await
        .expect("read back");
    assert!(!again.written);
    assert_eq!((again.digest, again.uri), (first.digest, first.uri));
    assert_eq!(again.aggregates, first.aggregates);
    assert_eq!(
        std::fs::metadata(bundle_file(&dir))
            .and_then(|m| m.modified())
            .ok(),
        stored_at.ok()
    );
}

#[tokio::test]
async fn samples_that_break_the_protocol_store_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Over one part, so the multipart upload is started and must be aborted.
    let mut text = noisy(200_000);
    text.push_str("{\"id\":\"bad\",\"score\":NaN}\n");
    let e = store(&dir)
        .put_samples(&KEY, text.as_bytes(), validator())
        .await
        .expect_err("refused");
    assert!(
        matches!(&e, StoreError::Protocol(p) if p.line == 200_001),
        "{e}"
    );
    assert!(!bundle_file(&dir).exists());
    let left: Vec<_> = walk(dir.path());
    assert!(
        left.is_empty(),
        "nothing visible, not even a staged part: {left:?}"
    );
}

#[tokio::test]
async fn a_large_bundle_goes_up_in_parts_and_reads_back_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = noisy(200_000);
    let stored = store(&dir)
        .put_samples(&KEY, text.as_bytes(), validator())
        .await
        .expect("stored");
    assert!(stored.size > PART_SIZE as u64, "{}", stored.size);
    let bytes = std::fs::read(bundle_file(&dir)).expect("bundle on disk");
    assert_eq!(
        stored.digest,
        format!("sha256:{}", crate::digest::sha256_hex(&bytes))
    );
    assert_eq!(
        zstd::stream::decode_all(&bytes[..]).expect("zstd"),
        text.as_bytes()
    );
    let again = store(&dir)
        .put_samples(&KEY, &b""[..], validator())
        .await
        .expect("read back");
    assert_eq!(
        (again.digest, again.aggregates),
        (stored.digest, stored.aggregates)
    );
}

#[test]
fn only_file_and_s3_urls_open() {
    for url in [
        "http://example.com/x",
        "gs://bucket",
        "not a url",
        "file://host/x",
    ] {
        assert!(
            matches!(Store::open(url), Err(StoreError::Url { .. })),
            "{url}"
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Against the S3-compatible server of infrastructure/local/s3.sh:
/// `eval "$(infrastructure/local/s3.sh env)"; cargo test -p crucible --lib store:: -- --ignored`.
#[tokio::test]
#[ignore = "needs the S3 server of infrastructure/local/s3.sh (its `env` sets CRUCIBLE_TEST_S3_URL)"]
async fn bundles_go_through_a_real_s3_server_in_one_put_or_in_parts() {
    let url = std::env::var("CRUCIBLE_TEST_S3_URL").expect("CRUCIBLE_TEST_S3_URL (s3.sh env)");
    let store = Store::open(&url).expect("s3 store");
    // A fresh run id per test run: the store keeps what earlier runs stored.
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    for (name, text) in [("small", samples(1000)), ("large", noisy(200_000))] {
        let key = BundleKey {
            namespace: "e2e",
            evaluation: name,
            run_id: &run,
        };
        let stored = store
            .put_samples(&key, text.as_bytes(), validator())
            .await
            .expect("stored");
        assert!(stored.written, "{name}");
        assert_eq!(
            stored.uri,
            format!(
                "{}/e2e/{name}/{run}/{BUNDLE_NAME}",
                url.trim_end_matches('/')
            )
        );
        let bytes = store
            .inner
            .get(&Store::path(&key))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        assert_eq!(
            stored.digest,
            format!("sha256:{}", crate::digest::sha256_hex(&bytes)),
            "{name}"
        );
        assert_eq!(
            zstd::stream::decode_all(&bytes[..]).expect("zstd"),
            text.as_bytes(),
            "{name}"
        );
        let again = store
            .put_samples(&key, &b""[..], validator())
            .await
            .expect("read back");
        assert!(!again.written, "{name}: stored once");
        assert_eq!(
            (again.digest, again.aggregates),
            (stored.digest, stored.aggregates),
            "{name}"
        );
    }
    // A protocol error in the middle of a multipart upload leaves no object.
    let mut bad = noisy(200_000);
    bad.push_str("not json\n");
    let key = BundleKey {
        namespace: "e2e",
        evaluation: "broken",
        run_id: &run,
    };
    store
        .put_samples(&key, bad.as_bytes(), validator())
        .await
        .expect_err("refused");
    assert!(matches!(
        store.inner.head(&Store::path(&key)).await,
        Err(object_store::Error::NotFound { .. })
    ));
}

/// Retention deletes the bundles last written before the cutoff and nothing else: a newer
/// bundle and a file that is not a bundle stay.
#[tokio::test]
async fn retention_deletes_only_bundles_older_than_the_cutoff() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store(&dir);
    store
        .put_samples(&KEY, samples(10).as_bytes(), validator())
        .await
        .expect("old bundle");
    let newer = BundleKey {
        run_id: "fedcba9876543210",
        ..KEY
    };
    store
        .put_samples(&newer, samples(10).as_bytes(), validator())
        .await
        .expect("new bundle");
    let day = std::time::Duration::from_secs(86_400);
    let long_ago = std::time::SystemTime::now() - 10 * day;
    for file in [bundle_file(&dir), dir.path().join("team-a/notes.txt")] {
        if !file.exists() {
            std::fs::write(&file, "not a bundle").expect("write");
        }
        std::fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(long_ago))
            .expect("backdate");
    }
    let cutoff = std::time::SystemTime::now() - day;
    assert_eq!(store.prune(cutoff).await.expect("pruned"), 1);
    assert!(!bundle_file(&dir).exists(), "the old bundle is gone");
    assert!(
        dir.path()
            .join("team-a/arith/fedcba9876543210")
            .join(BUNDLE_NAME)
            .exists(),
        "the newer bundle stays"
    );
    assert!(
        dir.path().join("team-a/notes.txt").exists(),
        "not a bundle: kept"
    );
    assert_eq!(store.prune(cutoff).await.expect("pruned"), 0);
}

/// `text` as a zstd stream made otherwise than the store makes its own (level 1), so that a
/// bundle stored as given is told from one compressed again.
fn compressed(text: &str, window_log: u32) -> Vec<u8> {
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("encoder");
    encoder.window_log(window_log).expect("window");
    std::io::Write::write_all(&mut encoder, text.as_bytes()).expect("compressed");
    encoder.finish().expect("finished")
}

/// `bytes` in the chunks a frame's data lines carry.
fn lines(bytes: &[u8]) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Unpin {
    let chunks: Vec<_> = bytes
        .chunks(crate::samples::transport::LINE_BYTES)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks)
}

#[tokio::test]
async fn compressed_samples_are_stored_as_given_and_validated() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Over a local part, so it goes up in parts.
    let text = noisy(60_000);
    let bytes = compressed(&text, ZSTD_WINDOW_LOG);
    assert!(bytes.len() > LOCAL_PART_SIZE, "{}", bytes.len());
    let stored = store(&dir)
        .put_compressed(&KEY, lines(&bytes), validator())
        .await
        .expect("stored");
    assert!(stored.written);
    assert!(
        std::fs::read(bundle_file(&dir)).expect("bundle on disk") == bytes,
        "stored byte for byte"
    );
    assert_eq!(
        stored.digest,
        format!("sha256:{}", crate::digest::sha256_hex(&bytes))
    );
    let other = tempfile::tempdir().expect("temp dir");
    let plain = store(&other)
        .put_samples(&KEY, text.as_bytes(), validator())
        .await
        .expect("stored");
    assert_eq!(stored.aggregates, plain.aggregates);
    let again = store(&dir)
        .put_compressed(&KEY, lines(&[]), validator())
        .await
        .expect("read back");
    assert_eq!((again.written, again.digest), (false, stored.digest));
}

/// A stream cut inside its zstd frame, one asking for a larger window than the compressors
/// use (memory the reader would hold), bytes that are not zstd, and samples that break the
/// protocol: each is refused, and nothing is stored.
#[tokio::test]
async fn compressed_samples_that_are_cut_too_wide_or_invalid_store_nothing() {
    let text = noisy(40_000);
    let whole = compressed(&text, ZSTD_WINDOW_LOG);
    let mut bad = text.clone();
    bad.push_str("{\"id\":\"bad\",\"score\":NaN}\n");
    let cases = [
        (
            "cut",
            whole[..whole.len() - 7].to_vec(),
            "ends inside a frame",
        ),
        (
            "wide",
            compressed(&text, ZSTD_WINDOW_LOG + 1),
            "not valid zstd",
        ),
        (
            "foreign",
            b"{\"id\":\"a\",\"score\":1}\n".to_vec(),
            "not valid zstd",
        ),
        (
            "protocol",
            compressed(&bad, ZSTD_WINDOW_LOG),
            "samples line 40001",
        ),
    ];
    for (name, bytes, why) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = store(&dir)
            .put_compressed(&KEY, lines(&bytes), validator())
            .await
            .expect_err(name);
        assert!(e.to_string().contains(why), "{name}: {e}");
        let left = walk(dir.path());
        assert!(left.is_empty(), "{name}: nothing stored: {left:?}");
    }
}
