//! The controller's two questions to the gateway, each signed with the tokens' key and bounded
//! in time: a run's usage (asked while it runs and once its pod has ended, so the plan can put
//! it on the status and end a refused run `BudgetExceeded`), and revocation (when a run with
//! models ends, the gateway refuses the run's token from then on). Revocation is best effort:
//! a notice that does not arrive after its tries (the gateway down or restarted) leaves the
//! token valid until it expires at the run's deadline.
//!
//! Reconciles never wait for the gateway: they hand their questions to [`Notices`], a few
//! at a time over one pooled client, and read the answers on a later look; an answer the run's
//! end waits for wakes its Evaluation through the work queue's trigger.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

use super::expiring::ExpiringMap;
use super::tally::{MAX_ANSWER_BYTES, RunUsage};
use super::token::{Revocation, SigningKey, UsageQuery};
use crate::config::GatewaySettings;
use crate::runner::{Key, Trigger};

/// Longest a notice or a question may take, connection and answer included.
pub const NOTICE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest connecting to the gateway may take (within [`NOTICE_TIMEOUT`]).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Questions and notices under way at once; more wait for a slot. Each run has at most one
/// question and one notice queued, so the queue is bounded by the runs with models.
pub const SLOTS: usize = 8;
/// Tries of a revocation notice; the pauses between them double from [`RETRY_PAUSE`].
pub const REVOKE_TRIES: u32 = 4;
/// The first pause between two tries of a notice.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The gateway as the controller calls it: one pooled HTTP client (its connections reused),
/// every exchange bounded by [`NOTICE_TIMEOUT`].
pub struct GatewayClient {
    settings: GatewaySettings,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl GatewayClient {
    /// The client of the gateway of `settings`.
    pub fn new(settings: GatewaySettings) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        Self {
            settings,
            client: Client::builder(TokioExecutor::new()).build(http),
            timeout: NOTICE_TIMEOUT,
        }
    }

    /// Tells the gateway that `run` has ended (its tokens expire at `expires`). Plain HTTP to
    /// the gateway's cluster IP, as sandboxes call it.
    ///
    /// # Errors
    /// Why the gateway did not take the notice (never the key or the notice itself).
    pub async fn revoke(&self, run: &str, expires: i64) -> Result<(), String> {
        let notice = key(&self.settings)?.sign_revocation(&Revocation {
            run: run.to_string(),
            expires,
        });
        let request =
            http::Request::post(url(&self.settings, "/revocations")).body(Full::from(notice));
        self.send(request, 0).await.map(drop)
    }

    /// What run `run` of `namespace` (its tokens expire at `expires`) has used, as the
    /// gateway says.
    ///
    /// # Errors
    /// Why there is no answer (never the key or the question itself).
    pub async fn usage(
        &self,
        namespace: &str,
        run: &str,
        expires: i64,
    ) -> Result<RunUsage, String> {
        let query = key(&self.settings)?.sign_usage_query(&UsageQuery {
            namespace: namespace.to_string(),
            run: run.to_string(),
            expires,
        });
        let request = http::Request::get(url(&self.settings, &format!("/runs/{run}/usage")))
            .header(http::header::AUTHORIZATION, format!("Bearer {query}"))
            .body(Full::default());
        let body = self.send(request, MAX_ANSWER_BYTES).await?;
        serde_json::from_slice(&body).map_err(|e| format!("the gateway's answer is not usage: {e}"))
    }

    /// Sends `request` and reads up to `max` bytes of a successful answer, all within the
    /// client's timeout.
    async fn send(
        &self,
        request: Result<http::Request<Full<Bytes>>, http::Error>,
        max: usize,
    ) -> Result<Bytes, String> {
        let request = request.map_err(|e| format!("cannot build a request to the gateway: {e}"))?;
        let url = request.uri().to_string();
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("the gateway at {url} did not answer: {e}"))?;
            if !response.status().is_success() {
                return Err(format!(
                    "the gateway at {url} answered {}",
                    response.status()
                ));
            }
            Limited::new(response.into_body(), max)
                .collect()
                .await
                .map(|body| body.to_bytes())
                .map_err(|e| {
                    format!("the gateway's answer at {url} is unreadable or too long: {e}")
                })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                format!(
                    "the gateway at {url} did not answer within {:?}",
                    self.timeout
                )
            })?
    }
}

