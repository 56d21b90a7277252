//! Retention (docs/samples.md, "The store"): with `--results-retention`, the leader sweeps the
//! store at its start and then every [`SWEEP_INTERVAL`] and deletes the samples bundles last
//! written longer ago than the retention. Nothing is deleted by default, and never because an
//! Evaluation was deleted (results outlive their manifests).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use object_store::ObjectStoreExt;

use super::{BUNDLE_NAME, Store, StoreError};

/// Time between two sweeps: a whole-store listing, so rarely.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

impl Store {
    /// Deletes the samples bundles (`…/samples.jsonl.zst`; nothing else) last modified before
    /// `cutoff`; returns how many.
    ///
    /// # Errors
    /// Listing or deleting failed (the sweep stops there; the next one goes on).
    pub async fn prune(&self, cutoff: SystemTime) -> Result<usize, StoreError> {
        let cutoff = cutoff
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mut listing = self.inner.list(None);
        let mut old = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            if meta.location.filename() == Some(BUNDLE_NAME)
                && meta.last_modified.timestamp() < cutoff
            {
                old.push(meta.location);
            }
        }
        for location in &old {
            self.inner.delete(location).await?;
        }
        Ok(old.len())
    }
}

/// Sweeps `store` now and every [`SWEEP_INTERVAL`], deleting bundles older than `retention`.
pub async fn keep_pruning(store: Arc<Store>, retention: Duration) {
    let mut every = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        every.tick().await;
        let cutoff = SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(UNIX_EPOCH);
        match store.prune(cutoff).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "results past their retention deleted"),
            Err(error) => tracing::warn!(%error, "results retention sweep failed"),
        }
    }
}
