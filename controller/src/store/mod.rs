//! The results store (DESIGN.md "Samples", docs/samples.md "Store"): where a run's samples
//! bundle is kept, through `object_store` (a local directory or S3-compatible storage).
//!
//! A bundle is the run's samples file, zstd-compressed (by the pod's samples container for a
//! run on a cluster, by the store for a local run) and validated while it streams through
//! (memory: one part, zstd's window of at most 2^[`ZSTD_WINDOW_LOG`] bytes and the validator's
//! bound), stored at
//! `<namespace>/<evaluation>/<runId>/samples.jsonl.zst` under the store URL's path, and
//! identified by the sha256 of the stored bytes. Writing is idempotent per run id: a bundle that
//! is already there (a controller restarted after storing it) is read back instead of stored
//! again, so the digest and statistics always describe the stored bytes. A bundle appears only
//! complete: a small one is one atomic put, a large one a multipart upload that becomes visible
//! when completed and is aborted when the samples break the protocol.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use zstd::stream::raw::{CParameter, DParameter, Decoder, Encoder, InBuffer, Operation, OutBuffer};

use crate::digest::hex;
use crate::samples::protocol::{Aggregates, Line, ProtocolError, Validator};
use crate::samples::transport::ZSTD_WINDOW_LOG;

/// Name of a run's bundle under its run id.
pub const BUNDLE_NAME: &str = "samples.jsonl.zst";
/// Size of one part of a multipart upload to S3 (its smallest allowed part); a bundle that
/// compresses to less is stored with a single put.
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// Size of one part in a local directory, which has no smallest part: memory per transfer.
pub const LOCAL_PART_SIZE: usize = 1024 * 1024;
/// zstd level: the default, fast enough to keep up with an upload at a fraction of a core.
const ZSTD_LEVEL: i32 = 3;
/// Bytes read from the source, and produced by zstd, per step.
const CHUNK: usize = 64 * 1024;
/// Limit of one request to an object store, and of opening its connection (humantime, as
/// object_store's config keys take them).
const REQUEST_TIMEOUT: &str = "60s";
const CONNECT_TIMEOUT: &str = "10s";

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL cannot be used.
    #[error("results store {url}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why not.
        reason: String,
    },
    /// The samples broke the protocol: nothing was stored.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Reading the samples failed.
    #[error("reading samples: {0}")]
    Read(#[from] std::io::Error),
    /// The store refused or failed a request.
    #[error("results store: {0}")]
    Object(#[from] object_store::Error),
}

/// Which run a bundle belongs to.
#[derive(Clone, Copy, Debug)]
pub struct BundleKey<'a> {
    /// Namespace of the Evaluation.
    pub namespace: &'a str,
    /// Name of the Evaluation.
    pub evaluation: &'a str,
    /// Run id.
    pub run_id: &'a str,
}

/// A stored bundle.
#[derive(Debug)]
pub struct Stored {
    /// `<store URL>/<namespace>/<evaluation>/<runId>/samples.jsonl.zst`.
    pub uri: String,
    /// `sha256:<hex>` of the stored (compressed) bytes.
    pub digest: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// False when the bundle was already stored and was read back instead.
    pub written: bool,
    /// The validated samples, reduced for the statistics.
    pub aggregates: Aggregates,
}

/// A stored bundle as read.
#[derive(Debug)]
pub struct Read {
    /// `sha256:<hex>` of the stored (compressed) bytes.
    pub digest: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// The validated samples, reduced for the statistics.
    pub aggregates: Aggregates,
}

/// A results store opened from its URL.
#[derive(Clone, Debug)]
pub struct Store {
    url: String,
    inner: Arc<dyn ObjectStore>,
}

