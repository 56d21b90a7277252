//! One transfer: the `samples` container's log, read through the API server, unframed
//! ([`transport`]), decompressed and handed to the results store, which validates the samples
//! while it uploads them. Memory: one log line, one decompressed chunk and the store's part.

use std::pin::Pin;

use bytes::Bytes;
use futures::{AsyncBufRead, AsyncBufReadExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use zstd::stream::raw::{Decoder as Zstd, InBuffer, Operation, OutBuffer};

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
/// Decompressed bytes handed to the store at a time.
const CHUNK: usize = 64 * 1024;

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
    let mut unframe = Unframe::new(Box::pin(log)).map_err(|e| format!("zstd: {e}"))?;
    if !unframe.begin().await.map_err(|e| e.to_string())? {
        return Ok(None);
    }
    let (namespace, evaluation, run_id) = &key;
    // Operators (and the restart test) see when a transfer is under way.
    tracing::info!(%namespace, %evaluation, run = %run_id, "storing the samples of a finished run");
    let chunks = futures::stream::try_unfold(unframe, |mut u| async move {
        Ok::<_, std::io::Error>(u.next().await?.map(|chunk| (chunk, u)))
    });
    let reader = tokio_util::io::StreamReader::new(Box::pin(chunks));
    let bundle = BundleKey {
        namespace,
        evaluation,
        run_id,
    };
    let stored = store
        .put_samples(&bundle, reader, validator)
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

/// The samples log, unframed and decompressed chunk by chunk.
struct Unframe {
    log: Pin<Box<dyn AsyncBufRead + Send>>,
    frame: Decoder,
    zstd: Zstd<'static>,
    line: Vec<u8>,
    /// Compressed bytes of the current line and how far zstd has read them.
    input: Vec<u8>,
    at: usize,
    /// Whether zstd filled the last output chunk (it may hold more).
    full: bool,
    out: Vec<u8>,
}

impl Unframe {
    fn new(log: Pin<Box<dyn AsyncBufRead + Send>>) -> std::io::Result<Self> {
        Ok(Unframe {
            log,
            frame: Decoder::default(),
            zstd: Zstd::new()?,
            line: Vec::new(),
            input: Vec::new(),
            at: 0,
            full: false,
            out: vec![0; CHUNK],
        })
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

    /// The next decompressed chunk; `None` at the end of a complete frame.
    async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
        loop {
            if self.at < self.input.len() || self.full {
                let mut src = InBuffer::around(&self.input[self.at..]);
                let mut dst = OutBuffer::around(&mut self.out[..]);
                self.zstd
                    .run(&mut src, &mut dst)
                    .map_err(|e| invalid(format!("the samples are not valid zstd: {e}")))?;
                let produced = dst.pos();
                self.at += src.pos();
                self.full = produced == CHUNK;
                if produced > 0 {
                    return Ok(Some(Bytes::copy_from_slice(&self.out[..produced])));
                }
                continue;
            }
            match self.read_line().await? {
                None => {
                    return match self.frame.finish() {
                        Ok(_) => Ok(None),
                        Err(e) => Err(invalid(e.to_string())),
                    };
                }
                Some(line) => {
                    self.input = self.frame.line(&line).map_err(|e| invalid(e.to_string()))?;
                    self.at = 0;
                }
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
            let (take, end) = match chunk.iter().position(|b| *b == b'\n') {
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
