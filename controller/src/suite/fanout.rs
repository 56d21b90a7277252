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

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVar;
use serde_json::Value;

use crate::crd::evaluation::EvaluationSpec;
use crate::crd::suite::{EvaluationSuiteSpec, SuiteCase};
use crate::digest::sha256_hex;

/// Longest case name: the child `<suite>-<case>` must stay a valid name with room for the
/// suite's own name.
const CASE_NAME_MAX: usize = 40;
/// Most cases a suite may expand to.
pub const MAX_CASES: usize = 5000;

/// One child to be: its case name and effective spec.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredCase {
    /// Case name (a DNS label).
    pub name: String,
    /// The effective Evaluation spec.
    pub spec: EvaluationSpec,
}

/// Expands the suite into its cases, in a stable order.
///
/// # Errors
/// Every problem found (duplicate names, too many cases, a merge that does not yield a valid
/// spec), for the InvalidSpec condition.
pub fn desired_cases(spec: &EvaluationSuiteSpec) -> Result<Vec<DesiredCase>, Vec<String>> {
    let mut problems = Vec::new();
    if spec.cases.is_empty() && spec.matrix.is_empty() {
        return Err(vec!["spec: a suite needs cases, a matrix, or both".into()]);
    }
    if let Some((key, _)) = spec.matrix.iter().find(|(_, values)| values.is_empty()) {
        return Err(vec![format!("spec.matrix.{key} has no values")]);
    }
    let base_cases: Vec<SuiteCase> = if spec.cases.is_empty() {
        vec![SuiteCase::default()]
    } else {
        spec.cases.clone()
    };
    let combinations = matrix_combinations(&spec.matrix);
    let total = base_cases.len().saturating_mul(combinations.len().max(1));
    if total > MAX_CASES {
        return Err(vec![format!(
            "the suite expands to {total} cases, at most {MAX_CASES} allowed"
        )]);
    }
    let template = match serde_json::to_value(&spec.template) {
        Ok(v) => v,
        Err(e) => return Err(vec![format!("spec.template: {e}")]),
    };
    let mut out: Vec<DesiredCase> = Vec::new();
    for case in &base_cases {
        for combination in &combinations {
            let name = case_name(&case.name, combination);
            let mut overrides = match serde_json::to_value(case) {
                Ok(Value::Object(mut map)) => {
                    map.remove("name");
                    Value::Object(map)
                }
                _ => Value::Object(Default::default()),
            };
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
                Ok(spec) => out.push(DesiredCase { name, spec }),
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
        Err(problems)
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
