//! Runs a controller: keys arrive on a [`Trigger`] channel (watch events, freed admission
//! slots, requeues), wait in a fair [`WorkQueue`], and are reconciled at most `concurrency` at
//! a time. Both controllers run on it.
//!
//! It replaces kube-runtime's `Controller` loop because that one reconciles in arrival order:
//! a burst of 10,000 objects in one namespace would hold back every other namespace for the
//! whole burst.

pub mod workqueue;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::Error;
use crate::requeue::{Backoff, Requeue};
pub use workqueue::{Key, WorkQueue};

/// Where keys to reconcile are sent; cheap to clone, never blocks.
pub type Trigger = mpsc::UnboundedSender<Key>;

/// The receiving end of a [`Trigger`].
pub type Triggers = mpsc::UnboundedReceiver<Key>;

/// A new trigger channel.
pub fn channel() -> (Trigger, Triggers) {
    mpsc::unbounded_channel()
}

type Running = Pin<Box<dyn Future<Output = (Key, Requeue)> + Send>>;

/// Reconciles the keys arriving on `triggers` until `shutdown` completes (or every sender is
/// gone), then waits for the reconciles in flight.
pub async fn run<F, Fut>(
    mut triggers: Triggers,
    concurrency: usize,
    reconcile: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(Key) -> Fut,
    Fut: Future<Output = Requeue> + Send + 'static,
{
    let mut queue = WorkQueue::default();
    let mut running: FuturesUnordered<Running> = FuturesUnordered::new();
    let concurrency = concurrency.max(1);
    tokio::pin!(shutdown);
    loop {
        while running.len() < concurrency {
            let Some(key) = queue.pop(Instant::now()) else {
                break;
            };
            let work = reconcile(key.clone());
            running.push(Box::pin(async move { (key, work.await) }));
        }
        let next_due = queue.next_due();
        tokio::select! {
            () = &mut shutdown => break,
            key = triggers.recv() => match key {
                Some(key) => queue.add(key),
                None => break,
            },
            Some((key, requeue)) = running.next(), if !running.is_empty() => {
                let again = match requeue {
                    Requeue::After(delay) => Some(Instant::now() + delay),
                    Requeue::AwaitChange => None,
                };
                queue.done(&key, again);
            }
            () = sleep_until(next_due), if next_due.is_some() => {}
        }
    }
    while running.next().await.is_some() {}
}

/// Longest one reconcile may take: past it, its API calls are dropped and it counts as a
/// passing failure, so a slow or silent API server never holds a shared worker.
pub const RECONCILE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs a controller's reconciles: for each key, the object `lookup` finds in the caches
/// (none: it is gone and was forgotten by its watch) is reconciled within
/// [`RECONCILE_DEADLINE`], and a failure goes through `error_policy`; a failure it retries is
/// retried with the key's [`Backoff`].
pub async fn reconcile_keys<K, C, R, Fut>(
    triggers: Triggers,
    concurrency: u16,
    ctx: Arc<C>,
    lookup: fn(&C, &Key) -> Option<Arc<K>>,
    reconcile: R,
    error_policy: fn(&K, &Error, &C) -> Requeue,
    shutdown: impl Future<Output = ()>,
) where
    K: Send + Sync + 'static,
    C: Send + Sync + 'static,
    R: Fn(Arc<K>, Arc<C>) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Result<Requeue, Error>> + Send + 'static,
{
    let backoff = Arc::new(std::sync::Mutex::new(Backoff::default()));
    let work = move |key: Key| {
        let (ctx, backoff) = (ctx.clone(), backoff.clone());
        async move {
            let backoff = || backoff.lock().unwrap_or_else(|e| e.into_inner());
            let Some(object) = lookup(&ctx, &key) else {
                backoff().succeeded(&key);
                return Requeue::AwaitChange;
            };
            let outcome =
                tokio::time::timeout(RECONCILE_DEADLINE, reconcile(object.clone(), ctx.clone()))
                    .await
                    .unwrap_or(Err(Error::ReconcileTimeout(RECONCILE_DEADLINE.as_secs())));
            match outcome {
                Ok(requeue) => {
                    backoff().succeeded(&key);
                    requeue
                }
                Err(error) => match error_policy(&object, &error, &ctx) {
                    Requeue::After(base) => Requeue::After(backoff().failed(&key, base)),
                    Requeue::AwaitChange => Requeue::AwaitChange,
                },
            }
        }
    };
    run(triggers, usize::from(concurrency), work, shutdown).await;
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_requeue_comes_back_after_its_delay_and_await_change_does_not() {
        let (tx, rx) = channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let started = Instant::now();
        let reconcile = move |key: Key| {
            let log = log.clone();
            async move {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                log.push((key.name.clone(), started.elapsed().as_secs()));
                if key.name == "again" && log.len() < 3 {
                    Requeue::After(Duration::from_secs(10))
                } else {
                    Requeue::AwaitChange
                }
            }
        };
        tx.send(Key::new("a", "again")).ok();
        tx.send(Key::new("a", "once")).ok();
        let shutdown = tokio::time::sleep(Duration::from_secs(60));
        run(rx, 2, reconcile, shutdown).await;
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(
            seen,
            vec![
                ("again".to_string(), 0),
                ("once".to_string(), 0),
                ("again".to_string(), 10)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_concurrency_reconciles_at_once() {
        let (tx, rx) = channel();
        let now = Arc::new(Mutex::new((0usize, 0usize)));
        let gauge = now.clone();
        let reconcile = move |_key: Key| {
            let gauge = gauge.clone();
            async move {
                {
                    let mut g = gauge.lock().unwrap_or_else(|e| e.into_inner());
                    g.0 += 1;
                    g.1 = g.1.max(g.0);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                gauge.lock().unwrap_or_else(|e| e.into_inner()).0 -= 1;
                Requeue::AwaitChange
            }
        };
        for i in 0..20 {
            tx.send(Key::new(format!("ns{}", i % 3), format!("e{i}")))
                .ok();
        }
        run(rx, 4, reconcile, tokio::time::sleep(Duration::from_secs(5))).await;
        let (active, peak) = *now.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!((active, peak), (0, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_object_is_retried_with_growing_delays_and_a_hung_one_is_cut_off() {
        // The reconcile must be `Copy`: it logs to a static.
        static TRIES: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
        let (tx, rx) = channel();
        let reconcile = |_object: Arc<()>, _ctx: Arc<()>| async {
            TRIES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Instant::now());
            // An API server that never answers.
            std::future::pending::<()>().await;
            Ok(Requeue::AwaitChange)
        };
        let lookup = |_: &(), _: &Key| Some(Arc::new(()));
        let policy = |_: &(), _: &Error, _: &()| Requeue::After(Duration::from_secs(5));
        tx.send(Key::new("a", "failing")).ok();
        let shutdown = tokio::time::sleep(Duration::from_secs(3600));
        reconcile_keys(rx, 1, Arc::new(()), lookup, reconcile, policy, shutdown).await;
        let tries = TRIES.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() >= 4, "{gaps:?}");
        // Each try is cut off at the deadline; the pause after it doubles (less jitter).
        for (n, gap) in gaps.iter().take(5).enumerate() {
            let pause = gap.saturating_sub(RECONCILE_DEADLINE);
            let full = Duration::from_secs(5) * (1 << n);
            assert!(
                pause >= full / 2 && pause <= full,
                "try {n}: paused {pause:?}, expected up to {full:?}"
            );
        }
    }
}
