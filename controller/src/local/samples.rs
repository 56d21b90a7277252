//! Samples of a local run (docs/samples.md): the reporting step's file, read from its host
//! directory without following a symlink or blocking on a FIFO the sandbox put there, validated
//! and stored in a local directory store; the run's plan puts the outcome on its status
//! (`lifecycle::samples`).

use std::path::Path;

use crate::crd::evaluation::EvaluationSpec;
use crate::crd::samples::SamplesStatus;
use crate::lifecycle;
use crate::local::files;
use crate::samples::stats;
use crate::store::{BundleKey, Store};

/// Validates and stores the samples file at `file` (the host side of the samples volume) as run
/// `key`'s bundle; `None` when the step wrote no samples.
///
/// # Errors
/// What the user reads: the file is not a regular file, or breaks the protocol (with its line),
/// or the store failed.
pub async fn collect(
    file: &Path,
    run: &EvaluationSpec,
    store: &Store,
    key: &BundleKey<'_>,
) -> Result<Option<SamplesStatus>, String> {
    let source = match files::open_regular(file) {
        Ok(f) => tokio::fs::File::from_std(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("the samples file is not read: {e}")),
    };
    let stored = store
        .put_samples(key, source, lifecycle::samples::validator(run))
        .await
        .map_err(|e| e.to_string())?;
    Ok(stats::summarize(&stored.aggregates).map(|s| SamplesStatus {
        digest: Some(stored.digest),
        uri: Some(stored.uri),
        ..s
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: BundleKey<'static> = BundleKey {
        namespace: "default",
        evaluation: "arith",
        run_id: "r1",
    };

    fn store(dir: &tempfile::TempDir) -> Store {
        let url = url::Url::from_directory_path(dir.path().join("store")).expect("absolute");
        Store::open(url.as_str()).expect("store")
    }

    fn run() -> EvaluationSpec {
        EvaluationSpec {
            epochs: Some(2),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_samples_file_is_stored_and_summarized() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("samples.jsonl");
        let lines: String = ["a", "b"]
            .iter()
            .flat_map(|id| {
                (0..2).map(move |e| {
                    format!(
                        "{{\"id\":\"{id}\",\"epoch\":{e},\"score\":{}}}\n",
                        u8::from(*id == "a")
                    )
                })
            })
            .collect();
        std::fs::write(&file, lines).expect("write");
        let s = collect(&file, &run(), &store(&dir), &KEY)
            .await
            .expect("valid")
            .expect("samples");
        assert_eq!((s.count, s.ids, s.passed, s.mean), (4, 2, 2, 0.5));
        assert!(s.digest.is_some_and(|d| d.starts_with("sha256:")));
        assert!(
            s.uri
                .is_some_and(|u| u.ends_with("/default/arith/r1/samples.jsonl.zst"))
        );
    }

    #[tokio::test]
    async fn no_file_is_no_samples_and_a_symlink_or_fifo_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("samples.jsonl");
        assert_eq!(
            collect(&missing, &run(), &store(&dir), &KEY).await,
            Ok(None)
        );

        let secret = dir.path().join("secret");
        std::fs::write(&secret, "{\"id\":\"x\",\"score\":1,\"epoch\":0}\n").expect("write");
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&secret, &link).expect("symlink");
        let e = collect(&link, &run(), &store(&dir), &KEY)
            .await
            .expect_err("symlink");
        assert!(e.contains("not read"), "{e}");

        let fifo = dir.path().join("fifo.jsonl");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let e = collect(&fifo, &run(), &store(&dir), &KEY)
            .await
            .expect_err("fifo");
        assert!(e.contains("not a regular file"), "{e}");
        assert!(!dir.path().join("store/default").exists(), "nothing stored");
    }

    #[tokio::test]
    async fn a_bad_samples_file_fails_the_run_with_its_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("samples.jsonl");
        std::fs::write(
            &file,
            "{\"id\":\"a\",\"epoch\":0,\"score\":1}\n{\"id\":\"a\",\"score\":1}\n",
        )
        .expect("write");
        let refused = collect(&file, &run(), &store(&dir), &KEY).await;
        assert_eq!(
            refused,
            Err("samples line 2: epoch is missing (the run has 2 epochs)".to_string())
        );
        assert!(!dir.path().join("store/default").exists(), "nothing stored");
    }
}
