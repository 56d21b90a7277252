//! Samples of a local run (docs/samples.md): the reporting step's file, read from its host
//! directory without following a symlink or blocking on a FIFO the sandbox put there, validated
//! and stored in a local directory store, and its statistics written into the status.

use std::path::Path;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::EvaluationStatus;
use crate::crd::evaluation::{EvaluationSpec, Phase};
use crate::crd::samples::SamplesStatus;
use crate::local::files;
use crate::run::results::DEFAULT_PASS_THRESHOLD;
use crate::samples::protocol::{Limits, Validator};
use crate::samples::{spec, stats};
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
    let validator = Validator::new(
        Limits::default(),
        spec::epochs(run),
        run.pass_threshold.unwrap_or(DEFAULT_PASS_THRESHOLD),
    );
    let stored = store
        .put_samples(key, source, validator)
        .await
        .map_err(|e| e.to_string())?;
    Ok(stats::summarize(&stored.aggregates).map(|s| SamplesStatus {
        digest: Some(stored.digest),
        uri: Some(stored.uri),
        ..s
    }))
}

/// Writes the outcome of [`collect`] into a finished run's status: its statistics, or, for
/// samples that were refused, the run `Failed` with reason `InvalidResult` and no result.
pub fn record(
    status: &mut EvaluationStatus,
    outcome: Result<Option<SamplesStatus>, String>,
    generation: Option<i64>,
    now: &Time,
) {
    match outcome {
        Ok(samples) => status.samples = samples,
        Err(message) => {
            status.phase = Some(Phase::Failed);
            status.reason = Some("InvalidResult".into());
            status.message = Some(message);
            status.result = None;
            status.shown_score = None;
            status.samples = None;
            crate::lifecycle::set_conditions(status, generation, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::evaluation::EvaluationResult;

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
        let outcome = collect(&file, &run(), &store(&dir), &KEY).await;
        let mut status = EvaluationStatus {
            phase: Some(Phase::Succeeded),
            result: Some(EvaluationResult {
                score: 1.0,
                passed: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        record(
            &mut status,
            outcome,
            Some(1),
            &Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(status.reason.as_deref(), Some("InvalidResult"));
        assert_eq!(
            status.message.as_deref(),
            Some("samples line 2: epoch is missing (the run has 2 epochs)")
        );
        assert!(status.result.is_none());
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.status, "False");
    }
}
