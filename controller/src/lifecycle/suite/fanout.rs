//! Expands an EvaluationSuite into the specs of its child Evaluations. Pure.
//!
//! # Merge rule (case onto template)
//! Maps merge (a case's keys win), lists replace, `env` merges by variable name, and objects
//! such as `resources` and `sandbox` merge field by field. `source` merges only when template
//! and case use the same kind (inline files then merge by path); a different kind replaces it.
//!
//! # Matrix
//! Every combination of the matrix values (keys in name order) becomes a case, or multiplies
//! the listed cases; each value reaches the evaluation as env `MATRIX_<KEY>` (key upper-cased,
//! other characters `_`). Case names join the case name and the values, reduced to a DNS label;
//! when that is not unique or too long, a short hash of the exact values keeps it stable and
//! unique.
//!
//! # Bounds
//! [`expansion`] computes how many children the suite makes and how large they are from the
//! counts and lengths alone, before anything is built; beyond `crd::bounds` the suite is
//! refused, so a 631-byte manifest cannot make the controller build 2^30 combinations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVar;
use serde_json::Value;

use crate::crd::bounds::{
    MAX_CASES, MAX_MATRIX_KEY_LEN, MAX_MATRIX_KEYS, MAX_MATRIX_VALUE_LEN, MAX_SUITE_EXPANDED_BYTES,
    MAX_SUITE_NAME_LEN, capped, json_len, shown,
};
use crate::crd::evaluation::EvaluationSpec;
use crate::crd::suite::{EvaluationSuiteSpec, SuiteCase};
use crate::digest::sha256_hex;
use crate::run::validate;

/// Longest case name: the child `<suite>-<case>` must stay a valid name with room for the
/// suite's own name.
const CASE_NAME_MAX: usize = 40;
/// JSON bytes one matrix variable adds to a child's env beyond its name and value
/// (`{"name":"MATRIX_","value":""},`).
const ENV_BYTES_PER_VARIABLE: usize = 32;

/// What a suite expands to, computed without expanding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expansion {
    /// Number of children: listed cases (at least one) times matrix combinations.
    pub cases: usize,
    /// Upper estimate of the JSON bytes of all children's specs together.
    pub bytes: usize,
}

/// Checks the suite's size from counts and lengths alone: no combination, case or spec is
/// built, so this is cheap for any manifest.
///
/// # Errors
/// Every bound the suite exceeds, for the InvalidSpec condition.
pub fn expansion(spec: &EvaluationSuiteSpec) -> Result<Expansion, Vec<String>> {
    if spec.cases.is_empty() && spec.matrix.is_empty() {
        return Err(vec!["spec: a suite needs cases, a matrix, or both".into()]);
    }
    let mut problems = Vec::new();
    if spec.matrix.len() > MAX_MATRIX_KEYS {
        problems.push(format!(
            "spec.matrix has {} keys, at most {MAX_MATRIX_KEYS} allowed",
            spec.matrix.len()
        ));
    }
    for (key, values) in &spec.matrix {
        if key.is_empty() || key.len() > MAX_MATRIX_KEY_LEN {
            problems.push(format!(
                "spec.matrix: key {} must have 1 to {MAX_MATRIX_KEY_LEN} characters",
                shown(key)
            ));
        }
        if values.is_empty() {
            problems.push(format!("spec.matrix.{} has no values", shown(key)));
        }
        if let Some(value) = values.iter().find(|v| v.len() > MAX_MATRIX_VALUE_LEN) {
            problems.push(format!(
                "spec.matrix.{}: value {} is longer than {MAX_MATRIX_VALUE_LEN} bytes",
                shown(key),
                shown(value)
            ));
        }
    }
    // Saturating: a product past usize::MAX is as refused as one past MAX_CASES.
    let combinations = spec
        .matrix
        .values()
        .fold(1usize, |n, values| n.saturating_mul(values.len()));
    let cases = spec.cases.len().max(1).saturating_mul(combinations);
    if cases > MAX_CASES {
        problems.push(format!(
            "the suite expands to {} cases, at most {MAX_CASES} allowed",
            if cases == usize::MAX {
                "more than 2^64".to_string()
            } else {
                cases.to_string()
            }
        ));
    }
    if !problems.is_empty() {
        return Err(capped(problems));
    }
    // Each child is the template merged with its case and its matrix variables, so it is at
    // most the sum of the three (a case's fields replace or merge into the template's).
    let matrix_env = spec.matrix.iter().fold(0usize, |sum, (key, values)| {
        let longest = values.iter().map(String::len).max().unwrap_or(0);
        sum.saturating_add(ENV_BYTES_PER_VARIABLE + key.len() + longest)
    });
    let per_combination = json_len(&spec.template).saturating_add(matrix_env);
    let bytes = if spec.cases.is_empty() {
        per_combination.saturating_mul(combinations)
    } else {
        spec.cases.iter().fold(0usize, |sum, case| {
            let child = per_combination.saturating_add(json_len(case));
            sum.saturating_add(child.saturating_mul(combinations))
        })
    };
    if bytes > MAX_SUITE_EXPANDED_BYTES {
        return Err(vec![format!(
            "the suite's {cases} children would hold about {} MiB of specs, at most {} MiB \
             allowed (fewer cases, or move large inline sources to git)",
            bytes / (1024 * 1024),
            MAX_SUITE_EXPANDED_BYTES / (1024 * 1024)
        )]);
    }
    Ok(Expansion { cases, bytes })
}

