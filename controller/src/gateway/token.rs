//! Per-run capability tokens. Pure.
//!
//! The controller mints one token per run: the run's identity, the model ids it may call, its
//! budget, how its calls are recorded and an expiry, signed with HMAC-SHA256 under a key only the
//! controller and the gateway hold. The gateway trusts what a token says because nobody else can
//! sign, so it needs no API call per request. A token is worth nothing after its expiry, after
//! its run is revoked, from another namespace, or for a model it does not list.
//!
//! Wire form: `crt1.<base64url(claims JSON)>.<base64url(HMAC over "crt1.<claims>")>`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::budget::{Budget, DailyBudget};
use super::expiring::ExpiringMap;
use super::ledger::RecordCalls;

const PREFIX: &str = "crt1.";
/// Prefix of a revocation notice (signed like a token, never accepted as one).
const REVOCATION_PREFIX: &str = "crr1.";
/// Prefix of the controller's question for a run's usage (likewise).
const USAGE_PREFIX: &str = "cru1.";
pub use crate::crd::bounds::MAX_TOKEN_BYTES;
/// Shortest signing key accepted: the HMAC's own block of security.
pub const MIN_KEY_BYTES: usize = 32;

/// What a token grants.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// Namespace of the run.
    pub namespace: String,
    /// Evaluation the run belongs to.
    pub evaluation: String,
    /// Unique id of the run (one attempt); what revocation names.
    pub run: String,
    /// Model ids the run may call.
    pub models: Vec<String>,
    /// The run's budget.
    #[serde(default)]
    pub budget: Budget,
    /// Its namespace's budget per rolling 24 hours, as its quotas said when the run started.
    #[serde(default, skip_serializing_if = "DailyBudget::is_unlimited")]
    pub daily_budget: DailyBudget,
    /// What the ledger keeps of each call.
    #[serde(default)]
    pub record_calls: RecordCalls,
    /// Unix seconds after which the token is refused.
    pub expires: i64,
}

/// Why a token was refused. The messages go back to the caller; none repeats the token.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    /// Not a token of ours, or too long.
    #[error("the capability token is malformed")]
    Malformed,
    /// Signed with another key, or altered.
    #[error("the capability token's signature does not verify")]
    BadSignature,
    /// Past its expiry.
    #[error("the capability token of run {0} has expired")]
    Expired(String),
    /// Its run has ended.
    #[error("the capability token of run {0} has been revoked (the run has ended)")]
    Revoked(String),
    /// Presented for another namespace than the one it was minted for.
    #[error("the capability token is not valid in namespace {0}")]
    OtherNamespace(String),
    /// The model is not one the run lists.
    #[error("model {0:?} is not one this run may call")]
    ModelNotAllowed(String),
}

/// The HMAC key tokens are signed with.
pub struct SigningKey(hmac::Key);

