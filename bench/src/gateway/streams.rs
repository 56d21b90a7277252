//! The memory step: many streamed calls held open at once through a subject (against a
//! stand-in provider that waits between the parts of each answer), the subject's resident
//! memory before, when every stream is open, at its highest while they run, and after they
//! have ended. Run twice in a row: a second wave that ends where the first did shows the
//! memory is flat (held per open stream, given back after), not growing with calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::load::Target;
use super::procs::resident_kib;

/// Events of the stand-in's chat stream in answer to the benchmark's prompt, usage asked for
/// (`stand-in reply to: say something short`): the role, six words, the stop, the usage and
/// `[DONE]`. With a gap before each, a stream lasts `STREAM_PARTS` gaps.
pub const STREAM_PARTS: u32 = 10;

/// How often resident memory is sampled while the streams run.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// A subject's memory in one wave, in KiB.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Wave {
    /// Before the first stream.
    pub before: u64,
    /// When the last stream's headers came in (every stream open at once, if `most_open`
    /// says so).
    pub all_open: u64,
    /// The highest sample while streams were open.
    pub peak: u64,
    /// After every stream ended.
    pub after: u64,
    /// Most streams open at the same moment.
    pub most_open: usize,
    /// Streams that failed.
    pub failed: usize,
    /// The first failure, to show.
    pub first_error: Option<String>,
}

/// `streams` streamed calls to `target` at once; the memory of process `pid` around them.
pub async fn wave(target: &Arc<Target>, streams: usize, pid: u32) -> Result<Wave, String> {
    let rss = || resident_kib(pid).ok_or_else(|| format!("process {pid} is gone"));
    let before = rss()?;
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let headers = Arc::new(AtomicUsize::new(0));
    let all_in = Arc::new(tokio::sync::Notify::new());
    let calls: Vec<_> = (0..streams)
        .map(|_| {
            let (target, open, most) = (target.clone(), open.clone(), most.clone());
            let (headers, all_in) = (headers.clone(), all_in.clone());
            tokio::spawn(async move {
                let outcome = target
                    .call(|| {
                        let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        if headers.fetch_add(1, Ordering::SeqCst) + 1 == streams {
                            all_in.notify_one();
                        }
                    })
                    .await;
                open.fetch_sub(1, Ordering::SeqCst);
                outcome
            })
        })
        .collect();
    let ended = futures::future::join_all(calls);
    tokio::pin!(ended);
    let mut wave = Wave {
        before,
        ..Wave::default()
    };
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    let results = loop {
        tokio::select! {
            results = &mut ended => break results,
            () = all_in.notified(), if wave.all_open == 0 => {
                wave.all_open = rss()?;
                wave.peak = wave.peak.max(wave.all_open);
            }
            _ = tick.tick() => wave.peak = wave.peak.max(rss()?),
        }
    };
    wave.after = rss()?;
    wave.most_open = most.load(Ordering::SeqCst);
    for result in results {
        let error = match result {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => e.to_string(),
        };
        wave.failed += 1;
        wave.first_error.get_or_insert(error);
    }
    Ok(wave)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;
    use crate::gateway::load::tests::serve;

    /// The step against a server that holds each answer 300 ms: every stream is counted open
    /// at once, and the figures come from the process named.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_stream_is_open_at_once_and_the_memory_is_sampled() {
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(|| async {
                let parts = futures::stream::iter(0..3).then(|i| async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, std::convert::Infallible>(format!("data: {i}\n\n"))
                });
                axum::body::Body::from_stream(parts)
            }),
        );
        let target = serve(app, "held", true).await;
        let wave = wave(&target, 50, std::process::id()).await.expect("wave");
        assert_eq!((wave.most_open, wave.failed), (50, 0));
        assert!(wave.before > 0 && wave.all_open > 0 && wave.after > 0);
        assert!(wave.peak >= wave.all_open);
    }
}