/// Checks that the suite's name can name its children: it is the value of the
/// `crucible.dev/suite` label on every child and pod (at most 63 characters), and with a case
/// name (at most 40) it stays a valid Evaluation name (253).
///
/// # Errors
/// Why the name cannot be used, for the InvalidSpec condition.
pub fn check_suite_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_SUITE_NAME_LEN {
        return Err(format!(
            "metadata.name: a suite name has at most {MAX_SUITE_NAME_LEN} characters (it labels \
             every child and pod), this one has {}",
            name.len()
        ));
    }
    Ok(())
}

/// One child to be: its case name and effective spec.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredCase {
    /// Case name (a DNS label).
    pub name: String,
    /// The effective Evaluation spec.
    pub spec: EvaluationSpec,
}

/// Expands the suite into its cases, in a stable order, after [`expansion`] has checked its
/// size.
///
/// # Errors
/// Every problem found (a bound exceeded, duplicate names, a merge that does not yield a valid
/// spec or yields one over a size bound), for the InvalidSpec condition.
pub fn desired_cases(spec: &EvaluationSuiteSpec) -> Result<Vec<DesiredCase>, Vec<String>> {
    expansion(spec)?;
    let mut problems = Vec::new();
    let base_cases: Vec<SuiteCase> = if spec.cases.is_empty() {
        vec![SuiteCase::default()]
    } else {
        spec.cases.clone()
    };
    let combinations = matrix_combinations(&spec.matrix);
    let template = match serde_json::to_value(&spec.template) {
        Ok(v) => v,
        Err(e) => return Err(vec![format!("spec.template: {e}")]),
    };
    let mut out: Vec<DesiredCase> = Vec::new();
    for case in &base_cases {
        for combination in &combinations {
            let name = case_name(&case.name, combination);
            let mut overrides = Value::Object(case.overrides.clone());
            if let Value::Object(map) = &mut overrides {
                // The suite's own switch, not a case's.
                map.remove("cancel");
            }
            if !combination.is_empty() {
                let matrix_env: Vec<EnvVar> = combination
                    .iter()
                    .map(|(k, v)| EnvVar {
                        name: format!("MATRIX_{}", env_key(k)),
                        value: Some(v.clone()),
                        value_from: None,
                    })
                    .collect();
                let mut env = overrides
                    .get("env")
                    .cloned()
                    .unwrap_or(Value::Array(vec![]));
                merge_env(
                    &mut env,
                    &serde_json::to_value(matrix_env).unwrap_or_default(),
                );
                overrides["env"] = env;
            }
            let mut merged = template.clone();
            merge(&mut merged, &overrides);
            match serde_json::from_value::<EvaluationSpec>(merged) {
                Ok(spec) => {
                    // The merge can exceed what template and case respect on their own (env
                    // and inline files merge); such a child would be refused by the API server.
                    problems.extend(
                        validate::size_problems(&spec)
                            .into_iter()
                            .map(|p| format!("case {name}: {p}")),
                    );
                    out.push(DesiredCase { name, spec });
                }
                Err(e) => problems.push(format!("case {name}: {e}")),
            }
        }
    }
    disambiguate(&mut out, &base_cases, &combinations);
    let mut seen = std::collections::BTreeSet::new();
    for case in &out {
        if !seen.insert(case.name.clone()) {
            problems.push(format!("case name {} is used twice", case.name));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(capped(problems))
    }
}

/// Every combination of the matrix values, keys in name order; one empty combination when
/// there is no matrix.
fn matrix_combinations(matrix: &BTreeMap<String, Vec<String>>) -> Vec<Vec<(String, String)>> {
    matrix.iter().fold(vec![Vec::new()], |acc, (key, values)| {
        acc.iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push((key.clone(), v.clone()));
                    next
                })
            })
            .collect()
    })
}

