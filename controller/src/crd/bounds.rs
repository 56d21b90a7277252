//! Every size a manifest controls, bounded. Pure.
//!
//! Bounds on single fields go into the CRD schema (the `#[schemars]` attributes and the
//! `*_schema` transforms below), so the API server refuses an oversized object before it is
//! stored. Bounds on combinations (the matrix product, a suite's expanded size, a run's pod
//! spec) are checked by `run::validate` and `lifecycle::suite::fanout` before anything is
//! allocated from them, and end the object as `Stalled=True, reason=InvalidSpec`. README
//! "Bounds" lists them all.

use schemars::Schema;
use serde::Serialize;

/// Longest image reference (evaluation and scorer).
pub const MAX_IMAGE_LEN: usize = 1024;
/// Most entries in `command` or in `args`.
pub const MAX_ARGS: usize = 256;
/// Longest single `command` or `args` entry (room for a `python -c` script).
pub const MAX_ARG_LEN: usize = 64 * 1024;
/// Most environment variables in `env`.
pub const MAX_ENV: usize = 256;
/// Longest environment variable name.
pub const MAX_ENV_NAME_LEN: usize = 256;
/// Longest environment variable value.
pub const MAX_ENV_VALUE_LEN: usize = 64 * 1024;
/// Most inline files, and most files read from git: every file is an item of the pod's
/// workspace volume, and ≈40,000 tiny files alone make a pod spec over the API server's 1.5 MiB.
pub const MAX_SOURCE_FILES: usize = 1000;
/// Longest inline file path (a DNS subdomain's length; deeper trees belong in git).
pub const MAX_SOURCE_PATH_LEN: usize = 253;
/// Largest total of inline file paths and contents. The files live in the Evaluation itself and
/// in a ConfigMap, both capped at about 1 MiB by etcd; half of that leaves room for the rest.
pub const MAX_INLINE_BYTES: usize = 512 * 1024;
/// Longest duration string (`timeout`, `queueTimeout`).
pub const MAX_DURATION_LEN: usize = 32;
/// Longest git URL.
pub const MAX_URL_LEN: usize = 2048;
/// Longest git ref.
pub const MAX_REF_LEN: usize = 256;
/// Longest git path.
pub const MAX_GIT_PATH_LEN: usize = 1024;
/// Longest object name (Secret, RuntimeClass): a DNS subdomain.
pub const MAX_NAME_LEN: usize = 253;
/// Most egress rules, and most ports in one rule.
pub const MAX_EGRESS: usize = 64;
/// Longest CIDR (an IPv6 CIDR has at most 43 characters).
pub const MAX_CIDR_LEN: usize = 64;
/// Largest estimate of the bytes a run puts into its pod spec (command, args and env of both
/// containers, two strings per source file); the API server refuses pods over 1.5 MiB and the
/// rest of the pod is a few KiB.
pub const MAX_POD_SPEC_BYTES: usize = 1024 * 1024;
/// Most cases a suite may expand to (listed cases times matrix combinations), and most
/// entries in `cases` and in one matrix value list.
pub const MAX_CASES: usize = 5000;
/// Most matrix keys (2^16 combinations of two values each is already far beyond `MAX_CASES`).
pub const MAX_MATRIX_KEYS: usize = 16;
/// Longest matrix key (it becomes part of an env name `MATRIX_<KEY>`).
pub const MAX_MATRIX_KEY_LEN: usize = 63;
/// Longest matrix value (it becomes an env value and part of a case name).
pub const MAX_MATRIX_VALUE_LEN: usize = 256;
/// Largest estimate of the serialized specs of all of a suite's children together: each child
/// is an object in etcd and in the controller's memory on every suite reconcile.
pub const MAX_SUITE_EXPANDED_BYTES: usize = 32 * 1024 * 1024;
/// Longest suite name: it is the value of the `crucible.dev/suite` label on every child and
/// pod, and label values have at most 63 characters.
pub const MAX_SUITE_NAME_LEN: usize = 63;
/// Most metrics in a result (status), so one result cannot bloat the Evaluation object.
pub const MAX_METRICS: usize = 64;
/// Longest result summary (status), in bytes.
pub const MAX_SUMMARY: usize = 2048;
/// Longest capability token the gateway accepts (checked before decoding): the claims of a run
/// with [`MAX_RUN_MODELS`] models of [`MAX_MODEL_ID_LEN`] fit.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most models a run lists: every model id goes into the run's capability token, which the
/// gateway takes only up to 8 KiB.
pub const MAX_RUN_MODELS: usize = 16;
/// Longest model name in a run (part of an environment variable name).
pub const MAX_MODEL_NAME_LEN: usize = 32;
/// Longest provider model id (`gpt-4.1-mini`, `claude-sonnet-4-5-20250929`, …).
pub const MAX_MODEL_ID_LEN: usize = 256;
/// Most model ids (and prices) one ModelEndpoint lists.
pub const MAX_ENDPOINT_MODELS: usize = 256;
/// Largest `EvaluationQuota.spec.hard.tokensPerDay`: a quadrillion tokens, far above any
/// namespace's day, so a limit never wraps when counted.
pub const MAX_TOKENS_PER_DAY: i64 = 1_000_000_000_000_000;
/// Largest `EvaluationQuota.spec.hard.costUSDPerDay`: a billion dollars.
pub const MAX_COST_USD_PER_DAY: f64 = 1_000_000_000.0;

