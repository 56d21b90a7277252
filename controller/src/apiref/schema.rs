//! A kind's fields as tables: one row per field, walked from the root schema in name order,
//! with its type, whether it is required, its default and what the API server validates.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};

use super::defaults::applied_default;
use super::markdown::{escape, table_code, table_code_list};

/// One section per top-level property of the root schema (`spec`, `status`), each a table of
/// that property and every field below it.
pub(super) fn render_schema(kind: &str, root: &JSONSchemaProps) -> String {
    let mut out = String::new();
    for (name, schema) in root.properties.iter().flatten() {
        out.push_str(&format!("\n### `{name}`\n\n"));
        out.push_str("| Field | Type | Required | Default | Validation | Description |\n");
        out.push_str("|---|---|---|---|---|---|\n");
        let mut rows = vec![row(kind, name, schema, is_required(root, name))];
        descend(kind, name, schema, &mut rows);
        for row in rows {
            out.push_str(&row);
            out.push('\n');
        }
    }
    out
}

/// Appends a row for every field below `schema`, which sits at `path`.
fn descend(kind: &str, path: &str, schema: &JSONSchemaProps, rows: &mut Vec<String>) {
    for (name, child) in schema.properties.iter().flatten() {
        let child_path = format!("{path}.{name}");
        rows.push(row(kind, &child_path, child, is_required(schema, name)));
        descend(kind, &child_path, child, rows);
    }
    if let Some(items) = item_schema(schema) {
        descend(kind, &format!("{path}[]"), items, rows);
    }
    if let Some(values) = value_schema(schema) {
        descend(kind, &format!("{path}.<key>"), values, rows);
    }
}

fn row(kind: &str, path: &str, schema: &JSONSchemaProps, required: bool) -> String {
    let default = schema
        .default
        .as_ref()
        .map(|d| table_code(&d.0.to_string()))
        .or_else(|| applied_default(kind, path))
        .unwrap_or_default();
    format!(
        "| {} | {} | {} | {default} | {} | {} |",
        table_code(path),
        table_code(&type_name(schema)),
        if required { "yes" } else { "" },
        validation(schema).join("; "),
        escape(schema.description.as_deref().unwrap_or_default(), true),
    )
}

fn is_required(parent: &JSONSchemaProps, name: &str) -> bool {
    parent.required.iter().flatten().any(|r| r == name)
}

fn item_schema(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match schema.items.as_ref()? {
        JSONSchemaPropsOrArray::Schema(items) => Some(items),
        JSONSchemaPropsOrArray::Schemas(_) => None,
    }
}

fn value_schema(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match schema.additional_properties.as_ref()? {
        JSONSchemaPropsOrBool::Schema(values) => Some(values),
        JSONSchemaPropsOrBool::Bool(_) => None,
    }
}

/// `string`, `integer (int32)`, `[]string`, `map[string][]string`, `int-or-string`, `object`.
fn type_name(schema: &JSONSchemaProps) -> String {
    if schema.x_kubernetes_int_or_string == Some(true) {
        return "int-or-string".to_string();
    }
    let base = match schema.type_.as_deref() {
        Some("array") => match item_schema(schema) {
            Some(items) => format!("[]{}", type_name(items)),
            None => "array".to_string(),
        },
        Some("object") => match value_schema(schema) {
            Some(values) if schema.properties.is_none() => {
                format!("map[string]{}", type_name(values))
            }
            _ if schema.x_kubernetes_preserve_unknown_fields == Some(true) => {
                "object (any fields)".to_string()
            }
            _ => "object".to_string(),
        },
        Some(other) => other.to_string(),
        None => "any".to_string(),
    };
    match schema.format.as_deref() {
        Some(format) => format!("{base} ({format})"),
        None => base,
    }
}

/// What the API server enforces on this node, in schema keywords.
pub(super) fn validation(schema: &JSONSchemaProps) -> Vec<String> {
    let mut out = Vec::new();
    let values: Vec<String> = schema
        .enum_
        .iter()
        .flatten()
        // schemars lists `null` for optional enums; `nullable` already says that.
        .filter(|v| !v.0.is_null())
        .map(|v| match &v.0 {
            serde_json::Value::String(s) => table_code(s),
            other => table_code(&other.to_string()),
        })
        .collect();
    if !values.is_empty() {
        out.push(format!("one of {}", values.join(", ")));
    }
    let bounds = [
        (schema.minimum, schema.exclusive_minimum, ">", "≥"),
        (schema.maximum, schema.exclusive_maximum, "<", "≤"),
    ];
    for (bound, exclusive, strict, inclusive) in bounds {
        if let Some(bound) = bound {
            let op = if exclusive == Some(true) {
                strict
            } else {
                inclusive
            };
            out.push(format!("{op} {bound}"));
        }
    }
    if let Some(m) = schema.multiple_of {
        out.push(format!("multipleOf {m}"));
    }
    let counts = [
        ("minLength", schema.min_length),
        ("maxLength", schema.max_length),
        ("minItems", schema.min_items),
        ("maxItems", schema.max_items),
        ("minProperties", schema.min_properties),
        ("maxProperties", schema.max_properties),
    ];
    for (keyword, value) in counts {
        if let Some(value) = value {
            out.push(format!("{keyword} {value}"));
        }
    }
    if schema.unique_items == Some(true) {
        out.push("uniqueItems".to_string());
    }
    if let Some(pattern) = schema.pattern.as_deref() {
        out.push(format!("pattern {}", table_code(pattern)));
    }
    match schema.x_kubernetes_list_type.as_deref() {
        Some("map") => {
            let keys = schema
                .x_kubernetes_list_map_keys
                .as_deref()
                .unwrap_or_default();
            out.push(format!("list map, one item per {}", table_code_list(keys)));
        }
        Some("set") => out.push("list set, items unique".to_string()),
        _ => {}
    }
    if let Some(alternatives) = schema.one_of.as_deref() {
        out.push(alternatives_text("exactly one of", "oneOf", alternatives));
    }
    if let Some(alternatives) = schema.any_of.as_deref() {
        out.push(alternatives_text("at least one of", "anyOf", alternatives));
    }
    for rule in schema.x_kubernetes_validations.iter().flatten() {
        let mut text = format!("rule {}", table_code(&rule.rule));
        if let Some(message) = rule.message.as_deref() {
            text.push_str(&format!(" ({})", escape(message, true)));
        }
        out.push(text);
    }
    out
}

/// `oneOf`/`anyOf` of schemas that each only require one field read as "exactly one of `a`,
/// `b`" (the form schemars gives a Rust enum of structs); other shapes are named by keyword.
pub(super) fn alternatives_text(
    phrase: &str,
    keyword: &str,
    alternatives: &[JSONSchemaProps],
) -> String {
    let names: Option<Vec<&str>> = alternatives
        .iter()
        .map(|alternative| match alternative.required.as_deref() {
            Some([name]) if *alternative == requires_only(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    match names {
        Some(names) if !names.is_empty() => {
            let names: Vec<String> = names.into_iter().map(table_code).collect();
            format!("{phrase} {}", names.join(", "))
        }
        _ => format!("{keyword} of {} schemas (see the CRD)", alternatives.len()),
    }
}

pub(super) fn requires_only(name: &str) -> JSONSchemaProps {
    JSONSchemaProps {
        required: Some(vec![name.to_string()]),
        ..JSONSchemaProps::default()
    }
}
