//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one
//! reconciles. kube 5 has no helper for it; this is client-go's algorithm in small:
//!
//! - A standby judges expiry by its own clock: the Lease is expired when its record (holder,
//!   renewTime, transitions) has not changed for the lease duration *as this replica observed
//!   it*, never by comparing the holder's wall-clock `renewTime` with its own (clocks differ).
//! - Writes use optimistic concurrency on the resourceVersion.
//! - The leader renews every [`RENEW_INTERVAL`], retries every [`RETRY_INTERVAL`], bounds each
//!   request by [`REQUEST_TIMEOUT`], and gives up leadership when no renewal succeeded within
//!   [`RENEW_DEADLINE`] *counted from the start of the last successful request*: a standby can
//!   take over only after [`LEASE_DURATION`], which is longer.
//!
//! [`Observer`] and [`Renewal`] are pure; [`acquire`] and [`renew`] talk to the API server.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

/// How long a Lease holds without renewal. A crashed leader is replaced within this time.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// The leader gives up when it could not renew for this long (client-go's renewDeadline).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader renews when all is well.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// How often a standby tries to take the Lease, and a leader retries a failed renewal.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// Longest one request to the API server may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What to do with the Lease as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// Take it (free, expired, or already ours): write it with us as holder.
    Take,
    /// Someone else holds it.
    Wait {
        /// The holder.
        holder: String,
    },
}

/// What identifies one state of the Lease: a change of any part is a sign of life.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: String,
    renew_time: Option<String>,
    transitions: Option<i32>,
    duration: Duration,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Self {
        Record {
            holder: spec.holder_identity.clone().unwrap_or_default(),
            renew_time: spec.renew_time.as_ref().map(|t| t.0.to_string()),
            transitions: spec.lease_transitions,
            duration: Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
            ),
        }
    }
}

/// What a replica has seen of the Lease, by its own clock.
#[derive(Clone, Debug, Default)]
pub struct Observer {
    seen: Option<(Record, Instant)>,
}

impl Observer {
    /// Notes the Lease as read at `now` and decides whether `me` may take it.
    pub fn decide(&mut self, lease: Option<&Lease>, me: &str, now: Instant) -> LeaseDecision {
        let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
            return LeaseDecision::Take;
        };
        let record = Record::of(spec);
        if record.holder.is_empty() || record.holder == me {
            return LeaseDecision::Take;
        }
        let since = match &self.seen {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                // A new record: its holder is alive as of now, whatever its clock says.
                self.seen = Some((record.clone(), now));
                now
            }
        };
        if now.duration_since(since) > record.duration {
            LeaseDecision::Take
        } else {
            LeaseDecision::Wait {
                holder: record.holder,
            }
        }
    }
}

/// The leader's renewal deadline.
#[derive(Clone, Copy, Debug)]
pub struct Renewal {
    /// When the last successful renewal's request was sent.
    last: Instant,
}

impl Renewal {
    /// Leadership taken by a request sent at `sent`.
    pub fn new(sent: Instant) -> Self {
        Renewal { last: sent }
    }

    /// A renewal whose request was sent at `sent` succeeded.
    pub fn renewed(&mut self, sent: Instant) {
        self.last = self.last.max(sent);
    }

    /// When leadership must be given up if no renewal succeeds before.
    pub fn deadline(&self) -> Instant {
        self.last + RENEW_DEADLINE
    }

    /// How long the next request may take: at most [`REQUEST_TIMEOUT`], and never past the
    /// deadline. `None` once the deadline has passed.
    pub fn request_budget(&self, now: Instant) -> Option<Duration> {
        let left = self.deadline().checked_duration_since(now)?;
        (!left.is_zero()).then(|| left.min(REQUEST_TIMEOUT))
    }
}

fn spec(me: &str, previous: Option<&LeaseSpec>, now: jiff::Timestamp) -> LeaseSpec {
    let ours = previous.and_then(|s| s.holder_identity.as_deref()) == Some(me);
    let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15)),
        acquire_time: if ours {
            previous.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
        ..Default::default()
    }
}

