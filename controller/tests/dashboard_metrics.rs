//! The Grafana dashboard (`charts/crucible/dashboards/crucible.json`) queries only series that the
//! controller and the model gateway really export, and the chart's ConfigMap template embeds
//! that very file.
//!
//! No I/O beyond reading the chart's files: the exported names come from encoding freshly
//! registered `crucible::metrics::Metrics` and `crucible::gateway::metrics::Metrics` registries,
//! as their `/metrics` do.

use std::collections::BTreeSet;
use std::path::PathBuf;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use serde_json::Value;

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/crucible")
}

/// Path of the dashboard inside the chart, as the ConfigMap template names it.
const DASHBOARD: &str = "dashboards/crucible.json";

fn dashboard() -> Value {
    let path = chart_dir().join(DASHBOARD);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Series names in the expositions of the controller's and the gateway's registries. The `# TYPE` line names the
/// family; the series a query can select depend on the type: a counter `x` is stored as
/// `x_total`, a histogram `x` as `x_bucket`, `x_sum` and `x_count`.
///
/// NB: prometheus-client (0.25) encodes no `# TYPE` line for a labelled family that has no
/// series yet, so every family is given one series first, through the same methods the
/// controller calls. A family that is registered but never touched here does not show up, and
/// a dashboard query on it fails this test: add the call below when adding a family.
fn exported_series() -> BTreeSet<String> {
    let mut registry = Registry::with_prefix("crucible");
    let metrics = crucible::metrics::Metrics::default().register(&mut registry);
    drop(metrics.reconcile_timer("Evaluation"));
    metrics.reconcile_failure("Evaluation", "Test");
    metrics.set_phase("uid", "ns", Some("Running"));
    metrics.set_queue_depth("ns", 1);
    metrics.admitted_after(1.0);
    metrics.set_quota("ns", "running", 1.0, Some(5.0));
    metrics.finished(
        "ns",
        "eval",
        "Succeeded",
        3.0,
        Some(0.9),
        Some((0.85, 0.95)),
    );
    metrics.set_suite("ns", "suite", Some(0.9), 1.0);
    metrics.budget_exceeded("ns");
    // The model usage panels read the gateway's families (its own process and port).
    let gateway = crucible::gateway::metrics::Metrics::default();
    gateway.register(&mut registry);
    gateway.call(
        crucible::gateway::metrics::CallLabels {
            namespace: "ns".into(),
            model: "m".into(),
            outcome: "ok",
        },
        1,
        1,
        0.1,
        0.1,
    );
    gateway.refusal("budget_exceeded");
    let mut text = String::new();
    encode(&mut text, &registry).expect("the registry encodes");
    let mut series = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            panic!("malformed TYPE line: {line}");
        };
        let suffixes: &[&str] = match kind {
            "counter" if name.ends_with("_total") => &[""],
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "gaugehistogram" => &["_bucket", "_gsum", "_gcount"],
            "summary" => &["", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        for suffix in suffixes {
            series.insert(format!("{name}{suffix}"));
        }
    }
    assert!(!series.is_empty(), "no # TYPE lines in:\n{text}");
    series
}

/// PromQL functions and aggregation operators (Prometheus 2.x/3.x), plus Grafana's
/// `label_values` for variable queries.
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "double_exponential_smoothing",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "info",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_by_label",
    "sort_by_label_desc",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
    "start",
    "end",
    "label_values",
];

/// Aggregation operators: `sum by (x) (...)` puts a keyword, not `(`, after the name.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other keywords and literals.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// Index just past the group opened at `open` (`(`/`{`/`[`), skipping string literals inside.
fn skip_group(chars: &[char], open: usize) -> Result<usize, String> {
    let (opening, closing) = match chars[open] {
        '(' => ('(', ')'),
        '{' => ('{', '}'),
        '[' => ('[', ']'),
        c => return Err(format!("not a group opener: {c}")),
    };
    let mut depth = 0usize;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i)?,
            c if c == opening => {
                depth += 1;
                i += 1;
            }
            c if c == closing => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => i += 1,
        }
    }
    Err(format!("unbalanced {opening}"))
}

/// Index just past the string literal starting at `start`.
fn skip_string(chars: &[char], start: usize) -> Result<usize, String> {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err("unterminated string literal".to_string())
}

