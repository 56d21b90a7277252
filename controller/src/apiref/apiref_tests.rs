use super::schema::{alternatives_text, requires_only, validation};
use super::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinitionNames, CustomResourceDefinitionSpec, CustomResourceDefinitionVersion,
    CustomResourceValidation, JSONSchemaProps,
};

fn schema(value: serde_json::Value) -> JSONSchemaProps {
    serde_json::from_value(value).expect("test schema is a JSONSchemaProps")
}

/// A small kind exercising nested objects, lists of objects, maps, enums, defaults, bounds
/// and a oneOf.
fn widget() -> CustomResourceDefinition {
    let root = schema(serde_json::json!({
        "description": "A widget for tests.",
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "description": "Desired widget.",
                "type": "object",
                "required": ["size"],
                "oneOf": [{"required": ["inline"]}, {"required": ["git"]}],
                "properties": {
                    "size": {
                        "description": "How big, in `<unit>`s | pieces.",
                        "type": "integer", "format": "int32",
                        "minimum": 1.0, "maximum": 10.0, "default": 4
                    },
                    "mode": {
                        "description": "Mode.", "type": "string",
                        "enum": ["Fast", "Slow", null], "nullable": true, "default": "Fast"
                    },
                    "name": {
                        "description": "Name.", "type": "string",
                        "maxLength": 40, "pattern": "^(a|b)+$"
                    },
                    "ports": {
                        "description": "Ports.", "type": "array", "maxItems": 3,
                        "items": {
                            "type": "object", "required": ["port"],
                            "properties": {
                                "port": {"description": "Port number.", "type": "integer"},
                                "limits": {
                                    "description": "Nested limits.", "type": "object",
                                    "properties": {
                                        "cpu": {"description": "CPU.",
                                                "x-kubernetes-int-or-string": true}
                                    }
                                }
                            }
                        }
                    },
                    "labels": {
                        "description": "Free labels.", "type": "object",
                        "additionalProperties": {"type": "string"}
                    },
                    "matrix": {
                        "description": "Values per key.", "type": "object",
                        "additionalProperties": {"type": "array", "items": {"type": "string"}}
                    },
                    "parts": {
                        "description": "Parts by name.", "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {"weight": {"description": "Weight.", "type": "number"}}
                        }
                    },
                    "conditions": {
                        "description": "Conditions.", "type": "array",
                        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                        "items": {"type": "object", "properties": {
                            "type": {"description": "Type.", "type": "string"}
                        }}
                    }
                }
            }
        }
    }));
    CustomResourceDefinition {
        metadata: Default::default(),
        spec: CustomResourceDefinitionSpec {
            group: "example.dev".into(),
            names: CustomResourceDefinitionNames {
                kind: "Widget".into(),
                plural: "widgets".into(),
                short_names: Some(vec!["wd".into()]),
                ..Default::default()
            },
            scope: "Namespaced".into(),
            versions: vec![CustomResourceDefinitionVersion {
                name: "v1".into(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(root),
                }),
                ..Default::default()
            }],
            ..Default::default()
        },
        status: None,
    }
}

fn widget_page() -> String {
    let files = render_crds(&[widget()]);
    let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(names, ["README.md", "widgets.md"]);
    files[1].1.clone()
}

fn row_of<'a>(page: &'a str, path: &str) -> &'a str {
    let start = format!("| `{path}` |");
    page.lines()
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| panic!("no row for {path} in\n{page}"))
}

#[test]
fn scalar_fields_show_type_required_default_bounds_and_description() {
    let page = widget_page();
    assert_eq!(
        row_of(&page, "spec.size"),
        "| `spec.size` | `integer (int32)` | yes | `4` | ≥ 1; ≤ 10 | \
         How big, in `<unit>`s \\| pieces. |"
    );
    assert_eq!(
        row_of(&page, "spec.name"),
        "| `spec.name` | `string` |  |  | maxLength 40; pattern `^(a\\|b)+$` | Name. |"
    );
}

#[test]
fn enums_drop_null_and_keep_their_order_and_default() {
    assert_eq!(
        row_of(&widget_page(), "spec.mode"),
        "| `spec.mode` | `string` |  | `\"Fast\"` | one of `Fast`, `Slow` | Mode. |"
    );
}

#[test]
fn lists_of_objects_are_walked_with_brackets_and_nested_objects_below() {
    let page = widget_page();
    assert!(row_of(&page, "spec.ports").contains("| `[]object` |  |  | maxItems 3 |"));
    assert!(row_of(&page, "spec.ports[].port").contains("| yes |"));
    assert!(row_of(&page, "spec.ports[].limits").contains("Nested limits."));
    assert!(row_of(&page, "spec.ports[].limits.cpu").contains("| `int-or-string` |"));
}

