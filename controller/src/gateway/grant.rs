//! What a run may do at the gateway, from its Evaluation: the claims of its capability token and
//! the token itself. Pure (the deadline is passed in); the controller mints with the key it
//! shares with the gateway, and the pod gets the token through `run::models::model_env`.

use super::budget::{Budget, DailyBudget};
use super::ledger::RecordCalls;
use super::token::{Claims, SigningKey};
use crate::crd::EvaluationQuota;
use crate::crd::evaluation::EvaluationSpec;
use crate::crd::model::{ModelBudget, RecordCalls as SpecRecordCalls};
use crate::run::models::models;

/// The run a token is for.
#[derive(Clone, Copy, Debug)]
pub struct RunGrant<'a> {
    /// Namespace of the Evaluation.
    pub namespace: &'a str,
    /// Name of the Evaluation.
    pub evaluation: &'a str,
    /// Id of the run (`status.runId`): what revocation names.
    pub run_id: &'a str,
    /// Unix seconds after which the token is refused: the run's own deadline.
    pub expires: i64,
    /// Its namespace's daily budget ([`daily_budget`] of its quotas).
    pub daily_budget: DailyBudget,
}

/// The claims of the run's token: its identity, the model ids of `spec.models` (each once), its
/// budget and what the ledger keeps.
pub fn claims(spec: &EvaluationSpec, run: &RunGrant<'_>) -> Claims {
    let mut ids: Vec<String> = models(spec).iter().map(|m| m.model.clone()).collect();
    ids.sort();
    ids.dedup();
    Claims {
        namespace: run.namespace.to_string(),
        evaluation: run.evaluation.to_string(),
        run: run.run_id.to_string(),
        models: ids,
        budget: spec.budget.map(budget).unwrap_or_default(),
        daily_budget: run.daily_budget,
        record_calls: match spec.record_calls.unwrap_or_default() {
            SpecRecordCalls::Digests => RecordCalls::Digests,
            SpecRecordCalls::Full => RecordCalls::Full,
        },
        expires: run.expires,
    }
}

/// The run's capability token, signed with `key`.
pub fn mint(key: &SigningKey, spec: &EvaluationSpec, run: &RunGrant<'_>) -> String {
    key.mint(&claims(spec, run))
}

/// The daily budget of a namespace with `quotas`: the strictest `tokensPerDay` and
/// `costUSDPerDay` among them. A negative or non-finite figure (which the schema refuses)
/// allows nothing rather than everything.
pub fn daily_budget(quotas: &[&EvaluationQuota]) -> DailyBudget {
    let hards = || quotas.iter().filter_map(|q| q.spec.hard.as_ref());
    DailyBudget {
        tokens_per_day: hards()
            .filter_map(|h| h.tokens_per_day)
            .map(|t| u64::try_from(t).unwrap_or(0))
            .min(),
        cost_usd_per_day: hards()
            .filter_map(|h| h.cost_usd_per_day)
            .map(dollars)
            .reduce(f64::min),
    }
}

fn dollars(limit: f64) -> f64 {
    if limit.is_finite() {
        limit.max(0.0)
    } else {
        0.0
    }
}

