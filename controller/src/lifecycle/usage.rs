//! What a run's model usage does to its outcome (docs/models.md, "Usage"): a run that had a
//! call refused for its budget ends `Failed`, reason `BudgetExceeded`, whatever its pod did,
//! with its result and samples kept; a run whose usage could not be read at its end says so.
//! Pure; the pod's outcome comes here after its samples ([`super::samples::with_samples`]).

use crate::crd::evaluation::Phase;
use crate::gateway::tally::RunUsage;
use crate::run::phase::Outcome;

/// The status reason of a run that had a model call refused for its budget.
pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";

/// `outcome` of a finished pod with the run's `usage` (as observed at its end) taken into
/// account.
pub fn with_usage(outcome: Outcome, usage: Option<&Result<RunUsage, String>>) -> Outcome {
    match usage {
        Some(Ok(usage)) => match usage.refused {
            Some(exceeded) => {
                let mut message = format!(
                    "a model call was refused: {exceeded} (used: {})",
                    usage.summary()
                );
                if let Some(said) = outcome.message.as_deref().filter(|m| !m.is_empty()) {
                    message.push_str(&format!("; the evaluation itself: {said}"));
                }
                Outcome {
                    phase: Some(Phase::Failed),
                    reason: Some(BUDGET_EXCEEDED.into()),
                    message: Some(message),
                    ..outcome
                }
            }
            None => outcome,
        },
        Some(Err(why)) => {
            let said = outcome.message.clone().unwrap_or_default();
            let sep = if said.is_empty() { "" } else { "; " };
            Outcome {
                message: Some(format!(
                    "{said}{sep}its model usage could not be read from the gateway: {why}"
                )),
                ..outcome
            }
        }
        None => outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::budget::{Exceeded, Spent};
    use crate::lifecycle::test_support::passed_outcome as passed;

    fn used(refused: Option<Exceeded>) -> Result<RunUsage, String> {
        Ok(RunUsage {
            spent: Spent {
                calls: 2,
                input_tokens: 10,
                output_tokens: 4,
                cost_usd: 0.25,
            },
            by_model: Vec::new(),
            refused,
        })
    }

    #[test]
    fn a_refused_call_fails_the_run_budget_exceeded_with_its_result_kept() {
        let outcome = with_usage(passed(), Some(&used(Some(Exceeded::Calls(2)))));
        assert_eq!(outcome.phase, Some(Phase::Failed));
        assert_eq!(outcome.reason.as_deref(), Some(BUDGET_EXCEEDED));
        let message = outcome.message.clone().unwrap_or_default();
        assert!(
            message.contains("budget of 2 calls") && message.contains("2 calls, 10 input"),
            "{message}"
        );
        assert!(message.contains("the evaluation itself: "), "{message}");
        assert_eq!(outcome.result, passed().result, "the result is kept");
        assert_eq!(outcome.result_digest, passed().result_digest);
        // A failed pod too: the budget is why.
        let crashed = Outcome {
            exit_code: Some(1),
            ..Outcome::new(Phase::Failed, "Error", "exit code 1")
        };
        let outcome = with_usage(crashed, Some(&used(Some(Exceeded::Tokens(9)))));
        assert_eq!(
            (outcome.reason.as_deref(), outcome.exit_code),
            (Some(BUDGET_EXCEEDED), Some(1))
        );
    }

    #[test]
    fn without_a_refusal_the_outcome_stands() {
        assert_eq!(with_usage(passed(), Some(&used(None))), passed());
        assert_eq!(with_usage(passed(), None), passed());
    }

    #[test]
    fn usage_that_could_not_be_read_is_said_and_changes_nothing_else() {
        let outcome = with_usage(passed(), Some(&Err("connection refused".into())));
        assert_eq!(
            (outcome.phase, outcome.reason.as_deref()),
            (passed().phase, passed().reason.as_deref())
        );
        assert!(outcome.message.is_some_and(|m| {
            m.ends_with("could not be read from the gateway: connection refused")
        }));
    }
}
