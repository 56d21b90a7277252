//! One transfer: the `samples` container's log, read through the API server, unframed
//! ([`transport`]) and handed to the results store as the compressed bytes the container made,
//! which the store keeps as they are while it decompresses them to validate the samples.
//! Memory: one log line and the store's own (one part, zstd's window, the validator's).

use std::pin::Pin;

use bytes::Bytes;
use futures::{AsyncBufRead, AsyncBufReadExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};

use crate::crd::samples::{ComparisonStatus, SamplesStatus};
use crate::reading;
use crate::run::pod::SAMPLES_CONTAINER;
use crate::samples::Collected;
use crate::samples::protocol::Aggregates;
use crate::samples::protocol::Validator;
use crate::samples::stats;
use crate::samples::transport::{Decoder, FrameError, Framed, MAX_LINE};
use crate::store::{BundleKey, Store};
use crate::transfer::{Baseline, Outcome};

/// Longest wait for the next bytes of the log.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Carries run `key`'s samples from pod `pod`'s samples container to `store`; `max_log` bounds
/// the bytes read (the container's own budget plus its frame lines).
///
/// # Errors
/// What the run's status says: the log cannot be read, the frame is broken, the samples break
/// the protocol, or the store failed.
pub async fn carry(
    pods: Api<Pod>,
    pod: String,
    store: std::sync::Arc<Store>,
    key: (String, String, String),
    validator: Validator,
    max_log: u64,
    baseline: Option<Baseline>,
) -> Outcome {
    let params = LogParams {
        container: Some(SAMPLES_CONTAINER.into()),
        limit_bytes: Some(i64::try_from(max_log).unwrap_or(i64::MAX)),
        ..Default::default()
    };
    let log = tokio::time::timeout(IDLE_TIMEOUT, pods.log_stream(&pod, &params))
        .await
        .map_err(|_| "the samples log did not answer".to_string())?
        .map_err(|e| format!("the samples log cannot be read: {e}"))?;
    let mut unframe = Unframe::new(Box::pin(log));
    if !unframe.begin().await.map_err(|e| e.to_string())? {
        return Ok(None);
    }
    let (namespace, evaluation, run_id) = &key;
    // Operators (and the restart test) see when a transfer is under way.
    tracing::info!(%namespace, %evaluation, run = %run_id, "storing the samples of a finished run");
    let chunks = futures::stream::try_unfold(unframe, |mut u| async move {
        Ok::<_, std::io::Error>(u.next().await?.map(|chunk| (chunk, u)))
    });
    let bundle = BundleKey {
        namespace,
        evaluation,
        run_id,
    };
    let stored = store
        .put_compressed(&bundle, Box::pin(chunks), validator)
        .await
        .map_err(|e| e.to_string())?;
    let Some(samples) = stats::summarize(&stored.aggregates) else {
        return Ok(None);
    };
    // A baseline that cannot be read is not this run's failure: no comparison, and why logged.
    let comparison = match baseline {
        Some(baseline) => compare(&stored.aggregates, baseline)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "no comparison with the baseline");
                None
            }),
        None => None,
    };
    Ok(Some(Box::new(Collected {
        samples: SamplesStatus {
            digest: Some(stored.digest),
            uri: Some(stored.uri),
            ..samples
        },
        comparison,
    })))
}

/// The paired comparison of `this` run's samples with the baseline's bundle (its digest
/// checked), sample id by id after averaging epochs; `None` with no id in common.
///
/// # Errors
/// The baseline's bundle cannot be read or is not the one its status names.
async fn compare(
    this: &Aggregates,
    baseline: Baseline,
) -> Result<Option<ComparisonStatus>, String> {
    let (base, _) = reading::read(&baseline.bundle, &mut |_| {})
        .await
        .map_err(|e| format!("spec.compareTo: {e}"))?;
    Ok(
        stats::paired(&stats::id_means(this), &stats::id_means(&base)).map(|e| ComparisonStatus {
            baseline: baseline.reference,
            pairs: i64::try_from(e.n).unwrap_or(i64::MAX),
            delta: e.mean,
            stderr: e.stderr,
            ci95: e.ci95,
        }),
    )
}

/// The samples log, unframed: the compressed bytes of one data line at a time.
struct Unframe {
    log: Pin<Box<dyn AsyncBufRead + Send>>,
    frame: Decoder,
    line: Vec<u8>,
}

impl Unframe {
    fn new(log: Pin<Box<dyn AsyncBufRead + Send>>) -> Self {
        Unframe {
            log,
            frame: Decoder::default(),
            line: Vec::new(),
        }
    }

