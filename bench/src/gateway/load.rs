//! The load of the gateway benchmark: one chat call, callers in a closed loop (each sends its
//! next call when the last one ends: the most a subject serves) and calls in an open loop
//! (started on a fixed schedule whatever the subject does, each timed from its scheduled start,
//! so a subject that falls behind shows it in its latency instead of slowing the load down).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Longest one call may take before it counts as failed.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// Where calls go and how: one subject of the benchmark.
pub struct Target {
    /// `direct, JSON`, `gateway, stream`, …
    pub name: String,
    /// The chat completions URL.
    url: String,
    /// `Bearer <key>`.
    auth: String,
    /// The request body.
    body: Bytes,
    /// Its own connection pool, kept across rounds.
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Target {
    /// Chat calls of `model` to `base` (up to `/v1`) with `key`, streamed or not.
    pub fn new(name: String, base: &str, key: &str, model: &str, stream: bool) -> Self {
        let body = serde_json::json!({"model": model, "stream": stream, "max_tokens": 16,
                           "messages": [{"role": "user", "content": "say something short"}]});
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        Self {
            name,
            url: format!("{base}/chat/completions"),
            auth: format!("Bearer {key}"),
            body: Bytes::from(body.to_string()),
            client: Client::builder(TokioExecutor::new()).build(http),
        }
    }

    /// One call, its answer read to the end; `on_headers` runs when the headers are in.
    pub async fn call(&self, on_headers: impl FnOnce()) -> Result<(), String> {
        let request = http::Request::post(&self.url)
            .header("content-type", "application/json")
            .header("authorization", &self.auth)
            .body(Full::new(self.body.clone()))
            .map_err(|e| e.to_string())?;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            on_headers();
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(())
            } else {
                let text = body.to_bytes();
                let text = String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned();
                Err(format!("status {status}: {text}"))
            }
        };
        tokio::time::timeout(CALL_DEADLINE, call)
            .await
            .map_err(|_| format!("no answer within {CALL_DEADLINE:?}"))?
    }
}

/// What one subject did in one loop.
#[derive(Debug, Default)]
pub struct Run {
    /// Latencies of the calls that succeeded.
    pub latencies: Vec<Duration>,
    /// Calls that failed.
    pub failed: usize,
    /// The first failure, to show.
    pub first_error: Option<String>,
    /// From the first call's (scheduled) start to the last call's end.
    pub took: Duration,
}

impl Run {
    fn record(&mut self, outcome: Result<Duration, String>) {
        match outcome {
            Ok(latency) => self.latencies.push(latency),
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    /// Adds another round's figures.
    pub fn extend(&mut self, other: Run) {
        self.latencies.extend(other.latencies);
        self.failed += other.failed;
        self.took += other.took;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Calls answered per second.
    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

/// `concurrency` callers calling `target` back to back for `duration`.
pub async fn closed(target: &Arc<Target>, concurrency: usize, duration: Duration) -> Run {
    let started = Instant::now();
    let until = started + duration;
    let callers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut run = Run::default();
                while Instant::now() < until {
                    let start = Instant::now();
                    let outcome = target.call(|| ()).await.map(|()| start.elapsed());
                    run.record(outcome);
                }
                run
            })
        })
        .collect();
    let mut all = Run::default();
    for caller in callers {
        match caller.await {
            Ok(run) => all.extend(Run {
                took: Duration::ZERO,
                ..run
            }),
            Err(e) => all.record(Err(e.to_string())),
        }
    }
    all.took = started.elapsed();
    all
}

