//! What a run's samples do to its outcome (docs/samples.md): their statistics go on the
//! status; samples that were refused fail the run `InvalidResult` with no result (no partial
//! statistics are published); a run that wrote samples and no result object gets a result
//! derived from them (`score = samples.mean`, `passed = score >= passThreshold`). Pure; both
//! drivers (the Evaluation controller, `crucible run`) finish runs through it.

use crate::crd::evaluation::{EvaluationResult, EvaluationSpec, Phase};
use crate::run::phase::{self, Outcome};
use crate::run::results::{DEFAULT_PASS_THRESHOLD, NO_RESULT};
use crate::samples::Collected;
use crate::samples::protocol::{Limits, Validator};
use crate::samples::spec as samples_spec;

/// The samples of a run whose pod finished, as observed.
#[derive(Clone, Debug, PartialEq)]
pub enum Samples {
    /// Being carried to the results store: the run waits (the transfer's end reconciles it).
    Pending,
    /// Stored (`None`: the reporting step wrote none), or why not.
    Done(Result<Option<Box<Collected>>, String>),
    /// Not looked at, for the reason given (a controller without a results store): the run
    /// finishes on its result, and its status says its samples were not stored.
    Skipped(String),
}

/// The validator of a run's samples file: the controller's bounds, the run's epochs and pass
/// threshold.
pub fn validator(spec: &EvaluationSpec, limits: Limits) -> Validator {
    Validator::new(
        limits,
        samples_spec::epochs(spec),
        spec.pass_threshold.unwrap_or(DEFAULT_PASS_THRESHOLD),
    )
}

/// `outcome` with the run's `samples` taken into account, and what goes on the status.
pub fn with_samples(
    outcome: Outcome,
    samples: Result<Option<Box<Collected>>, String>,
    threshold: f64,
) -> (Outcome, Option<Box<Collected>>) {
    match samples {
        Err(message) => (
            Outcome {
                exit_code: outcome.exit_code,
                ..Outcome::new(Phase::Failed, "InvalidResult", message)
            },
            None,
        ),
        Ok(Some(collected)) if wrote_no_result(&outcome) => {
            let mean = collected.samples.mean;
            let result = EvaluationResult {
                score: mean,
                passed: mean >= threshold,
                ..Default::default()
            };
            let how = format!(
                " (the mean of {} samples; no result object)",
                collected.samples.ids
            );
            (
                phase::scored(result, None, threshold, &how),
                Some(collected),
            )
        }
        Ok(samples) => (outcome, samples),
    }
}

/// Whether the run ended only for want of a result object.
fn wrote_no_result(outcome: &Outcome) -> bool {
    outcome.reason.as_deref() == Some("InvalidResult")
        && outcome.exit_code == Some(0)
        && outcome
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with(NO_RESULT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::test_support::passed_outcome as passed;

    fn stats(mean: f64) -> Box<Collected> {
        Box::new(Collected {
            samples: crate::crd::samples::SamplesStatus {
                count: 4,
                ids: 2,
                passed: 2,
                mean,
                ..Default::default()
            },
            comparison: None,
        })
    }

    fn no_result() -> Outcome {
        Outcome {
            exit_code: Some(0),
            ..Outcome::new(
                Phase::Failed,
                "InvalidResult",
                format!("{NO_RESULT}nothing was written to $CRUCIBLE_RESULT_PATH"),
            )
        }
    }

    #[test]
    fn samples_without_a_result_object_give_a_derived_result() {
        let (outcome, samples) = with_samples(no_result(), Ok(Some(stats(0.75))), 0.5);
        assert_eq!(outcome.phase, Some(Phase::Succeeded));
        let result = outcome.result.expect("derived");
        assert_eq!((result.score, result.passed), (0.75, true));
        assert!(
            outcome
                .message
                .is_some_and(|m| m.contains("mean of 2 samples"))
        );
        assert_eq!(samples.map(|s| s.samples.mean), Some(0.75));
        let (below, _) = with_samples(no_result(), Ok(Some(stats(0.25))), 0.5);
        assert_eq!(below.result.map(|r| r.passed), Some(false));
    }

    #[test]
    fn a_result_object_wins_and_no_samples_change_nothing() {
        let (outcome, samples) = with_samples(passed(), Ok(Some(stats(0.25))), 0.5);
        assert_eq!(outcome, passed(), "the reported result stands");
        assert_eq!(samples.map(|s| s.samples.mean), Some(0.25));
        let (outcome, samples) = with_samples(no_result(), Ok(None), 0.5);
        assert_eq!(outcome, no_result(), "no samples: still no result");
        assert_eq!(samples, None);
    }

    #[test]
    fn refused_samples_fail_the_run_with_no_result_and_no_statistics() {
        let (outcome, samples) = with_samples(passed(), Err("samples line 2: no id".into()), 0.5);
        assert_eq!(outcome.phase, Some(Phase::Failed));
        assert_eq!(outcome.reason.as_deref(), Some("InvalidResult"));
        assert_eq!(outcome.message.as_deref(), Some("samples line 2: no id"));
        assert_eq!((outcome.result, samples), (None, None));
    }
}