/// One attempt to take or renew the Lease; `Ok(true)` when we hold it afterwards. The Lease
/// has no owner: owned by a leader's pod, the garbage collector would delete it when that pod
/// goes, under the replica that took over, which would then see no Lease and race the others
/// to create one. Owner references to a pod that older versions wrote are removed.
async fn try_take(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    observer: &mut Observer,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(name).await?;
    // Written into the Lease for people and other tools; never used to judge expiry.
    let now = jiff::Timestamp::now();
    match observer.decide(current.as_ref(), me, Instant::now()) {
        LeaseDecision::Wait { .. } => Ok(false),
        LeaseDecision::Take => {
            let result = match current {
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.to_string()),
                            ..Default::default()
                        },
                        spec: Some(spec(me, None, now)),
                    };
                    api.create(&PostParams::default(), &lease).await
                }
                Some(mut lease) => {
                    // `replace` carries the resourceVersion we read: if another replica wrote
                    // in between, this fails with 409 and we try again later.
                    lease.spec = Some(spec(me, lease.spec.as_ref(), now));
                    if let Some(owners) = lease.metadata.owner_references.as_mut() {
                        owners.retain(|o| o.kind != "Pod");
                    }
                    api.replace(name, &PostParams::default(), &lease).await
                }
            };
            match result {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// One bounded attempt: `Ok(true)` when we hold the Lease afterwards; a request that takes
/// longer than `budget` counts as failed.
async fn attempt(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    observer: &mut Observer,
    budget: Duration,
) -> Result<bool, String> {
    match tokio::time::timeout(budget, try_take(api, name, me, observer)).await {
        Ok(Ok(held)) => Ok(held),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {budget:?}")),
    }
}

/// Blocks until this replica holds the Lease `namespace/name`; returns the renewal deadline
/// to hand to [`renew`].
pub async fn acquire(api: &Api<Lease>, name: &str, me: &str) -> Renewal {
    let mut observer = Observer::default();
    loop {
        let sent = Instant::now();
        match attempt(api, name, me, &mut observer, REQUEST_TIMEOUT).await {
            Ok(true) => {
                tracing::info!(lease = name, identity = me, "became leader");
                return Renewal::new(sent);
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "cannot read or write the leader Lease"),
        }
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
}

/// Keeps renewing the Lease; returns (leadership lost) when another replica took it or no
/// renewal succeeded before the deadline. The caller must stop acting at once.
pub async fn renew(api: &Api<Lease>, name: &str, me: &str, mut renewal: Renewal) -> String {
    let mut observer = Observer::default();
    let mut wait = RENEW_INTERVAL;
    loop {
        tokio::time::sleep_until((Instant::now() + wait).min(renewal.deadline())).await;
        let sent = Instant::now();
        let Some(budget) = renewal.request_budget(sent) else {
            return format!("could not renew the leader Lease within {RENEW_DEADLINE:?}");
        };
        match attempt(api, name, me, &mut observer, budget).await {
            Ok(true) => {
                renewal.renewed(sent);
                wait = RENEW_INTERVAL;
            }
            Ok(false) => return "the leader Lease was taken by another replica".into(),
            Err(error) => {
                tracing::warn!(%error, "cannot renew the leader Lease");
                wait = RETRY_INTERVAL;
            }
        }
    }
}

/// The Lease API of `namespace`.
pub fn lease_api(client: Client, namespace: &str) -> Api<Lease> {
    Api::namespaced(client, namespace)
}

/// Gives the Lease up (on graceful shutdown), so a standby takes over at once.
pub async fn release(api: &Api<Lease>, name: &str, me: &str) {
    if let Ok(Some(mut lease)) = api.get_opt(name).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(me)
    {
        spec.holder_identity = None;
        spec.renew_time = None;
        if let Err(error) = api.replace(name, &PostParams::default(), &lease).await {
            tracing::warn!(%error, "cannot release the leader Lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ApiServerVerifier;
    use http::Method;

    fn lease(holder: &str, renewed: i64, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("crucible-controller".into()),
                resource_version: Some("1".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(
                    jiff::Timestamp::from_second(renewed).expect("ts"),
                )),
                lease_duration_seconds: Some(duration),
                ..Default::default()
            }),
        }
    }

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).expect("ts")
    }

    #[test]
    fn a_missing_free_or_own_lease_is_taken() {
        let (mut o, now) = (Observer::default(), Instant::now());
        assert_eq!(o.decide(None, "a", now), LeaseDecision::Take);
        assert_eq!(
            o.decide(Some(&lease("", 100, 15)), "a", now),
            LeaseDecision::Take
        );
        assert_eq!(
            o.decide(Some(&lease("a", 100, 15)), "a", now),
            LeaseDecision::Take
        );
    }

    /// Expiry is judged by this replica's clock from the moment it saw the record change,
    /// whatever the holder's clock wrote into renewTime (here: an hour in the past).
    #[test]
    fn expiry_is_judged_by_the_observed_change_not_the_holders_clock() {
        let mut o = Observer::default();
        let t0 = Instant::now();
        let stale_clock = lease("b", 0, 15);
        let wait = LeaseDecision::Wait { holder: "b".into() };
        assert_eq!(o.decide(Some(&stale_clock), "a", t0), wait);
        assert_eq!(
            o.decide(Some(&stale_clock), "a", t0 + Duration::from_secs(15)),
            wait
        );
        // The holder renews (its record changes): the wait starts again.
        let renewed = lease("b", 5, 15);
        let t1 = t0 + Duration::from_secs(14);
        assert_eq!(o.decide(Some(&renewed), "a", t1), wait);
        assert_eq!(
            o.decide(Some(&renewed), "a", t1 + Duration::from_secs(15)),
            wait
        );
        assert_eq!(
            o.decide(Some(&renewed), "a", t1 + Duration::from_secs(16)),
            LeaseDecision::Take
        );
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let previous = lease("b", 100, 15).spec.expect("spec");
        let taken = spec("a", Some(&previous), at(200));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(200))));
        let renewed = spec("a", Some(&taken), at(205));
        assert_eq!(renewed.lease_transitions, Some(1));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(200))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(205))));
    }

    #[test]
    fn the_deadline_counts_from_before_the_request_and_bounds_each_request() {
        const { assert!(RENEW_DEADLINE.as_secs() < LEASE_DURATION.as_secs()) };
        const { assert!(RENEW_INTERVAL.as_secs() * 2 <= RENEW_DEADLINE.as_secs()) };
        let t0 = Instant::now();
        let mut r = Renewal::new(t0);
        assert_eq!(r.request_budget(t0), Some(REQUEST_TIMEOUT));
        // A renewal sent at t0+5 that answered at t0+9 counts from t0+5.
        r.renewed(t0 + Duration::from_secs(5));
        assert_eq!(r.deadline(), t0 + Duration::from_secs(15));
        assert_eq!(
            r.request_budget(t0 + Duration::from_secs(12)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(r.request_budget(t0 + Duration::from_secs(15)), None);
    }

    /// Taking the Lease never makes it depend on a pod: a new Lease has no owner, and an
    /// owner reference to the previous leader's pod (written by an older version) is dropped,
    /// so deleting that pod cannot garbage-collect the Lease under the new leader.
    #[tokio::test]
    async fn the_lease_is_never_owned_by_a_leader_pod() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let path =
            "/apis/coordination.k8s.io/v1/namespaces/crucible-system/leases/crucible-controller";
        let (api, mut server) = ApiServerVerifier::lease_api();
        let mut previous = lease("", 100, 15);
        previous.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "crucible-old".into(),
            uid: "pod-uid".into(),
            ..Default::default()
        }]);
        let json = serde_json::to_value(&previous).expect("json");
        let server = tokio::spawn(async move {
            server.expect(Method::GET, path, 200, json.clone()).await;
            let replaced = server.expect(Method::PUT, path, 200, json.clone()).await;
            let missing = crate::fixtures::status_error(404, "not found");
            server.expect(Method::GET, path, 404, missing).await;
            let created = server
                .expect(Method::POST, &path[..path.len() - 20], 201, json)
                .await;
            (replaced.body, created.body)
        });
        acquire(&api, "crucible-controller", "a").await;
        acquire(&api, "crucible-controller", "a").await;
        let (replaced, created) = server.await.expect("server");
        assert_eq!(replaced["spec"]["holderIdentity"], "a");
        assert_eq!(
            replaced["metadata"]["ownerReferences"],
            serde_json::json!([])
        );
        assert_eq!(created["spec"]["holderIdentity"], "a");
        assert!(
            created["metadata"].get("ownerReferences").is_none(),
            "{created}"
        );
    }

    /// A slow API server: the first renewal is answered, then every request stalls. The
    /// leader gives up by the deadline counted from its last successful request, before any
    /// standby could take the Lease.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_renewal_gives_up_leadership_before_the_lease_expires() {
        let (api, mut server) = ApiServerVerifier::lease_api();
        let held = lease("a", 100, 15);
        let start = Instant::now();
        let answered = held.clone();
        let server = tokio::spawn(async move {
            let path = "/apis/coordination.k8s.io/v1/namespaces/crucible-system/leases/crucible-controller";
            let json = serde_json::to_value(&answered).expect("json");
            server.answer(Method::GET, path, 200, json.clone()).await;
            server.answer(Method::PUT, path, 200, json).await;
            // From now on the server reads requests and never answers.
            server.stall().await;
        });
        let why = renew(&api, "crucible-controller", "a", Renewal::new(start)).await;
        let took = Instant::now().duration_since(start);
        assert!(why.contains("could not renew"), "{why}");
        // First renewal sent at +5 s succeeded: deadline +15 s, never later.
        assert_eq!(took, RENEW_INTERVAL + RENEW_DEADLINE, "{took:?}");
        assert!(took <= LEASE_DURATION + RENEW_INTERVAL);
        server.abort();
    }
}
