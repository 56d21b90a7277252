//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one
//! reconciles. kube 5 has no helper for it; this is the client-go algorithm in small: take the
//! Lease when it is free or expired (optimistic concurrency on its resourceVersion), renew it
//! well within its duration, and stop the process when it cannot be renewed in time, so that
//! two replicas never act at once. [`decide`] is pure; [`acquire`] and the renewal talk to the
//! API server.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, PostParams};

/// How long a Lease holds without renewal. A crashed leader is replaced within this time.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews: three chances per lease duration.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// How often a standby replica tries to take the Lease.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// What to do with the Lease as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Take it (free, expired, or already ours): write it with us as holder.
    Take,
    /// Someone else holds it.
    Wait {
        /// The holder.
        holder: String,
    },
}

/// Decides whether `me` may take `lease` at `now`.
pub fn decide(lease: Option<&Lease>, me: &str, now: jiff::Timestamp) -> Decision {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return Decision::Take;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return Decision::Take;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    let expired = spec
        .renew_time
        .as_ref()
        .is_none_or(|t| t.0.as_second() + duration < now.as_second());
    if expired {
        Decision::Take
    } else {
        Decision::Wait { holder }
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
/// is owned by `owner` (the leader's pod), so that it goes with the last leader when the
/// controller is uninstalled instead of being left behind.
async fn try_take(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    owner: Option<&OwnerReference>,
) -> Result<bool, kube::Error> {
    let now = jiff::Timestamp::now();
    let current = api.get_opt(name).await?;
    match decide(current.as_ref(), me, now) {
        Decision::Wait { .. } => Ok(false),
        Decision::Take => {
            let result = match current {
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.to_string()),
                            owner_references: owner.map(|o| vec![o.clone()]),
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
                    if let Some(owner) = owner {
                        lease.metadata.owner_references = Some(vec![owner.clone()]);
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

/// Blocks until this replica holds the Lease `namespace/name`, then keeps renewing it in the
/// background. If a renewal cannot be made within the lease duration, the process exits
/// (leadership lost: another replica may already act).
pub async fn acquire(
    client: Client,
    namespace: &str,
    name: &str,
    me: String,
    owner: Option<OwnerReference>,
) {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    loop {
        match try_take(&api, name, &me, owner.as_ref()).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "cannot read or write the leader Lease"),
        }
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
    tracing::info!(lease = %format!("{namespace}/{name}"), identity = %me, "became leader");
    let name = name.to_string();
    tokio::spawn(async move {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_INTERVAL).await;
            match try_take(&api, &name, &me, owner.as_ref()).await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("leader Lease taken by another replica; exiting");
                    std::process::exit(1);
                }
                Err(error) => tracing::warn!(%error, "cannot renew the leader Lease"),
            }
            // Stop before the Lease can expire: renewals are due every RENEW_INTERVAL.
            if last_renewal.elapsed() + RENEW_INTERVAL >= LEASE_DURATION {
                tracing::error!("could not renew the leader Lease in time; exiting");
                std::process::exit(1);
            }
        }
    });
}

/// Gives the Lease up (on graceful shutdown), so a standby takes over at once.
pub async fn release(client: Client, namespace: &str, name: &str, me: &str) {
    let api: Api<Lease> = Api::namespaced(client, namespace);
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

    fn lease(holder: &str, renewed: i64, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
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
        assert_eq!(decide(None, "a", at(100)), Decision::Take);
        assert_eq!(
            decide(Some(&lease("", 100, 15)), "a", at(100)),
            Decision::Take
        );
        assert_eq!(
            decide(Some(&lease("a", 100, 15)), "a", at(101)),
            Decision::Take
        );
    }

    #[test]
    fn another_holders_lease_is_respected_until_it_expires() {
        let l = lease("b", 100, 15);
        assert_eq!(
            decide(Some(&l), "a", at(110)),
            Decision::Wait { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&l), "a", at(115)),
            Decision::Wait { holder: "b".into() }
        );
        assert_eq!(decide(Some(&l), "a", at(116)), Decision::Take);
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
    fn renewals_come_well_within_the_lease() {
        assert!(RENEW_INTERVAL * 2 < LEASE_DURATION);
    }
}