/// What a reconcile learns of a run's usage from [`Notices::usage`].
#[derive(Clone, Debug, PartialEq)]
pub enum UsageAnswer {
    /// The newest answer, if any, to a question asked before the run's pod was seen ended; a
    /// newer question may be under way.
    Latest(Option<Result<RunUsage, String>>),
    /// The answer to a question asked after the run's pod was seen ended: the run's end.
    Final(Result<RunUsage, String>),
}

/// One run's questions.
#[derive(Default)]
struct Asked {
    /// A question is under way.
    asking: bool,
    /// The one under way was asked after the pod was seen ended.
    asking_final: bool,
    /// The pod has been seen ended: the run's end waits for an answer.
    ended_seen: bool,
    /// The newest answer to a question from before the end.
    latest: Option<Result<RunUsage, String>>,
    /// The answer to the question asked after the end.
    last: Option<Result<RunUsage, String>>,
}

#[derive(Default)]
struct State {
    usage: ExpiringMap<Asked>,
    /// Runs whose revocation notice is queued or being tried.
    revoking: HashSet<String>,
}

/// The controller's questions and notices to the gateway, outside the reconciles.
pub struct Notices {
    gateway: GatewayClient,
    slots: Semaphore,
    state: Mutex<State>,
    wake: Trigger,
}