/// When call `i` of an open loop at `rate` calls per second starts, after the first.
pub fn offset(i: u64, rate: u32) -> Duration {
    let nanos = u128::from(i) * 1_000_000_000 / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Calls of an open loop at `rate` per second for `duration`.
pub fn calls(rate: u32, duration: Duration) -> u64 {
    let n = duration.as_nanos() * u128::from(rate) / 1_000_000_000;
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Calls to `target` started at `rate` per second for `duration`, at most `in_flight` of them
/// open at once (a call that waits for room still counts from its scheduled start); each
/// latency from its scheduled start to the end of its answer. A call unanswered `grace` after
/// the window has failed: a subject far behind its load cannot stretch the benchmark.
pub async fn open(
    target: &Arc<Target>,
    rate: u32,
    duration: Duration,
    in_flight: usize,
    grace: Duration,
) -> Run {
    let n = calls(rate, duration);
    let runtime = tokio::runtime::Handle::current();
    let room = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    let (done, mut results) = tokio::sync::mpsc::unbounded_channel();
    // A thread of its own keeps the schedule: the runtime's timer ticks by the millisecond,
    // as coarse as the gaps between calls at 1,000/s.
    let start = Instant::now() + Duration::from_millis(10);
    let cut = tokio::time::Instant::from_std(start + duration + grace);
    let scheduler = {
        let target = target.clone();
        std::thread::spawn(move || {
            for i in 0..n {
                let at = start + offset(i, rate);
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let (target, room, done) = (target.clone(), room.clone(), done.clone());
                runtime.spawn(async move {
                    let call = async {
                        let _permit = room.acquire_owned().await.map_err(|e| e.to_string())?;
                        target.call(|| ()).await.map(|()| at.elapsed())
                    };
                    let outcome = tokio::time::timeout_at(cut, call)
                        .await
                        .unwrap_or_else(|_| Err("unanswered at the end of the grace".into()));
                    let _ = done.send((outcome, Instant::now()));
                });
            }
        })
    };
    let mut run = Run::default();
    let mut last = start;
    // Ends when the scheduler and every call it started have dropped their senders.
    while let Some((outcome, at)) = results.recv().await {
        run.record(outcome);
        last = last.max(at);
    }
    let _ = scheduler.join();
    run.took = last.saturating_duration_since(start);
    run
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `app` served on a free port of 127.0.0.1; calls to it (named `name`).
    pub(in crate::gateway) async fn serve(
        app: axum::Router,
        name: &str,
        stream: bool,
    ) -> Arc<Target> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let base = format!("http://{addr}/v1");
        Arc::new(Target::new(name.into(), &base, "k", "m", stream))
    }

    #[test]
    fn the_schedule_spaces_calls_evenly() {
        assert_eq!(offset(0, 1000), Duration::ZERO);
        assert_eq!(offset(1, 1000), Duration::from_millis(1));
        assert_eq!(offset(2_500, 1000), Duration::from_millis(2_500));
        assert_eq!(offset(1, 3), Duration::from_nanos(333_333_333));
        assert_eq!(calls(1000, Duration::from_secs(5)), 5_000);
        assert_eq!(calls(1000, Duration::from_millis(1_500)), 1_500);
        assert_eq!(calls(0, Duration::from_secs(5)), 0);
    }

    #[test]
    fn a_run_counts_failures_and_keeps_the_first() {
        let mut run = Run::default();
        run.record(Ok(Duration::from_millis(2)));
        run.record(Err("status 500".into()));
        run.record(Err("status 502".into()));
        run.took = Duration::from_millis(500);
        let mut other = Run::default();
        other.record(Ok(Duration::from_millis(3)));
        other.took = Duration::from_millis(500);
        run.extend(other);
        assert_eq!((run.latencies.len(), run.failed), (2, 2));
        assert_eq!(run.first_error.as_deref(), Some("status 500"));
        assert_eq!(run.throughput(), 2.0);
    }

    /// An open loop against a subject slower than its rate: the latency grows with the wait
    /// for room, because each call is timed from its schedule, not from when it could start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_loop_times_calls_from_their_schedule() {
        // Answers after 20 ms each, one at a time (one connection allowed by `in_flight`).
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(|| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                "{}"
            }),
        );
        let target = serve(app, "slow", false).await;
        // 100 calls/s for 0.2 s: 20 calls, 10 ms apart, served one by one in 20 ms each.
        let run = open(
            &target,
            100,
            Duration::from_millis(200),
            1,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!((run.latencies.len(), run.failed), (20, 0));
        let worst = run.latencies.iter().max().copied().unwrap_or_default();
        // The last call is scheduled at 190 ms and served at about 20 × 20 ms = 400 ms:
        // timed from its schedule it waited about 200 ms; timed from its own start, 20 ms.
        assert!(worst >= Duration::from_millis(150), "worst {worst:?}");
        assert!(
            run.took >= Duration::from_millis(380),
            "took {:?}",
            run.took
        );
    }

    /// A subject that never answers fails its calls at the end of the grace: it cannot
    /// stretch the benchmark past its window by more than that.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_loop_ends_at_its_grace() {
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(std::future::pending::<&'static str>),
        );
        let target = serve(app, "silent", false).await;
        let started = Instant::now();
        let run = open(
            &target,
            100,
            Duration::from_millis(100),
            5,
            Duration::from_millis(300),
        )
        .await;
        assert_eq!((run.latencies.len(), run.failed), (0, 10));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(run.first_error.is_some_and(|e| e.contains("grace")));
    }
}
