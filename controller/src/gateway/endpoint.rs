//! Whether a ModelEndpoint may be used, and the status that says so. Pure: the controller
//! (`model_endpoint`) observes the Secret.
//!
//! A tenant who may create Evaluations (and perhaps ModelEndpoints) must not be able to send a
//! provider key to a host of their choosing. So an endpoint is Ready only when its Secret exists,
//! carries the model-credentials label (set by the platform team on key Secrets only), names the
//! endpoint's host in its model-host annotation, and holds the referenced key. The decision is
//! taken on the Secret's metadata first; only a Secret whose metadata qualifies has its keys
//! looked at ([`Verdict::ReadKey`]), so the controller never reads other Secrets' data. The
//! key's value is never read here and never appears in a message.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::crd::ModelEndpoint;
use crate::crd::bounds::shown;
use crate::crd::conditions::{READY, Status, find, set_condition};
use crate::crd::model::{ModelEndpointSpec, ModelEndpointStatus};
use crate::labels::{MODEL_CREDENTIALS_LABEL, MODEL_HOST_ANNOTATION};

/// The `Ready` condition of a ModelEndpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// Whether calls may be forwarded to it.
    pub ready: bool,
    /// Machine-readable reason (`Ready`, `InvalidEndpoint`, `SecretNotFound`,
    /// `SecretNotLabelled`, `HostNotAllowed`, `KeyNotFound`).
    pub reason: &'static str,
    /// What to do about it.
    pub message: String,
}

impl Readiness {
    fn not(reason: &'static str, message: String) -> Self {
        Self {
            ready: false,
            reason,
            message,
        }
    }
}

/// What [`readiness`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Decided.
    Known(Readiness),
    /// The Secret's metadata qualifies: whether it holds `secretRef.key` decides
    /// ([`Bound::with_key`]).
    ReadKey(Bound),
}

/// An endpoint whose Secret's metadata binds it to its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bound {
    host: String,
}

impl Bound {
    /// The readiness once it is known whether the Secret holds `spec.secretRef.key`.
    pub fn with_key(&self, spec: &ModelEndpointSpec, has_key: bool) -> Readiness {
        let name = shown(&spec.secret_ref.name);
        if !has_key {
            return Readiness::not(
                "KeyNotFound",
                format!("Secret {name} has no key {}", shown(&spec.secret_ref.key)),
            );
        }
        Readiness {
            ready: true,
            reason: "Ready",
            message: format!(
                "calls are forwarded to {} with the key of Secret {name}",
                shown(&self.host)
            ),
        }
    }
}

/// The readiness of `spec` given its Secret's metadata (`None`: it does not exist).
pub fn readiness(spec: &ModelEndpointSpec, secret: Option<&ObjectMeta>) -> Verdict {
    let Some(host) = host_of(&spec.base_url) else {
        return Verdict::Known(Readiness::not(
            "InvalidEndpoint",
            format!(
                "spec.baseURL {} is not an http(s) URL with a host",
                shown(&spec.base_url)
            ),
        ));
    };
    if let Some(unlisted) = spec.pricing.keys().find(|m| !spec.models.contains(m)) {
        return Verdict::Known(Readiness::not(
            "InvalidEndpoint",
            format!(
                "spec.pricing names model {}, which spec.models does not list",
                shown(unlisted)
            ),
        ));
    }
    let name = shown(&spec.secret_ref.name);
    let Some(secret) = secret else {
        return Verdict::Known(Readiness::not(
            "SecretNotFound",
            format!("Secret {name} does not exist in this namespace"),
        ));
    };
    let labelled = secret
        .labels
        .as_ref()
        .and_then(|l| l.get(MODEL_CREDENTIALS_LABEL))
        .is_some_and(|v| v == "true");
    if !labelled {
        return Verdict::Known(Readiness::not(
            "SecretNotLabelled",
            format!(
                "Secret {name} is not labelled {MODEL_CREDENTIALS_LABEL}=true (the platform team \
                 marks the Secrets that hold model keys)"
            ),
        ));
    }
    let allowed = secret
        .annotations
        .as_ref()
        .and_then(|a| a.get(MODEL_HOST_ANNOTATION))
        .is_some_and(|hosts| {
            hosts
                .split(',')
                .any(|h| h.trim().eq_ignore_ascii_case(&host))
        });
    if !allowed {
        return Verdict::Known(Readiness::not(
            "HostNotAllowed",
            format!(
                "Secret {name} does not name host {} in its {MODEL_HOST_ANNOTATION} annotation, so \
                 its key may not be sent there",
                shown(&host)
            ),
        ));
    }
    Verdict::ReadKey(Bound { host })
}