impl SigningKey {
    /// A key from secret bytes (at least [`MIN_KEY_BYTES`]).
    pub fn new(secret: &[u8]) -> Option<Self> {
        (secret.len() >= MIN_KEY_BYTES).then(|| Self(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// The token granting `claims`.
    pub fn mint(&self, claims: &Claims) -> String {
        self.seal(PREFIX, claims)
    }

    /// The claims of an authentic, unexpired token (`now` in Unix seconds). The signature is
    /// checked (in constant time) before the claims are parsed.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let claims: Claims = self.open(PREFIX, token)?;
        if now >= claims.expires {
            return Err(TokenError::Expired(claims.run));
        }
        Ok(claims)
    }

    /// The controller's notice that `revocation`'s run has ended. Its own prefix is signed too,
    /// so a capability token is never taken for a notice (a sandbox cannot end its own run).
    pub fn sign_revocation(&self, revocation: &Revocation) -> String {
        self.seal(REVOCATION_PREFIX, revocation)
    }

    /// The revocation in an authentic notice.
    pub fn verify_revocation(&self, notice: &str) -> Result<Revocation, TokenError> {
        self.open(REVOCATION_PREFIX, notice)
    }

    /// The controller's question for `query`'s run's usage: only the holder of the key may ask,
    /// so a sandbox, which reaches the gateway, cannot read its own or another run's usage.
    pub fn sign_usage_query(&self, query: &UsageQuery) -> String {
        self.seal(USAGE_PREFIX, query)
    }

    /// The question in an authentic usage query.
    pub fn verify_usage_query(&self, sealed: &str) -> Result<UsageQuery, TokenError> {
        self.open(USAGE_PREFIX, sealed)
    }

    fn seal(&self, prefix: &str, content: &impl Serialize) -> String {
        // Serialising a struct of strings, numbers and sequences cannot fail.
        let json = serde_json::to_vec(content).unwrap_or_default();
        let signed = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(json));
        let tag = hmac::sign(&self.0, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    fn open<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
        sealed: &str,
    ) -> Result<T, TokenError> {
        if sealed.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let (body, tag) = sealed
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('.'))
            .filter(|(body, tag)| !body.is_empty() && !tag.is_empty())
            .ok_or(TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        let signed = &sealed[..prefix.len() + body.len()];
        hmac::verify(&self.0, signed.as_bytes(), &tag).map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
    }
}

/// A run that has ended, as the controller tells the gateway: its tokens are refused from then
/// on (they would expire at `expires` anyway).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Revocation {
    /// Id of the run.
    pub run: String,
    /// Unix seconds at which its tokens expire by themselves.
    pub expires: i64,
}

/// The controller asking for one run's usage (`GET /runs/{run}/usage`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UsageQuery {
    /// Namespace of the run (its ledger's directory).
    pub namespace: String,
    /// Id of the run.
    pub run: String,
    /// Unix seconds at which its tokens expire (how long the gateway keeps its ledger's head).
    pub expires: i64,
}

impl Claims {
    /// Whether these claims allow calling `model` from `namespace`, `revocations` considered.
    pub fn authorize(
        &self,
        namespace: &str,
        model: &str,
        revocations: &Revocations,
    ) -> Result<(), TokenError> {
        if revocations.is_revoked(&self.run) {
            return Err(TokenError::Revoked(self.run.clone()));
        }
        if namespace != self.namespace {
            return Err(TokenError::OtherNamespace(namespace.to_string()));
        }
        if !self.models.iter().any(|m| m == model) {
            return Err(TokenError::ModelNotAllowed(model.to_string()));
        }
        Ok(())
    }
}

/// Runs whose tokens are revoked, each kept until its tokens expire anyway (then expiry refuses
/// them), so the set holds only runs that could still present a valid token.
#[derive(Default, Debug)]
pub struct Revocations(ExpiringMap<()>);

impl Revocations {
    /// Revokes `run`, whose tokens expire at `expires`.
    pub fn revoke(&mut self, run: &str, expires: i64, now: i64) {
        self.0.entry(run, expires, now, || ());
    }