/// Bytes of `value` serialized as JSON, counted without building the JSON.
///
/// `usize::MAX` if it cannot be serialized (never for the CRD types), so a size check fails
/// closed.
pub fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(bytes.len());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// Most problems listed in an InvalidSpec message.
pub const MAX_PROBLEMS: usize = 10;

/// At most [`MAX_PROBLEMS`] problems and a count of the rest: 5,000 children or 256 variables
/// with the same problem must not make a status message of thousands of sentences.
pub fn capped(mut problems: Vec<String>) -> Vec<String> {
    if problems.len() > MAX_PROBLEMS {
        let rest = problems.len() - MAX_PROBLEMS;
        problems.truncate(MAX_PROBLEMS);
        problems.push(format!("and {rest} more problems"));
    }
    problems
}

/// `text` quoted for a message, cut to 64 characters: a message must stay small whatever the
/// manifest holds.
pub fn shown(text: &str) -> String {
    const SHOWN_CHARS: usize = 64;
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

/// Sets `key` to `value` in the sub-schema at the JSON `pointer` (empty: the schema itself),
/// when it exists: for bounds `#[schemars(length)]` cannot reach (map values, fields of
/// upstream types).
fn bound(schema: &mut Schema, pointer: &str, key: &str, value: usize) {
    if let Some(serde_json::Value::Object(node)) = schema.pointer_mut(pointer) {
        node.insert(key.to_string(), value.into());
    }
}

/// `env` lists: at most [`MAX_ENV`] variables, names and values bounded.
pub fn env_schema(schema: &mut Schema) {
    bound(schema, "", "maxItems", MAX_ENV);
    bound(
        schema,
        "/items/properties/name",
        "maxLength",
        MAX_ENV_NAME_LEN,
    );
    bound(
        schema,
        "/items/properties/value",
        "maxLength",
        MAX_ENV_VALUE_LEN,
    );
}

/// `command` and `args` lists: at most [`MAX_ARGS`] entries of [`MAX_ARG_LEN`].
pub fn args_schema(schema: &mut Schema) {
    bound(schema, "", "maxItems", MAX_ARGS);
    bound(schema, "/items", "maxLength", MAX_ARG_LEN);
}

/// Inline files: at most [`MAX_SOURCE_FILES`], each at most [`MAX_INLINE_BYTES`].
pub fn files_schema(schema: &mut Schema) {
    bound(schema, "", "maxProperties", MAX_SOURCE_FILES);
    bound(
        schema,
        "/additionalProperties",
        "maxLength",
        MAX_INLINE_BYTES,
    );
}

/// A ModelEndpoint's model ids: each at most [`MAX_MODEL_ID_LEN`] (the count is on the field).
pub fn model_ids_schema(schema: &mut Schema) {
    bound(schema, "/items", "maxLength", MAX_MODEL_ID_LEN);
}

/// The matrix: at most [`MAX_MATRIX_KEYS`] keys, each with at most [`MAX_CASES`] values of
/// [`MAX_MATRIX_VALUE_LEN`].
pub fn matrix_schema(schema: &mut Schema) {
    bound(schema, "", "maxProperties", MAX_MATRIX_KEYS);
    bound(schema, "/additionalProperties", "maxItems", MAX_CASES);
    bound(
        schema,
        "/additionalProperties/items",
        "maxLength",
        MAX_MATRIX_VALUE_LEN,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_len_is_the_length_of_the_json() {
        let value = serde_json::json!({"a": [1, 2, "three"], "b": null});
        assert_eq!(
            json_len(&value),
            serde_json::to_vec(&value).expect("serializes").len()
        );
        assert_eq!(json_len(""), 2);
    }

    #[test]
    fn shown_text_is_quoted_and_cut() {
        assert_eq!(shown("a.py"), "\"a.py\"");
        let long = shown(&"é".repeat(1000));
        assert_eq!(long.chars().count(), 64 + 3, "{long}");
        assert!(long.ends_with('…'));
    }

    #[test]
    fn bounds_reach_nested_schemas_and_skip_missing_ones() {
        let mut schema = Schema::try_from(serde_json::json!({
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}}
        }))
        .expect("object schema");
        matrix_schema(&mut schema);
        bound(&mut schema, "/missing", "maxLength", 1);
        assert_eq!(
            schema.as_value(),
            &serde_json::json!({
                "type": "object",
                "maxProperties": MAX_MATRIX_KEYS,
                "additionalProperties": {
                    "type": "array",
                    "maxItems": MAX_CASES,
                    "items": {"type": "string", "maxLength": MAX_MATRIX_VALUE_LEN}
                }
            })
        );
    }
}