/// Whether `secret` holds `key` (its value is not looked at).
pub fn has_key(secret: &Secret, key: &str) -> bool {
    secret.data.as_ref().is_some_and(|d| d.contains_key(key))
        || secret
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(key))
}

/// The status that reports `readiness` for `generation`, from the `previous` one (its
/// `lastTransitionTime` kept while `Ready` does not change).
pub fn status(
    previous: Option<&ModelEndpointStatus>,
    readiness: &Readiness,
    generation: Option<i64>,
    now: &Time,
) -> ModelEndpointStatus {
    let mut status = previous.cloned().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        READY,
        Status::from(readiness.ready),
        readiness.reason,
        &readiness.message,
        generation,
        now,
    );
    status
}

/// Whether `endpoint`'s status says Ready for its current generation (a `Ready` of an older
/// spec does not count: the new one has not been looked at yet).
pub fn is_ready(endpoint: &ModelEndpoint) -> bool {
    endpoint
        .status
        .as_ref()
        .and_then(|s| find(&s.conditions, READY))
        .is_some_and(|c| {
            c.status == "True" && c.observed_generation == endpoint.metadata.generation
        })
}

/// The host of an `http://` or `https://` URL, lower-case, without port.
fn host_of(url: &str) -> Option<String> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return None;
    }
    let uri = url.parse::<http::Uri>().ok()?;
    uri.host()
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::crd::model::{KeySecretRef, ModelApi, ModelPrice};

    const KEY_VALUE: &str = "sk-provider-secret-value";

    fn spec() -> ModelEndpointSpec {
        ModelEndpointSpec {
            api: ModelApi::Openai,
            base_url: "https://API.openai.com/v1".into(),
            secret_ref: KeySecretRef {
                name: "openai-key".into(),
                key: "apiKey".into(),
            },
            models: vec!["gpt-4.1-mini".into()],
            pricing: BTreeMap::from([(
                "gpt-4.1-mini".to_string(),
                ModelPrice {
                    input_per_m_tok: 0.4,
                    output_per_m_tok: 1.6,
                },
            )]),
        }
    }

    fn secret(label: Option<&str>, hosts: Option<&str>, key: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("openai-key".into()),
                labels: label.map(|v| BTreeMap::from([(MODEL_CREDENTIALS_LABEL.into(), v.into())])),
                annotations: hosts
                    .map(|h| BTreeMap::from([(MODEL_HOST_ANNOTATION.into(), h.into())])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(KEY_VALUE.as_bytes().to_vec()),
            )])),
            ..Default::default()
        }
    }

    /// The controller's two steps: the metadata, then the key only when asked.
    fn decide(spec: &ModelEndpointSpec, secret: Option<&Secret>) -> Readiness {
        let meta = secret.map(|s| &s.metadata);
        match readiness(spec, meta) {
            Verdict::Known(r) => r,
            Verdict::ReadKey(bound) => {
                let secret = secret.expect("a key is asked for only when the Secret exists");
                bound.with_key(spec, has_key(secret, &spec.secret_ref.key))
            }
        }
    }

    fn reason(spec: &ModelEndpointSpec, secret: Option<&Secret>) -> &'static str {
        let r = decide(spec, secret);
        assert!(!r.message.contains(KEY_VALUE), "{}", r.message);
        assert_eq!(r.ready, r.reason == "Ready");
        r.reason
    }

    #[test]
    fn the_key_is_asked_for_only_once_the_metadata_qualifies() {
        let s = spec();
        let unlabelled = secret(None, Some("api.openai.com"), "apiKey");
        let elsewhere = secret(Some("true"), Some("example.com"), "apiKey");
        for meta in [None, Some(&unlabelled.metadata), Some(&elsewhere.metadata)] {
            assert!(matches!(readiness(&s, meta), Verdict::Known(_)));
        }
        let ok = secret(Some("true"), Some("api.openai.com"), "apiKey");
        assert!(matches!(
            readiness(&s, Some(&ok.metadata)),
            Verdict::ReadKey(_)
        ));
    }

    #[test]
    fn the_status_carries_the_generation_and_keeps_the_transition_time() {
        let t = |secs| Time(jiff::Timestamp::from_second(secs).expect("time"));
        let missing = decide(&spec(), None);
        let first = status(None, &missing, Some(3), &t(10));
        let again = status(Some(&first), &missing, Some(4), &t(20));
        let c = &again.conditions[0];
        assert_eq!((c.type_.as_str(), c.status.as_str()), ("Ready", "False"));
        assert_eq!(c.reason, "SecretNotFound");
        assert_eq!(c.observed_generation, Some(4));
        assert_eq!(c.last_transition_time, t(10));
        let ok = secret(Some("true"), Some("api.openai.com"), "apiKey");
        let ready = status(Some(&again), &decide(&spec(), Some(&ok)), Some(4), &t(30));
        assert_eq!(ready.conditions.len(), 1);
        assert_eq!(ready.conditions[0].status, "True");
        assert_eq!(ready.conditions[0].last_transition_time, t(30));
    }

    #[test]
    fn a_labelled_secret_naming_the_host_and_holding_the_key_is_ready() {
        let ok = secret(Some("true"), Some("example.com, api.openai.com"), "apiKey");
        assert_eq!(reason(&spec(), Some(&ok)), "Ready");
    }

    #[test]
    fn each_missing_piece_is_its_own_reason() {
        let s = spec();
        assert_eq!(reason(&s, None), "SecretNotFound");
        for (label, hosts, key, expected) in [
            (None, Some("api.openai.com"), "apiKey", "SecretNotLabelled"),
            (
                Some("false"),
                Some("api.openai.com"),
                "apiKey",
                "SecretNotLabelled",
            ),
            (Some("true"), None, "apiKey", "HostNotAllowed"),
            (
                Some("true"),
                Some("api.anthropic.com"),
                "apiKey",
                "HostNotAllowed",
            ),
            // A host that only contains the endpoint's is another host.
            (Some("true"), Some("openai.com"), "apiKey", "HostNotAllowed"),
            (Some("true"), Some("api.openai.com"), "other", "KeyNotFound"),
        ] {
            let secret = secret(label, hosts, key);
            assert_eq!(
                reason(&s, Some(&secret)),
                expected,
                "{label:?} {hosts:?} {key}"
            );
        }
    }

    #[test]
    fn a_key_sent_to_another_host_is_refused_even_with_the_same_secret() {
        let ok = secret(Some("true"), Some("api.openai.com"), "apiKey");
        let elsewhere = ModelEndpointSpec {
            base_url: "https://attacker.example:443/v1".into(),
            ..spec()
        };
        assert_eq!(reason(&elsewhere, Some(&ok)), "HostNotAllowed");
    }

    #[test]
    fn bad_urls_and_prices_of_unlisted_models_are_invalid() {
        let ok = secret(Some("true"), Some("api.openai.com"), "apiKey");
        for url in [
            "api.openai.com/v1",
            "ftp://api.openai.com",
            "https://",
            "https://a b",
        ] {
            let s = ModelEndpointSpec {
                base_url: url.into(),
                ..spec()
            };
            assert_eq!(reason(&s, Some(&ok)), "InvalidEndpoint", "{url}");
        }
        let mut s = spec();
        s.pricing.insert(
            "gpt-5".into(),
            ModelPrice {
                input_per_m_tok: 1.0,
                output_per_m_tok: 1.0,
            },
        );
        assert_eq!(reason(&s, Some(&ok)), "InvalidEndpoint");
    }
}