    /// Reads the header: whether samples follow.
    async fn begin(&mut self) -> Result<bool, FrameError> {
        let line = match self.read_line().await {
            Ok(Some(line)) => line,
            Ok(None) => return Err(self.frame.finish().err().unwrap_or(FrameError::Missing)),
            Err(e) => return Err(FrameError::Emitter(e.to_string())),
        };
        self.frame.line(&line)?;
        Ok(self.frame.finish() != Ok(Framed::Nothing))
    }

    /// The compressed bytes of the next data line; `None` at the end of a complete frame (its
    /// trailer checked: an error otherwise, so the store keeps nothing).
    async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
        loop {
            let Some(line) = self.read_line().await? else {
                return match self.frame.finish() {
                    Ok(_) => Ok(None),
                    Err(e) => Err(invalid(e.to_string())),
                };
            };
            let bytes = self.frame.line(&line).map_err(|e| invalid(e.to_string()))?;
            if !bytes.is_empty() {
                return Ok(Some(Bytes::from(bytes)));
            }
        }
    }

    /// The next line without its newline, bounded; `None` at the end of the log.
    async fn read_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        self.line.clear();
        loop {
            let chunk = tokio::time::timeout(IDLE_TIMEOUT, self.log.fill_buf())
                .await
                .map_err(|_| invalid("the samples log stalled".into()))??;
            if chunk.is_empty() {
                return Ok((!self.line.is_empty()).then(|| std::mem::take(&mut self.line)));
            }
            let (take, end) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            if self.line.len() + take > MAX_LINE * 2 {
                return Err(invalid("a line of the samples log is too long".into()));
            }
            self.line.extend_from_slice(&chunk[..take]);
            self.log.as_mut().consume(take + usize::from(end));
            if end {
                return Ok(Some(std::mem::take(&mut self.line)));
            }
        }
    }
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ApiServerVerifier;
    use crate::samples::protocol::Limits;
    use crate::samples::transport::{BEGIN, LINE_BYTES, data_line, end_line};
    use http::Method;
    use sha2::{Digest, Sha256};

    /// A samples log as the samples container prints it, of `compressed` bytes.
    fn log(compressed: &[u8]) -> String {
        let mut lines = vec![BEGIN.to_string()];
        lines.extend(compressed.chunks(LINE_BYTES).map(data_line));
        let digest = crate::digest::hex(&Sha256::digest(compressed));
        lines.push(end_line(compressed.len() as u64, &digest));
        lines.join("\n") + "\n"
    }

    /// Carries run `run`'s samples from a log with `text` into a store in `dir`.
    async fn transfer(dir: &std::path::Path, run: &str, text: String) -> Outcome {
        let (client, mut server) = ApiServerVerifier::client();
        let url = url::Url::from_directory_path(dir).expect("absolute");
        let store = std::sync::Arc::new(Store::open(url.as_str()).expect("store"));
        let key = ("team-a".into(), "arith".into(), run.to_string());
        let validator = Validator::new(Limits::default(), 1, 0.5);
        let carried = tokio::spawn(carry(
            Api::namespaced(client, "team-a"),
            "p".into(),
            store,
            key,
            validator,
            1 << 20,
            None,
        ));
        let asked = server
            .expect(
                Method::GET,
                "/api/v1/namespaces/team-a/pods/p/log",
                200,
                serde_json::Value::String(text),
            )
            .await;
        assert!(asked.uri.contains("container=samples"), "{}", asked.uri);
        carried.await.expect("the transfer ends")
    }

    /// The bundle is the compressed bytes the samples container printed, byte for byte (not
    /// compressed again), with the trailer's digest; a log cut before its trailer stores
    /// nothing.
    #[tokio::test]
    async fn the_bundle_is_what_the_samples_container_compressed_and_a_cut_log_stores_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let text: String = (0..5000)
            .map(|i| format!("{{\"id\":\"q{i}\",\"score\":{}}}\n", i % 2))
            .collect();
        // Level 1: not what the store would make of the samples at its own level.
        let compressed = zstd::stream::encode_all(text.as_bytes(), 1).expect("zstd");
        let collected = transfer(dir.path(), "r1", log(&compressed))
            .await
            .expect("stored")
            .expect("samples");
        let bundle = dir
            .path()
            .join("team-a/arith/r1")
            .join(crate::store::BUNDLE_NAME);
        assert!(std::fs::read(&bundle).expect("the bundle") == compressed);
        assert_eq!(
            collected.samples.digest,
            Some(format!("sha256:{}", crate::digest::sha256_hex(&compressed)))
        );
        assert_eq!(
            (collected.samples.count, collected.samples.passed),
            (5000, 2500)
        );

        let whole = log(&compressed);
        let cut = whole[..whole.rfind("crucible-samples/v1 end").expect("trailer")].to_string();
        let e = transfer(dir.path(), "r2", cut).await.expect_err("refused");
        assert!(e.contains("ends before its trailer"), "{e}");
        assert!(!dir.path().join("team-a/arith/r2").exists());
    }
}
