//! The Default column for fields the controller defaults itself (the CRDs carry no schema
//! defaults): its constants and the flag defaults of `crucible controller`.

use clap::CommandFactory;

use crate::cli::Cli;
use crate::lifecycle::suite::{DEFAULT_PARALLELISM, DEFAULT_SUITE_PASS_THRESHOLD};
use crate::run::results::DEFAULT_PASS_THRESHOLD;

use super::markdown::table_code;

/// The value the controller uses when a field is absent. Crucible's CRDs carry no schema
/// defaults (the API server would write them into every object, and into GitOps diffs), so the
/// Default column comes from the constants and flag defaults the controller applies.
pub(super) fn applied_default(kind: &str, path: &str) -> Option<String> {
    let number = |x: f64| table_code(&x.to_string());
    match (kind, path) {
        ("EvaluationSuite", "spec.parallelism") => {
            return Some(table_code(&DEFAULT_PARALLELISM.to_string()));
        }
        ("EvaluationSuite", "spec.passThreshold") => {
            return Some(number(DEFAULT_SUITE_PASS_THRESHOLD));
        }
        ("EvaluationQuota", "spec.paused") => return Some(table_code("false")),
        _ => {}
    }
    // An Evaluation's spec, or a suite's template (a case's fields default to the template's).
    let field = match kind {
        "Evaluation" => path.strip_prefix("spec.")?,
        "EvaluationSuite" => path.strip_prefix("spec.template.")?,
        _ => return None,
    };
    Some(match field {
        "passThreshold" => number(DEFAULT_PASS_THRESHOLD),
        "retries" => table_code("0"),
        "keepPodOnFailure" | "cancel" | "source.git.follow" => table_code("false"),
        "sandbox.network" => table_code("None"),
        "timeout" => flag_default("default-timeout"),
        "resources.cpu" => flag_default("default-cpu"),
        "resources.memory" => flag_default("default-memory"),
        "resources.ephemeralStorage" => flag_default("default-ephemeral-storage"),
        "sandbox.runtimeClassName" => flag_default("runtime-class"),
        _ => return None,
    })
}

/// `--flag` of `crucible controller` and its default, e.g. `` `--default-timeout` (`10m`) ``.
fn flag_default(flag: &str) -> String {
    let command = Cli::command();
    let value = command
        .find_subcommand("controller")
        .and_then(|c| c.get_arguments().find(|a| a.get_long() == Some(flag)))
        .and_then(|a| a.get_default_values().first())
        .map(|v| v.to_string_lossy().into_owned());
    match value {
        Some(value) => format!(
            "{} ({})",
            table_code(&format!("--{flag}")),
            table_code(&value)
        ),
        None => table_code(&format!("--{flag}")),
    }
}