/// Metric names selected by a PromQL expression (Grafana variables such as `$namespace` and
/// `$__rate_interval` allowed). Label matchers, ranges, strings, numbers, durations, keywords
/// and label lists are skipped; a name followed by `(` must be a known function. Selecting by
/// `__name__` is refused, since it would hide the metric name from this check.
fn metric_names(expr: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let next_non_space = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i)?;
        } else if c == '{' {
            let end = skip_group(&chars, i)?;
            let matchers: String = chars[i..end].iter().collect();
            if matchers.contains("__name__") {
                return Err(format!(
                    "selects by __name__ ({matchers}); name the metric instead"
                ));
            }
            i = end;
        } else if c == '[' {
            i = skip_group(&chars, i)?;
        } else if c == '$' {
            // Grafana variable: $name or ${name...}
            i += 1;
            if i < chars.len() && chars[i] == '{' {
                i = skip_group(&chars, i)?;
            } else {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // number or duration: 0.95, 1e3, 5m, 1h30m, 0x1f
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let lower = ident.to_ascii_lowercase();
            let after = next_non_space(i);
            let followed_by_paren = chars.get(after) == Some(&'(');
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if followed_by_paren {
                    i = skip_group(&chars, after)?;
                }
            } else if KEYWORDS.contains(&lower.as_str()) || AGGREGATIONS.contains(&lower.as_str()) {
                // operator; its operands are scanned on their own
            } else if followed_by_paren {
                if !FUNCTIONS.contains(&ident.as_str()) {
                    return Err(format!("unknown PromQL function {ident}()"));
                }
            } else {
                names.push(ident);
            }
        } else {
            i += 1;
        }
    }
    Ok(names)
}

/// Every string under a key named `expr`, with the JSON path it was found at.
fn exprs(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let here = format!("{path}.{key}");
                match (key.as_str(), v) {
                    ("expr", Value::String(s)) => out.push((here, s.clone())),
                    _ => exprs(v, &here, out),
                }
            }
        }
        Value::Array(items) => {
            for (n, v) in items.iter().enumerate() {
                exprs(v, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// The selector of each `label_values(selector, label)` variable query.
fn variable_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let vars = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for var in vars {
        if var["type"] != "query" {
            continue;
        }
        let query = match &var["query"] {
            Value::String(s) => s.clone(),
            other => other["query"].as_str().unwrap_or_default().to_string(),
        };
        let name = var["name"].as_str().unwrap_or("?");
        if let Some(args) = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
        {
            // the label is the last argument; the selector (if any) comes before it
            if let Some((selector, _label)) = args.rsplit_once(',') {
                out.push((format!("templating.{name}"), selector.to_string()));
            }
        } else {
            out.push((format!("templating.{name}"), query));
        }
    }
    out
}

#[test]
fn promql_scanner_finds_metric_names_and_skips_the_rest() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (le, kind) (rate(crucible_a_bucket{kind=~"x|y",ns="$namespace"}[$__rate_interval])))
           / on (kind) group_left sum without (reason) (crucible_b_total offset 5m) > bool 1e-3 or vector(0)"#,
    )
    .expect("parses");
    assert_eq!(names, ["crucible_a_bucket", "crucible_b_total"]);
    assert_eq!(metric_names("up").expect("parses"), ["up"]);
    assert!(metric_names(r#"{__name__="crucible_x"}"#).is_err());
    assert!(metric_names("made_up_function(crucible_x)").is_err());
    assert_eq!(
        metric_names(r#"count_values("v", crucible_y) * 2"#).expect("parses"),
        ["crucible_y"]
    );
}

#[test]
fn every_dashboard_query_uses_only_series_the_controller_exports() {
    let exported = exported_series();
    let dashboard = dashboard();
    let mut queries = Vec::new();
    exprs(&dashboard, "", &mut queries);
    assert!(
        queries.len() >= 10,
        "expected the dashboard's panel queries, found {}",
        queries.len()
    );
    queries.extend(variable_queries(&dashboard));

    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (path, expr) in &queries {
        match metric_names(expr) {
            Err(e) => problems.push(format!("{path}: {e}: {expr}")),
            Ok(names) => {
                for name in names {
                    if !name.starts_with("crucible_") {
                        problems.push(format!("{path}: {name} is not a crucible metric: {expr}"));
                    } else if !exported.contains(&name) {
                        problems.push(format!(
                            "{path}: {name} is exported by neither the controller nor the gateway: {expr}"
                        ));
                    }
                    used.insert(name);
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard queries that do not match the controller's metrics:\n  {}\nexported series: {exported:?}",
        problems.join("\n  ")
    );
    assert!(!used.is_empty(), "the dashboard queries no crucible metric");
}

#[test]
fn dashboard_has_datasource_and_namespace_variables() {
    let dashboard = dashboard();
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).cloned();
    let datasource = var("datasource").expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    assert!(var("namespace").is_some(), "a namespace variable");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    // every query goes through the datasource variable, so the dashboard imports anywhere
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "panel {:?} queries a fixed datasource",
                panel["title"]
            );
        }
    }
}

#[test]
fn configmap_template_embeds_the_dashboard_file() {
    let path = chart_dir().join("templates/dashboard-configmap.yaml");
    let template = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let embedded: Vec<&str> = template
        .split(".Files.Get")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
        .collect();
    assert_eq!(
        embedded,
        [DASHBOARD],
        "{} must embed exactly the file this test checks",
        path.display()
    );
    assert!(chart_dir().join(DASHBOARD).is_file());
}