#[test]
fn maps_show_their_value_type_and_walk_object_values_under_key() {
    let page = widget_page();
    assert!(row_of(&page, "spec.labels").contains("| `map[string]string` |"));
    assert!(row_of(&page, "spec.matrix").contains("| `map[string][]string` |"));
    assert!(row_of(&page, "spec.parts").contains("| `map[string]object` |"));
    assert!(row_of(&page, "spec.parts.<key>.weight").contains("| `number` |"));
}

#[test]
fn list_maps_and_one_of_are_named() {
    let page = widget_page();
    assert!(row_of(&page, "spec.conditions").contains("list map, one item per `type`"));
    assert_eq!(
        row_of(&page, "spec"),
        "| `spec` | `object` | yes |  | exactly one of `inline`, `git` | Desired widget. |"
    );
}

#[test]
fn rows_are_in_path_order_within_each_object() {
    let page = widget_page();
    let paths: Vec<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("| `spec."))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert_eq!(
        paths,
        [
            "conditions",
            "conditions[].type",
            "labels",
            "matrix",
            "mode",
            "name",
            "parts",
            "parts.<key>.weight",
            "ports",
            "ports[].limits",
            "ports[].limits.cpu",
            "ports[].port",
            "size"
        ]
    );
}

#[test]
fn index_links_every_kind_page() {
    let files = render_crds(&[widget()]);
    let index = &files[0].1;
    assert!(index.starts_with(GENERATED_HEADER));
    assert!(index.contains(
        "| [Widget](widgets.md) | `example.dev/v1` | Namespaced | `wd` | A widget for tests. |"
    ));
}

#[test]
fn other_one_of_shapes_are_named_by_keyword() {
    let alternatives = [
        schema(serde_json::json!({"type": "string"})),
        requires_only("a"),
    ];
    assert_eq!(
        alternatives_text("exactly one of", "oneOf", &alternatives),
        "oneOf of 2 schemas (see the CRD)"
    );
}

#[test]
fn cel_rules_are_listed_with_their_message() {
    let node = schema(serde_json::json!({
        "type": "string",
        "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "immutable"}]
    }));
    assert_eq!(validation(&node), ["rule `self == oldSelf` (immutable)"]);
}

#[test]
fn crucible_reference_covers_every_kind_and_documented_fields() {
    let files = render_all();
    let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        names,
        [
            "README.md",
            "evaluationquotas.md",
            "evaluations.md",
            "evaluationsuites.md",
            "modelendpoints.md"
        ]
    );
    let evaluations = &files[2].1;
    assert!(
        row_of(evaluations, "spec.retries").contains("| `integer (int32)` |  | `0` | ≥ 0; ≤ 10 |")
    );
    assert!(row_of(evaluations, "spec.sandbox.network").contains("one of `None`, `Allowlist`"));
    assert!(evaluations.contains("exactly one of `inline`, `git`"));
    assert!(row_of(&files[3].1, "spec.cases[].name").contains("maxLength 40"));
}

#[test]
fn the_default_column_shows_what_the_controller_applies() {
    let files = render_all();
    let default_of = |file: usize, path: &str| {
        let row = row_of(&files[file].1, path);
        row.split(" | ").nth(3).unwrap_or_default().to_string()
    };
    assert_eq!(default_of(2, "spec.passThreshold"), "`0.5`");
    assert_eq!(default_of(2, "spec.timeout"), "`--default-timeout` (`10m`)");
    assert_eq!(
        default_of(2, "spec.resources.memory"),
        "`--default-memory` (`512Mi`)"
    );
    assert_eq!(default_of(2, "spec.sandbox.network"), "`None`");
    assert_eq!(default_of(3, "spec.parallelism"), "`4`");
    assert_eq!(default_of(3, "spec.passThreshold"), "`1`");
    assert_eq!(default_of(3, "spec.template.passThreshold"), "`0.5`");
    // A case's fields default to the template's, not to an Evaluation's.
    assert_eq!(default_of(3, "spec.cases[].passThreshold"), "");
    assert_eq!(default_of(1, "spec.paused"), "`false`");
}

#[test]
fn exclusive_bounds_are_strict_and_the_others_inclusive() {
    let node = |exclusive_min: bool, exclusive_max: bool| {
        schema(serde_json::json!({
            "type": "number", "minimum": 0.0, "exclusiveMinimum": exclusive_min,
            "maximum": 1.0, "exclusiveMaximum": exclusive_max
        }))
    };
    assert_eq!(validation(&node(true, false)), ["> 0", "≤ 1"]);
    assert_eq!(validation(&node(false, true)), ["≥ 0", "< 1"]);
}
