//! The samples part of a spec: its checks and what a run's sandbox is told. Pure.

use crate::crd::EvaluationSpec;
use crate::crd::bounds::MAX_NAME_LEN;
use crate::crd::samples::{MAX_EPOCHS, MAX_SEED};
use crate::digest::sha256_hex;

/// The directory of [`SAMPLES_PATH`]: a volume only the reporting step mounts.
pub const SAMPLES_DIR: &str = "/crucible-samples";
/// Name of the sandbox pod's trusted container that carries the samples file out on its log.
pub const SAMPLES_CONTAINER: &str = "samples";
/// Where the step that reports (the evaluation, or the scorer when there is one) writes its
/// samples in the sandbox: `$CRUCIBLE_SAMPLES_PATH`.
pub const SAMPLES_PATH: &str = "/crucible-samples/samples.jsonl";

/// `spec.epochs`, 1 when empty.
pub fn epochs(spec: &EvaluationSpec) -> u32 {
    spec.epochs.and_then(|e| u32::try_from(e).ok()).unwrap_or(1)
}

/// `CRUCIBLE_SEED` of a run: `spec.seed`, or one derived from the run id, so every attempt of a
/// run (and a rerun of the same run id) gets the same seed while a new run gets a new one.
pub fn seed(spec: &EvaluationSpec, run_id: &str) -> i64 {
    spec.seed.unwrap_or_else(|| derived_seed(run_id))
}

/// The first 32 bits of sha256(run id): within `MAX_SEED`, which every common RNG accepts.
fn derived_seed(run_id: &str) -> i64 {
    let hex = sha256_hex(run_id.as_bytes());
    hex.get(..8)
        .and_then(|h| i64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

/// `CRUCIBLE_EPOCHS` and `CRUCIBLE_SEED`, which every step of a run gets (the reporting step
/// also gets `CRUCIBLE_SAMPLES_PATH`), as name/value pairs.
pub fn env(spec: &EvaluationSpec, run_id: &str) -> [(&'static str, String); 2] {
    [
        ("CRUCIBLE_EPOCHS", epochs(spec).to_string()),
        ("CRUCIBLE_SEED", seed(spec, run_id).to_string()),
    ]
}

/// Problems of `epochs`, `seed` and `compareTo` the schema cannot catch (or that an older API
/// server without the schema would let through), each a sentence naming the field.
pub fn problems(spec: &EvaluationSpec) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(e) = spec.epochs
        && !(1..=MAX_EPOCHS).contains(&e)
    {
        problems.push(format!("spec.epochs must be 1 to {MAX_EPOCHS}, not {e}"));
    }
    if let Some(s) = spec.seed
        && !(0..=MAX_SEED).contains(&s)
    {
        problems.push(format!("spec.seed must be 0 to {MAX_SEED}, not {s}"));
    }
    if let Some(c) = &spec.compare_to {
        let previous = c.previous == Some(true);
        match c.evaluation.as_deref() {
            Some(_) if previous => problems
                .push("spec.compareTo: set either evaluation or previous: true, not both".into()),
            Some(name) if name.is_empty() || name.len() > MAX_NAME_LEN => problems.push(format!(
                "spec.compareTo.evaluation must be 1 to {MAX_NAME_LEN} characters"
            )),
            Some(_) => {}
            None if !previous => {
                problems.push("spec.compareTo needs evaluation: <name> or previous: true".into())
            }
            None => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::samples::CompareTo;

    fn spec() -> EvaluationSpec {
        EvaluationSpec {
            image: "python:3.12".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_spec_without_samples_fields_has_no_problems_and_one_epoch() {
        assert!(problems(&spec()).is_empty());
        assert_eq!(epochs(&spec()), 1);
    }

    #[test]
    fn epochs_and_seed_out_of_range_are_refused() {
        for (epochs, seed) in [(Some(0), None), (Some(101), None), (None, Some(-1))] {
            let s = EvaluationSpec {
                epochs,
                seed,
                ..spec()
            };
            assert_eq!(problems(&s).len(), 1, "{epochs:?} {seed:?}");
        }
        let ok = EvaluationSpec {
            epochs: Some(100),
            seed: Some(MAX_SEED),
            ..spec()
        };
        assert!(problems(&ok).is_empty());
        assert_eq!(
            problems(&EvaluationSpec {
                seed: Some(MAX_SEED + 1),
                ..spec()
            })
            .len(),
            1
        );
    }

    #[test]
    fn compare_to_needs_exactly_one_baseline() {
        let with = |evaluation: Option<&str>, previous: Option<bool>| EvaluationSpec {
            compare_to: Some(CompareTo {
                evaluation: evaluation.map(Into::into),
                previous,
            }),
            ..spec()
        };
        assert!(problems(&with(Some("baseline"), None)).is_empty());
        assert!(problems(&with(None, Some(true))).is_empty());
        assert!(problems(&with(Some("baseline"), Some(false))).is_empty());
        assert_eq!(problems(&with(Some("b"), Some(true))).len(), 1);
        assert_eq!(problems(&with(None, None)).len(), 1);
        assert_eq!(problems(&with(None, Some(false))).len(), 1);
        assert_eq!(problems(&with(Some(""), None)).len(), 1);
    }

    #[test]
    fn the_seed_is_pinned_or_derived_from_the_run_id() {
        let pinned = EvaluationSpec {
            seed: Some(42),
            ..spec()
        };
        assert_eq!(seed(&pinned, "run-a"), 42);
        let a = seed(&spec(), "run-a");
        assert_eq!(a, seed(&spec(), "run-a"), "same run, same seed");
        assert_ne!(a, seed(&spec(), "run-b"), "another run, another seed");
        assert!((0..=MAX_SEED).contains(&a));
        // python3 -c "import hashlib;print(int(hashlib.sha256(b'run-a').hexdigest()[:8],16))"
        assert_eq!(a, 1_722_936_147);
    }

    #[test]
    fn every_step_is_told_epochs_and_seed() {
        let s = EvaluationSpec {
            epochs: Some(3),
            seed: Some(7),
            ..spec()
        };
        assert_eq!(
            env(&s, "r"),
            [
                ("CRUCIBLE_EPOCHS", "3".to_string()),
                ("CRUCIBLE_SEED", "7".to_string()),
            ]
        );
    }
}