    /// Whether `run` is revoked.
    pub fn is_revoked(&self, run: &str) -> bool {
        self.0.contains(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::new(&[byte; 32]).expect("32 bytes")
    }

    fn claims() -> Claims {
        Claims {
            namespace: "team-a".into(),
            evaluation: "agent".into(),
            run: "run-1".into(),
            models: vec!["gpt-4.1-mini".into()],
            budget: Budget::default(),
            daily_budget: DailyBudget::default(),
            record_calls: RecordCalls::Digests,
            expires: 1_000,
        }
    }

    #[test]
    fn a_minted_token_verifies_and_grants_its_model() {
        let token = key(1).mint(&claims());
        let verified = key(1).verify(&token, 999).expect("valid");
        assert_eq!(verified, claims());
        assert_eq!(
            verified.authorize("team-a", "gpt-4.1-mini", &Revocations::default()),
            Ok(())
        );
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let token = key(2).mint(&claims());
        assert_eq!(key(1).verify(&token, 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn altered_claims_are_refused() {
        // Same signature, claims widened to another model: the tag no longer matches.
        let token = key(1).mint(&claims());
        let tag = token.rsplit_once('.').expect("dot").1;
        let mut wider = claims();
        wider.models.push("gpt-4.1".into());
        let forged_body = key(9).mint(&wider);
        let forged = format!("{}.{tag}", forged_body.rsplit_once('.').expect("dot").0);
        assert_eq!(key(1).verify(&forged, 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn garbage_and_oversized_tokens_are_malformed() {
        for token in [
            "",
            "Bearer x",
            "crt1.",
            "crt1.!!.??",
            &"crt1.a".repeat(2_000),
        ] {
            assert_eq!(
                key(1).verify(token, 0),
                Err(TokenError::Malformed),
                "{token:.20}"
            );
        }
    }

    #[test]
    fn an_expired_token_is_refused() {
        let token = key(1).mint(&claims());
        assert_eq!(
            key(1).verify(&token, 1_000),
            Err(TokenError::Expired("run-1".into()))
        );
    }

    #[test]
    fn another_model_or_namespace_is_refused() {
        let none = Revocations::default();
        assert_eq!(
            claims().authorize("team-a", "gpt-4.1", &none),
            Err(TokenError::ModelNotAllowed("gpt-4.1".into()))
        );
        assert_eq!(
            claims().authorize("team-b", "gpt-4.1-mini", &none),
            Err(TokenError::OtherNamespace("team-b".into()))
        );
    }

    #[test]
    fn a_revoked_run_is_refused_until_its_tokens_expire() {
        let mut revocations = Revocations::default();
        revocations.revoke("run-1", 1_000, 10);
        assert_eq!(
            claims().authorize("team-a", "gpt-4.1-mini", &revocations),
            Err(TokenError::Revoked("run-1".into()))
        );
        // Revoking another run after run-1's expiry forgets run-1: expiry refuses it now.
        revocations.revoke("run-2", 2_000, 1_000);
        assert!(!revocations.is_revoked("run-1"));
        assert!(revocations.is_revoked("run-2"));
    }

    #[test]
    fn a_revocation_notice_is_not_a_token_and_a_token_is_not_a_notice() {
        let notice = key(1).sign_revocation(&Revocation {
            run: "run-1".into(),
            expires: 1_000,
        });
        assert_eq!(
            key(1).verify_revocation(&notice).map(|r| r.run),
            Ok("run-1".into())
        );
        assert_eq!(
            key(2).verify_revocation(&notice),
            Err(TokenError::BadSignature)
        );
        assert_eq!(key(1).verify(&notice, 0), Err(TokenError::Malformed));
        let token = key(1).mint(&claims());
        assert_eq!(key(1).verify_revocation(&token), Err(TokenError::Malformed));
        // Re-labelled with the other prefix, the signature no longer holds.
        let relabelled = token.replacen(PREFIX, REVOCATION_PREFIX, 1);
        assert_eq!(
            key(1).verify_revocation(&relabelled),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_usage_query_is_neither_a_token_nor_a_notice() {
        let query = UsageQuery {
            namespace: "team-a".into(),
            run: "run-1".into(),
            expires: 1_000,
        };
        let sealed = key(1).sign_usage_query(&query);
        assert_eq!(key(1).verify_usage_query(&sealed), Ok(query));
        assert_eq!(
            key(2).verify_usage_query(&sealed),
            Err(TokenError::BadSignature)
        );
        assert_eq!(key(1).verify(&sealed, 0), Err(TokenError::Malformed));
        assert!(key(1).verify_revocation(&sealed).is_err());
        // A run's own token cannot ask for usage.
        let token = key(1).mint(&claims());
        assert_eq!(
            key(1).verify_usage_query(&token),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn short_keys_are_rejected() {
        assert!(SigningKey::new(&[0; 31]).is_none());
    }
}
