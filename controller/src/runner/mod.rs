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
use crate::requeue::Requeue;
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

/// Runs a controller's reconciles: for each key, the object `lookup` finds in the caches
/// (none: it is gone and was forgotten by its watch) is reconciled, and a failure goes
/// through `error_policy`.
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
    let work = move |key: Key| {
        let ctx = ctx.clone();
        async move {
            let Some(object) = lookup(&ctx, &key) else {
                return Requeue::AwaitChange;
            };
            match reconcile(object.clone(), ctx.clone()).await {
                Ok(requeue) => requeue,
                Err(error) => error_policy(&object, &error, &ctx),
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
}