impl Store {
    /// Opens `file:///dir` (the directory is created) or `s3://bucket[/prefix]` (credentials,
    /// region and endpoint from the usual `AWS_*` variables of the controller's environment).
    ///
    /// # Errors
    /// Another scheme, or a URL or directory that cannot be used.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        Self::open_with(url, true)
    }

    /// As [`Store::open`] for a reader: a `file://` directory must exist already (a mistyped
    /// path is an error, not a new empty store).
    ///
    /// # Errors
    /// As [`Store::open`], and a missing directory.
    pub fn open_existing(url: &str) -> Result<Store, StoreError> {
        Self::open_with(url, false)
    }

    /// The URL it was opened from (bundles' URIs start with it).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn open_with(url: &str, create: bool) -> Result<Store, StoreError> {
        let bad = |reason: String| StoreError::Url {
            url: url.to_string(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let inner: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad("not a local directory".into()))?;
                if create {
                    std::fs::create_dir_all(&dir).map_err(|e| bad(e.to_string()))?;
                } else if !dir.is_dir() {
                    return Err(bad(format!("{} is not a directory", dir.display())));
                }
                Arc::new(LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(e.to_string()))?)
            }
            "s3" => {
                // reqwest's rustls has no provider of its own and panics without a process
                // default; an Err means one is already installed, which serves as well.
                let _ = rustls::crypto::ring::default_provider().install_default();
                // Timeouts as config keys: replacing the client options would drop what the
                // environment set (AWS_ALLOW_HTTP, proxies).
                let client = |key| AmazonS3ConfigKey::Client(key);
                let s3 = AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_config(client(ClientConfigKey::Timeout), REQUEST_TIMEOUT)
                    .with_config(client(ClientConfigKey::ConnectTimeout), CONNECT_TIMEOUT)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                let prefix = parsed.path().trim_matches('/');
                if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix))
                }
            }
            other => {
                return Err(bad(format!(
                    "scheme {other}:// is not supported (file, s3)"
                )));
            }
        };
        Ok(Store {
            url: url.trim_end_matches('/').to_string(),
            inner,
        })
    }

    fn path(key: &BundleKey<'_>) -> Path {
        Path::from_iter([key.namespace, key.evaluation, key.run_id, BUNDLE_NAME])
    }

    /// Stores the samples read from `source` as run `key`'s bundle, compressing them and
    /// validating them with `validator` on the way; when the run's bundle is already stored,
    /// validates that instead and stores nothing.
    ///
    /// # Errors
    /// The samples break the protocol (nothing is stored), or reading or the store failed.
    pub async fn put_samples(
        &self,
        key: &BundleKey<'_>,
        mut source: impl AsyncRead + Unpin,
        mut validator: Validator,
    ) -> Result<Stored, StoreError> {
        let path = Self::path(key);
        if self.exists(&path).await? {
            return self.read_back(key, &path, validator).await;
        }
        let mut parts = Parts::new(self, &path);
        let result = async {
            let mut encoder = Encoder::new(ZSTD_LEVEL)?;
            encoder.set_parameter(CParameter::WindowLog(ZSTD_WINDOW_LOG))?;
            let mut input = vec![0u8; CHUNK];
            let mut out = vec![0u8; CHUNK];
            loop {
                let n = source.read(&mut input).await?;
                if n == 0 {
                    break;
                }
                validator.push(&input[..n])?;
                let mut src = InBuffer::around(&input[..n]);
                while src.pos() < n {
                    let mut dst = OutBuffer::around(&mut out[..]);
                    encoder.run(&mut src, &mut dst)?;
                    parts.write(dst.as_slice()).await?;
                }
            }
            let aggregates = validator.finish()?;
            loop {
                let mut dst = OutBuffer::around(&mut out[..]);
                let remaining = encoder.finish(&mut dst, true)?;
                parts.write(dst.as_slice()).await?;
                if remaining == 0 {
                    break;
                }
            }
            Ok::<_, StoreError>(aggregates)
        }
        .await;
        self.complete(key, parts, result).await
    }

    /// Stores `compressed`, the run's samples file as a zstd stream (as the pod's samples
    /// container compressed it), byte for byte as run `key`'s bundle, while the samples it
    /// decompresses to are validated with `validator`: nothing is compressed again, and what is
    /// stored is exactly what was validated. When the run's bundle is already stored, validates
    /// that instead and stores nothing. An error from `compressed` (a frame cut short) stores
    /// nothing.
    ///
    /// # Errors
    /// As [`Store::put_samples`], and a zstd stream that is not valid, ends inside a frame, or
    /// asks for a window over 2^[`ZSTD_WINDOW_LOG`] bytes.
    pub async fn put_compressed(
        &self,
        key: &BundleKey<'_>,
        mut compressed: impl Stream<Item = std::io::Result<Bytes>> + Unpin,
        mut validator: Validator,
    ) -> Result<Stored, StoreError> {
        let path = Self::path(key);
        if self.exists(&path).await? {
            return self.read_back(key, &path, validator).await;
        }
        let mut parts = Parts::new(self, &path);
        let result = async {
            let mut unpack = Unpack::new()?;
            while let Some(bytes) = compressed.next().await {
                let bytes = bytes?;
                unpack.push(&bytes, &mut validator, &mut |_| {})?;
                parts.write(&bytes).await?;
            }
            unpack.finish()?;
            Ok::<_, StoreError>(validator.finish()?)
        }
        .await;
        self.complete(key, parts, result).await
    }

    async fn exists(&self, path: &Path) -> Result<bool, StoreError> {
        match self.inner.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes the bundle visible when the samples were valid; otherwise aborts its upload.
    async fn complete(
        &self,
        key: &BundleKey<'_>,
        parts: Parts<'_>,
        result: Result<Aggregates, StoreError>,
    ) -> Result<Stored, StoreError> {
        match result {
            Ok(aggregates) => {
                let (digest, size) = parts.finish().await?;
                Ok(Stored {
                    uri: self.uri(key),
                    digest,
                    size,
                    written: true,
                    aggregates,
                })
            }
            Err(e) => {
                parts.abort().await;
                Err(e)
            }
        }
    }

    fn uri(&self, key: &BundleKey<'_>) -> String {
        format!("{}/{}", self.url, Self::path(key))
    }

    /// Digest and validation of the stored bundle at `path`.
    async fn read_back(
        &self,
        key: &BundleKey<'_>,
        path: &Path,
        validator: Validator,
    ) -> Result<Stored, StoreError> {
        let read = self.stream(path, validator, &mut |_| {}).await?;
        Ok(Stored {
            uri: self.uri(key),
            digest: read.digest,
            size: read.size,
            written: false,
            aggregates: read.aggregates,
        })
    }

    /// Reads the bundle at `object` (a path under the store's root, such as
    /// `ns/eval/run/samples.jsonl.zst`), validating it with `validator` and handing each sample
    /// line to `on_line` as it streams (memory: one chunk, zstd's window and the validator's
    /// bound).
    ///
    /// # Errors
    /// A bad object path, a missing object, a store failure, a zstd stream that is not valid
    /// (as for [`Store::put_compressed`]), or samples that break the protocol.
    pub async fn read(
        &self,
        object: &str,
        validator: Validator,
        on_line: &mut impl FnMut(Line<'_>),
    ) -> Result<Read, StoreError> {
        let path = Path::parse(object).map_err(|e| StoreError::Url {
            url: format!("{}/{object}", self.url),
            reason: e.to_string(),
        })?;
        self.stream(&path, validator, on_line).await
    }

    async fn stream(
        &self,
        path: &Path,
        mut validator: Validator,
        on_line: &mut impl FnMut(Line<'_>),
    ) -> Result<Read, StoreError> {
        let mut unpack = Unpack::new()?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut stream = self.inner.get(path).await?.into_stream();
        while let Some(bytes) = stream.next().await {
            let bytes = bytes?;
            hasher.update(&bytes);
            size += bytes.len() as u64;
            unpack.push(&bytes, &mut validator, on_line)?;
        }
        unpack.finish()?;
        Ok(Read {
            digest: format!("sha256:{}", hex(&hasher.finalize())),
            size,
            aggregates: validator.finish_with(on_line)?,
        })
    }

    /// Bytes of one part of a multipart upload: S3's smallest for S3; for a local directory,
    /// where parts have no smallest size, less memory per transfer.
    fn part_size(&self) -> usize {
        if self.url.starts_with("file:") {
            LOCAL_PART_SIZE
        } else {
            PART_SIZE
        }
    }
}

/// A bundle's bytes on their way up: one put when they fit in one part, else a multipart
/// upload with one part in memory at a time (the next is filled once the last one is stored).
struct Parts<'a> {
    store: &'a Store,
    path: &'a Path,
    size_of_part: usize,
    part: Vec<u8>,
    multipart: Option<WriteMultipart>,
    hasher: Sha256,
    size: u64,
}

impl<'a> Parts<'a> {
    fn new(store: &'a Store, path: &'a Path) -> Self {
        Parts {
            store,
            path,
            size_of_part: store.part_size(),
            part: Vec::new(),
            multipart: None,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    async fn write(&mut self, mut bytes: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            if self.part.capacity() == 0 {
                self.part.reserve_exact(self.size_of_part);
            }
            let n = bytes.len().min(self.size_of_part - self.part.len());
            self.part.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.part.len() == self.size_of_part {
                let upload = match self.multipart.as_mut() {
                    Some(upload) => upload,
                    None => self.multipart.insert(WriteMultipart::new_with_chunk_size(
                        self.store.inner.put_multipart(self.path).await?,
                        self.size_of_part,
                    )),
                };
                // Handed over, not copied; the next part is allocated once this one is stored.
                upload.put(std::mem::take(&mut self.part).into());
                upload.wait_for_capacity(0).await?;
            }
        }
        Ok(())
    }

    /// Completes the upload: the bundle's digest and size.
    async fn finish(mut self) -> Result<(String, u64), StoreError> {
        let part = std::mem::take(&mut self.part);
        match self.multipart.take() {
            None => {
                self.store
                    .inner
                    .put(self.path, PutPayload::from(part))
                    .await?;
            }
            Some(mut upload) => {
                if !part.is_empty() {
                    upload.put(part.into());
                }
                upload.finish().await?;
            }
        }
        Ok((
            format!("sha256:{}", hex(&self.hasher.finalize())),
            self.size,
        ))
    }

    async fn abort(self) {
        if let Some(upload) = self.multipart {
            // The error is what the user needs; a failed abort leaves only an incomplete
            // upload, invisible to readers (docs/samples.md: expire them with a lifecycle rule).
            if let Err(abort) = upload.abort().await {
                tracing::warn!(error = %abort, "aborting a samples upload failed");
            }
        }
    }
}

/// A bundle's zstd stream in, its samples to the validator, with bounded output per step
/// however well the bytes compress.
struct Unpack {
    decoder: Decoder<'static>,
    out: Vec<u8>,
    /// Whether the bytes so far end at the end of a zstd frame.
    whole: bool,
}

impl Unpack {
    fn new() -> std::io::Result<Self> {
        let mut decoder = Decoder::new()?;
        decoder.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG))?;
        Ok(Unpack {
            decoder,
            out: vec![0u8; CHUNK],
            whole: true,
        })
    }

    fn push(
        &mut self,
        bytes: &[u8],
        validator: &mut Validator,
        on_line: &mut impl FnMut(Line<'_>),
    ) -> Result<(), StoreError> {
        let mut src = InBuffer::around(bytes);
        loop {
            let before = src.pos();
            let mut dst = OutBuffer::around(&mut self.out[..]);
            let hint = self.decoder.run(&mut src, &mut dst).map_err(not_zstd)?;
            let produced = dst.pos();
            validator.push_with(&self.out[..produced], on_line)?;
            if hint == 0 {
                self.whole = true;
            } else if src.pos() > before || produced > 0 {
                self.whole = false;
            }
            if src.pos() == bytes.len() && produced < CHUNK {
                break;
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), StoreError> {
        if self.whole {
            Ok(())
        } else {
            Err(StoreError::Read(not_zstd(std::io::Error::other(
                "the zstd stream ends inside a frame",
            ))))
        }
    }
}

fn not_zstd(e: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("the samples are not valid zstd: {e}"),
    )
}

pub mod retention;

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