/// The gateway's budget for `spec`'s; a negative limit (which validation refuses) allows
/// nothing rather than everything.
fn budget(spec: ModelBudget) -> Budget {
    let limit = |v: i64| u64::try_from(v).unwrap_or(0);
    Budget {
        calls: spec.calls.map(limit),
        tokens: spec.tokens.map(limit),
        cost_usd: spec.cost_usd.map(dollars),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::bounds::{MAX_MODEL_ID_LEN, MAX_NAME_LEN, MAX_RUN_MODELS, MAX_TOKEN_BYTES};
    use crate::crd::model::ModelRef;
    use crate::gateway::token::{Revocations, TokenError};

    fn key() -> SigningKey {
        SigningKey::new(&[7; 32]).expect("32 bytes")
    }

    fn model(name: &str, id: &str) -> ModelRef {
        ModelRef {
            name: name.into(),
            endpoint: "openai".into(),
            model: id.into(),
        }
    }

    fn spec() -> EvaluationSpec {
        EvaluationSpec {
            image: "python".into(),
            models: Some(vec![
                model("target", "gpt-4.1-mini"),
                model("judge", "gpt-4.1"),
                model("again", "gpt-4.1-mini"),
            ]),
            budget: Some(ModelBudget {
                calls: Some(20),
                tokens: Some(5_000),
                cost_usd: Some(1.5),
            }),
            record_calls: Some(SpecRecordCalls::Full),
            ..Default::default()
        }
    }

    const RUN: RunGrant<'static> = RunGrant {
        namespace: "team-a",
        evaluation: "agent",
        run_id: "run-1",
        expires: 5_000,
        daily_budget: DailyBudget {
            tokens_per_day: Some(1_000_000),
            cost_usd_per_day: None,
        },
    };

    #[test]
    fn the_token_grants_the_run_its_models_budget_and_deadline_only() {
        let token = mint(&key(), &spec(), &RUN);
        let claims = key()
            .verify(&token, 4_999)
            .expect("verifies before the deadline");
        assert_eq!(
            claims,
            Claims {
                namespace: "team-a".into(),
                evaluation: "agent".into(),
                run: "run-1".into(),
                models: vec!["gpt-4.1".into(), "gpt-4.1-mini".into()],
                budget: Budget {
                    calls: Some(20),
                    tokens: Some(5_000),
                    cost_usd: Some(1.5)
                },
                daily_budget: DailyBudget {
                    tokens_per_day: Some(1_000_000),
                    cost_usd_per_day: None,
                },
                record_calls: RecordCalls::Full,
                expires: 5_000,
            }
        );
        let none = Revocations::default();
        assert_eq!(claims.authorize("team-a", "gpt-4.1", &none), Ok(()));
        assert_eq!(
            claims.authorize("team-a", "o3", &none),
            Err(TokenError::ModelNotAllowed("o3".into()))
        );
        assert_eq!(
            claims.authorize("team-b", "gpt-4.1", &none),
            Err(TokenError::OtherNamespace("team-b".into()))
        );
        assert_eq!(
            key().verify(&token, 5_000),
            Err(TokenError::Expired("run-1".into()))
        );
    }

    #[test]
    fn no_budget_and_no_record_calls_mean_unlimited_and_digests() {
        let spec = EvaluationSpec {
            budget: None,
            record_calls: None,
            ..spec()
        };
        let claims = claims(&spec, &RUN);
        assert_eq!(claims.budget, Budget::default());
        assert_eq!(claims.record_calls, RecordCalls::Digests);
    }

    #[test]
    fn a_negative_or_infinite_limit_allows_nothing() {
        let spec = EvaluationSpec {
            budget: Some(ModelBudget {
                calls: Some(-1),
                tokens: Some(-5),
                cost_usd: Some(f64::INFINITY),
            }),
            ..spec()
        };
        assert_eq!(
            claims(&spec, &RUN).budget,
            Budget {
                calls: Some(0),
                tokens: Some(0),
                cost_usd: Some(0.0)
            }
        );
    }

    #[test]
    fn the_largest_run_the_schema_allows_fits_in_a_token() {
        let long = "n".repeat(MAX_NAME_LEN);
        let spec = EvaluationSpec {
            models: Some(
                (0..MAX_RUN_MODELS)
                    .map(|i| model(&format!("m{i}"), &format!("{i:0>w$}", w = MAX_MODEL_ID_LEN)))
                    .collect(),
            ),
            budget: Some(ModelBudget {
                calls: Some(i64::MAX),
                tokens: Some(i64::MAX),
                cost_usd: Some(f64::MAX),
            }),
            ..spec()
        };
        let run = RunGrant {
            namespace: &long[..63],
            evaluation: &long,
            run_id: &long,
            expires: i64::MAX,
            daily_budget: DailyBudget {
                tokens_per_day: Some(u64::MAX),
                cost_usd_per_day: Some(f64::MAX),
            },
        };
        let token = mint(&key(), &spec, &run);
        assert!(
            token.len() <= MAX_TOKEN_BYTES,
            "{} bytes, the gateway takes {MAX_TOKEN_BYTES}",
            token.len()
        );
        assert_eq!(
            key().verify(&token, 0).map(|c| c.models.len()),
            Ok(MAX_RUN_MODELS)
        );
    }

    fn quota(tokens_per_day: Option<i64>, cost_usd_per_day: Option<f64>) -> EvaluationQuota {
        use crate::crd::quota::{EvaluationQuotaSpec, QuotaHard};
        EvaluationQuota::new(
            "q",
            EvaluationQuotaSpec {
                hard: Some(QuotaHard {
                    tokens_per_day,
                    cost_usd_per_day,
                    ..QuotaHard::default()
                }),
                ..EvaluationQuotaSpec::default()
            },
        )
    }

    #[test]
    fn the_daily_budget_is_the_strictest_of_the_namespaces_quotas() {
        let (a, b, c) = (
            quota(Some(500), None),
            quota(Some(200), Some(9.5)),
            quota(None, Some(3.0)),
        );
        assert_eq!(
            daily_budget(&[&a, &b, &c]),
            DailyBudget {
                tokens_per_day: Some(200),
                cost_usd_per_day: Some(3.0),
            }
        );
        assert!(daily_budget(&[]).is_unlimited());
        let cpu_only = EvaluationQuota::new("q", Default::default());
        assert!(daily_budget(&[&cpu_only]).is_unlimited());
        // Figures the schema refuses allow nothing.
        let bad = quota(Some(-1), Some(f64::NAN));
        assert_eq!(
            daily_budget(&[&bad]),
            DailyBudget {
                tokens_per_day: Some(0),
                cost_usd_per_day: Some(0.0),
            }
        );
    }
}