fn env_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Lower-case DNS label from arbitrary text: runs of other characters become one `-`.
fn label(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

fn case_name(case: &str, combination: &[(String, String)]) -> String {
    let parts: Vec<String> = std::iter::once(case.to_string())
        .chain(combination.iter().map(|(_, v)| v.clone()))
        .filter(|p| !p.is_empty())
        .collect();
    let name = label(&parts.join("-"));
    let exact = format!("{case}\n{combination:?}");
    if name.is_empty() || name.len() > CASE_NAME_MAX {
        let hash = &sha256_hex(exact.as_bytes())[..8];
        let head: String = name.chars().take(CASE_NAME_MAX - 9).collect();
        let head = head.trim_end_matches('-');
        if head.is_empty() {
            format!("case-{hash}")
        } else {
            format!("{head}-{hash}")
        }
    } else {
        name
    }
}

/// Gives every case whose reduced name collides a hash of its exact values.
fn disambiguate(
    cases: &mut [DesiredCase],
    base: &[SuiteCase],
    combinations: &[Vec<(String, String)>],
) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    cases
        .iter()
        .for_each(|c| *counts.entry(c.name.clone()).or_default() += 1);
    let exacts: Vec<String> = base
        .iter()
        .flat_map(|b| {
            combinations
                .iter()
                .map(move |c| format!("{}\n{c:?}", b.name))
        })
        .collect();
    for (case, exact) in cases.iter_mut().zip(exacts) {
        if counts.get(&case.name).copied().unwrap_or(0) > 1 {
            let hash = &sha256_hex(exact.as_bytes())[..8];
            let head: String = case.name.chars().take(CASE_NAME_MAX - 9).collect();
            case.name = format!("{}-{hash}", head.trim_end_matches('-'));
        }
    }
}

/// Merges `over` onto `base` by the rule in the module docs.
fn merge(base: &mut Value, over: &Value) {
    let (Value::Object(base_map), Value::Object(over_map)) = (&mut *base, over) else {
        *base = over.clone();
        return;
    };
    for (key, value) in over_map {
        match (key.as_str(), base_map.get_mut(key)) {
            ("env", Some(existing)) => merge_env(existing, value),
            ("source", Some(existing)) => {
                let same_kind = existing.as_object().map(|o| o.keys().collect::<Vec<_>>())
                    == value.as_object().map(|o| o.keys().collect::<Vec<_>>());
                if same_kind {
                    merge(existing, value);
                } else {
                    *existing = value.clone();
                }
            }
            (_, Some(existing)) if existing.is_object() && value.is_object() => {
                merge(existing, value)
            }
            _ => {
                base_map.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Env lists merge by `name`: a case's variable replaces the template's of the same name,
/// new ones are appended in order.
fn merge_env(base: &mut Value, over: &Value) {
    let (Value::Array(base_list), Value::Array(over_list)) = (&mut *base, over) else {
        *base = over.clone();
        return;
    };
    for var in over_list {
        let name = var.get("name");
        match base_list.iter_mut().find(|v| v.get("name") == name) {
            Some(slot) => *slot = var.clone(),
            None => base_list.push(var.clone()),
        }
    }
}

#[cfg(test)]
#[path = "fanout_tests.rs"]
mod tests;
