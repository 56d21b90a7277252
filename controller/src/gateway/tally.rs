//! What a run has used, as the gateway tells the controller (`GET /runs/{run}/usage`) and as
//! `status.usage` shows it. Pure.
//!
//! The figures are the run's ledger's running totals (settled calls only), so a restarted
//! gateway answers the same as before; the refusal is the gateway's memory of the run.

use serde::{Deserialize, Serialize};

use super::budget::{Exceeded, Spent};
use super::ledger::{Head, ModelSpent};
use crate::crd::bounds::MAX_RUN_MODELS;
use crate::crd::evaluation::EvaluationSpec;
use crate::crd::model::{ModelUsage, ModelUsageEntry};
use crate::run::models::models;

/// Largest answer the controller reads: [`MAX_RUN_MODELS`] entries of two bounded ids each,
/// with room to spare.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One run's usage, the gateway's answer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunUsage {
    /// All the run's settled calls.
    #[serde(flatten)]
    pub spent: Spent,
    /// The same per model id.
    #[serde(default)]
    pub by_model: Vec<ModelSpent>,
    /// The first budget limit a call of the run was refused for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Exceeded>,
}

impl RunUsage {
    /// The answer for a run whose ledger ends at `head` and that was `refused`.
    pub fn new(head: Head, refused: Option<Exceeded>) -> Self {
        Self {
            spent: head.spent,
            by_model: head.by_model,
            refused,
        }
    }

    /// `status.usage` for a run of `spec`: each model id under the first `spec.models` name
    /// that asks for it (the gateway cannot tell two names of one id apart: they share a token
    /// and a URL); ids the run does not list are left out, so the list stays within
    /// [`MAX_RUN_MODELS`].
    pub fn status(&self, spec: &EvaluationSpec) -> ModelUsage {
        let listed = models(spec);
        let by_model = self
            .by_model
            .iter()
            .filter_map(|m| {
                let name = &listed.iter().find(|l| l.model == m.model)?.name;
                Some(ModelUsageEntry {
                    name: name.clone(),
                    model: m.model.clone(),
                    served_model: m.served_model.clone(),
                    calls: count(m.spent.calls),
                    input_tokens: count(m.spent.input_tokens),
                    output_tokens: count(m.spent.output_tokens),
                    cost_usd: m.spent.cost_usd,
                })
            })
            .take(MAX_RUN_MODELS)
            .collect();
        ModelUsage {
            calls: count(self.spent.calls),
            input_tokens: count(self.spent.input_tokens),
            output_tokens: count(self.spent.output_tokens),
            cost_usd: self.spent.cost_usd,
            by_model,
        }
    }

    /// The usage in a sentence, for a status message.
    pub fn summary(&self) -> String {
        let s = &self.spent;
        format!(
            "{} calls, {} input and {} output tokens, {:.6} USD",
            s.calls, s.input_tokens, s.output_tokens, s.cost_usd
        )
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::model::ModelRef;

    fn spent(calls: u64, input_tokens: u64, output_tokens: u64, cost_usd: f64) -> Spent {
        Spent {
            calls,
            input_tokens,
            output_tokens,
            cost_usd,
        }
    }

    fn model(name: &str, id: &str) -> ModelRef {
        ModelRef {
            name: name.into(),
            endpoint: "openai".into(),
            model: id.into(),
        }
    }

    #[test]
    fn the_status_names_each_model_by_the_runs_name_for_it() {
        let spec = EvaluationSpec {
            models: Some(vec![
                model("target", "gpt-4.1-mini"),
                model("judge", "gpt-4.1"),
                model("again", "gpt-4.1-mini"),
            ]),
            ..Default::default()
        };
        let usage = RunUsage {
            spent: spent(3, 30, 12, 0.5),
            by_model: vec![
                ModelSpent {
                    model: "gpt-4.1".into(),
                    served_model: None,
                    spent: spent(1, 10, 2, 0.1),
                },
                ModelSpent {
                    model: "gpt-4.1-mini".into(),
                    served_model: Some("gpt-4.1-mini-2025-04-14".into()),
                    spent: spent(2, 20, 10, 0.4),
                },
                ModelSpent {
                    model: "not-listed".into(),
                    served_model: None,
                    spent: spent(u64::MAX, 0, 0, 0.0),
                },
            ],
            refused: None,
        };
        let status = usage.status(&spec);
        assert_eq!(
            (
                status.calls,
                status.input_tokens,
                status.output_tokens,
                status.cost_usd
            ),
            (3, 30, 12, 0.5)
        );
        let names: Vec<(&str, &str, i64)> = status
            .by_model
            .iter()
            .map(|m| (m.name.as_str(), m.model.as_str(), m.calls))
            .collect();
        assert_eq!(
            names,
            [("judge", "gpt-4.1", 1), ("target", "gpt-4.1-mini", 2)]
        );
        assert_eq!(
            status.by_model[1].served_model.as_deref(),
            Some("gpt-4.1-mini-2025-04-14")
        );
    }

    #[test]
    fn the_answer_round_trips_with_its_refusal_and_counts_saturate() {
        let usage = RunUsage {
            spent: spent(u64::MAX, 1, 2, 0.25),
            by_model: Vec::new(),
            refused: Some(Exceeded::Calls(2)),
        };
        let wire = serde_json::to_string(&usage).expect("json");
        assert!(wire.contains(r#""refused":{"calls":2}"#), "{wire}");
        assert_eq!(
            serde_json::from_str::<RunUsage>(&wire).expect("parses"),
            usage
        );
        assert_eq!(usage.status(&EvaluationSpec::default()).calls, i64::MAX);
    }
}