impl Notices {
    /// Questions to `gateway` whose awaited answers reconcile their Evaluation through `wake`.
    pub fn new(gateway: GatewayClient, wake: Trigger) -> Arc<Self> {
        Arc::new(Self {
            gateway,
            slots: Semaphore::new(SLOTS),
            state: Mutex::default(),
            wake,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What run `run` of `namespace` (its tokens expire at `expires`) has used, never waiting:
    /// the newest answer, and a new question asked unless one is under way. Once `ended` (its
    /// pod has ended), a question asked from then on gives [`UsageAnswer::Final`], and its
    /// answer reconciles `waiter`; earlier answers wake nobody (the next look shows them).
    pub fn usage(
        self: &Arc<Self>,
        waiter: Key,
        namespace: &str,
        run: &str,
        expires: i64,
        ended: bool,
    ) -> UsageAnswer {
        let mut state = self.state();
        let asked = state
            .usage
            .entry(run, expires, super::now(), Asked::default);
        if ended {
            if let Some(last) = &asked.last {
                return UsageAnswer::Final(last.clone());
            }
            asked.ended_seen = true;
        }
        let latest = UsageAnswer::Latest(asked.latest.clone());
        if asked.asking {
            // One question at a time; one from before the end wakes the run when answered
            // (`ended_seen`), whose next look asks the final one.
            return latest;
        }
        asked.asking = true;
        asked.asking_final = ended;
        drop(state);
        let notices = self.clone();
        let (namespace, run) = (namespace.to_string(), run.to_string());
        tokio::spawn(async move {
            let answer = match notices.slots.acquire().await {
                Ok(_slot) => notices.gateway.usage(&namespace, &run, expires).await,
                Err(_) => Err("the controller is shutting down".into()),
            };
            let mut state = notices.state();
            let Some(asked) = state.usage.get_mut(&run) else {
                return; // revoked meanwhile: the run has ended
            };
            asked.asking = false;
            if std::mem::take(&mut asked.asking_final) {
                asked.last = Some(answer);
            } else {
                asked.latest = Some(answer);
            }
            let awaited = asked.ended_seen;
            drop(state);
            if awaited {
                // The receiver is gone only when the controller stops.
                let _ = notices.wake.send(waiter);
            }
        });
        latest
    }

    /// Tells the gateway, outside the reconcile, that `run` has ended (its tokens expire at
    /// `expires`), trying up to [`REVOKE_TRIES`] times; and forgets the run's questions. A
    /// notice already queued for the run is not queued twice.
    pub fn revoke(self: &Arc<Self>, run: &str, expires: i64) {
        let mut state = self.state();
        state.usage.remove(run);
        if !state.revoking.insert(run.to_string()) {
            return;
        }
        drop(state);
        let notices = self.clone();
        let run = run.to_string();
        tokio::spawn(async move {
            let mut pause = RETRY_PAUSE;
            for tried in 1..=REVOKE_TRIES {
                let sent = match notices.slots.acquire().await {
                    Ok(_slot) => notices.gateway.revoke(&run, expires).await,
                    Err(_) => break,
                };
                match sent {
                    Ok(()) => break,
                    Err(why) if tried == REVOKE_TRIES => {
                        tracing::warn!(%run, %why, tries = tried, "the model gateway was not told that the run ended; its token stays valid until it expires");
                    }
                    Err(_) => {
                        tokio::time::sleep(pause).await;
                        pause = pause.saturating_mul(2);
                    }
                }
            }
            notices.state().revoking.remove(&run);
        });
    }
}

fn key(settings: &GatewaySettings) -> Result<SigningKey, String> {
    SigningKey::new(&settings.token_key.0).ok_or_else(|| "the token key is too short".into())
}

fn url(settings: &GatewaySettings, path: &str) -> String {
    format!("{}{path}", settings.base_url.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A gateway stand-in that accepts connections, counts them and never answers.
    async fn silent_gateway() -> (GatewaySettings, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(connection);
            }
        });
        let settings = GatewaySettings {
            base_url: format!("http://{address}"),
            namespace: "crucible".into(),
            pod_labels: std::collections::BTreeMap::new(),
            port: 8080,
            token_key: crate::config::TokenKey(vec![7; 32].into()),
        };
        (settings, accepted)
    }

    /// A gateway that never answers holds no reconcile: asking about many runs returns at once
    /// (reconciles of other runs go on), only the run whose end waits is woken, once its
    /// question times out, with the failure as its final answer; and a revocation notice is
    /// tried [`REVOKE_TRIES`] times, then given up.
    #[tokio::test(start_paused = true)]
    async fn a_silent_gateway_holds_no_reconcile_and_an_ended_run_still_ends() {
        let (settings, accepted) = silent_gateway().await;
        let (wake, mut woken) = crate::runner::channel();
        let notices = Notices::new(GatewayClient::new(settings), wake);
        let expires = crate::gateway::now() + 3600;
        let asked_at = tokio::time::Instant::now();
        for i in 0..100 {
            let run = format!("run-{i}");
            let key = Key::new("team-a", format!("agent-{i}"));
            let answer = notices.usage(key, "team-a", &run, expires, false);
            assert_eq!(answer, UsageAnswer::Latest(None));
        }
        let ended = Key::new("team-a", "agent-ended");
        let first = notices.usage(ended.clone(), "team-a", "run-ended", expires, true);
        assert_eq!(first, UsageAnswer::Latest(None), "asked; the end waits");
        assert_eq!(
            tokio::time::Instant::now(),
            asked_at,
            "no question waited for the gateway"
        );
        // Only the ended run is woken (the others' answers wait for their next look).
        assert_eq!(woken.recv().await, Some(ended.clone()));
        let again = notices.usage(ended.clone(), "team-a", "run-ended", expires, true);
        let UsageAnswer::Final(Err(why)) = again else {
            panic!("the timeout is the final answer: {again:?}");
        };
        assert!(why.contains("did not answer within"), "{why}");

        let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
        notices.revoke("run-ended", expires);
        notices.revoke("run-ended", expires);
        // Past every try and pause: the notice's task ends and forgets the run.
        tokio::time::sleep(NOTICE_TIMEOUT * (REVOKE_TRIES + 1) + RETRY_PAUSE * 16).await;
        let tries = accepted.load(std::sync::atomic::Ordering::SeqCst) - before;
        assert_eq!(
            tries,
            usize::try_from(REVOKE_TRIES).unwrap_or(usize::MAX),
            "one notice, tried {REVOKE_TRIES} times (connections reused where they can be)"
        );
        assert!(notices.state().revoking.is_empty());
        assert!(woken.try_recv().is_err(), "nobody else was woken");
        // A later look at a running run reads its answer (the timeout) and asks again.
        let later = notices.usage(
            Key::new("team-a", "agent-0"),
            "team-a",
            "run-0",
            expires,
            false,
        );
        assert!(
            matches!(later, UsageAnswer::Latest(Some(Err(_)))),
            "{later:?}"
        );
    }
}
