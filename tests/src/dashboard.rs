//! The shipped Grafana dashboard against a real Prometheus: its expressions are read from the
//! chart's file (never copied), Grafana's variables are filled in, and each one is sent to
//! Prometheus' HTTP API (`/api/v1/query`). The parsing and the HTTP exchange are kept apart so
//! that the pure parts carry the unit tests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The dashboard as the chart ships it (the ConfigMap template embeds this file).
pub fn dashboard_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/crucible/dashboards/crucible.json")
}

/// One PromQL expression of the dashboard and where it comes from (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Panel title or `variable NAME`.
    pub origin: String,
    /// The expression, Grafana variables still in it.
    pub expr: String,
}

/// Every panel target's `expr` (rows' nested panels included) and every query variable, whose
/// `label_values(SELECTOR, LABEL)` becomes `count by (LABEL) (SELECTOR)`: the same series.
pub fn queries(dashboard: &Value) -> Result<Vec<Query>, String> {
    let mut out = Vec::new();
    collect_panels(dashboard, &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let name = var["name"].as_str().unwrap_or("?");
        let text = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .ok_or_else(|| format!("variable {name} has no query"))?;
        out.push(Query {
            origin: format!("variable {name}"),
            expr: label_values_as_promql(text).ok_or_else(|| {
                format!("variable {name}: not label_values(SELECTOR, LABEL): {text}")
            })?,
        });
    }
    if out.is_empty() {
        return Err("the dashboard has no expressions".into());
    }
    Ok(out)
}

fn collect_panels(node: &Value, out: &mut Vec<Query>) {
    for panel in node["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("untitled");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str().filter(|e| !e.trim().is_empty()) {
                out.push(Query {
                    origin: title.to_string(),
                    expr: expr.to_string(),
                });
            }
        }
        collect_panels(panel, out);
    }
}

/// `label_values(SELECTOR, LABEL)` as `count by (LABEL) (SELECTOR)`.
fn label_values_as_promql(text: &str) -> Option<String> {
    let inner = text
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some(format!("count by ({}) ({})", label.trim(), selector.trim()))
}

/// Fills in Grafana variables (`$name` and `${name}`); a variable left over is an error, so a
/// new dashboard variable cannot slip through unevaluated.
pub fn substitute(expr: &str, vars: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut names: Vec<&&str> = vars.keys().collect();
    // `$__rate_interval` before a shorter name that is its prefix, and so on
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = expr.to_string();
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), &vars[*name])
            .replace(&format!("${name}"), &vars[*name]);
    }
    match out.find('$') {
        Some(at) => Err(format!("unknown variable at {:?} in {expr}", &out[at..])),
        None => Ok(out),
    }
}

/// Percent-encoding of a query parameter value (everything but RFC 3986's unreserved set).
pub fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What Prometheus answered to an instant query.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// `status: success`, with this many series (a scalar counts as one).
    Series(usize),
    /// `status: error`, or an answer that is not Prometheus' JSON.
    Error(String),
}

/// Reads the JSON body of `/api/v1/query`.
pub fn parse_answer(body: &str) -> Answer {
    let json: Value = match serde_json::from_str(body) {
        Ok(json) => json,
        Err(e) => return Answer::Error(format!("not JSON ({e}): {body:.200}")),
    };
    if json["status"] != "success" {
        return Answer::Error(format!(
            "{}: {}",
            json["errorType"].as_str().unwrap_or("error"),
            json["error"].as_str().unwrap_or(body)
        ));
    }
    match json["data"]["resultType"].as_str() {
        Some("vector" | "matrix") => {
            Answer::Series(json["data"]["result"].as_array().map_or(0, Vec::len))
        }
        Some("scalar" | "string") => Answer::Series(1),
        other => Answer::Error(format!("unexpected resultType {other:?}")),
    }
}

/// Largest answer read from Prometheus: the dashboard's queries return a few series each.
const MAX_ANSWER: u64 = 4 << 20;

/// One instant query against Prometheus at `addr` (`host:port`, plain HTTP, as the test
/// infrastructure starts it), with a deadline for the whole exchange.
pub async fn instant_query(addr: &str, promql: &str, timeout: Duration) -> Answer {
    match tokio::time::timeout(
        timeout,
        get(
            addr,
            &format!("/api/v1/query?query={}", percent_encode(promql)),
        ),
    )
    .await
    {
        Ok(Ok(body)) => parse_answer(&body),
        Ok(Err(e)) => Answer::Error(format!("GET from {addr}: {e}")),
        Err(_) => Answer::Error(format!("no answer from {addr} within {timeout:?}")),
    }
}

/// HTTP/1.0 GET of `path` from `addr` (no chunked encoding; the server closes the connection
/// after the body), its body only; at most 4 MiB are read. Callers bound it in time.
///
/// # Errors
/// Connecting, writing or reading failed.
pub async fn get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    Ok(text
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, body)| body.to_string()))
}

/// The `crucible_…` families an expression reads (the dashboard's label values and legends
/// hold no such word).
pub fn families(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("crucible_"))
        .collect()
}

/// Whether only runs with models produce `family`: the model gateway's families (its own
/// process and port) and the controller's count of runs ended `BudgetExceeded`. The dashboard
/// test's controller has no gateway; `tests/models` evaluates these panels instead, against a
/// Prometheus scraping its gateway and its controller.
pub fn is_model_usage(family: &str) -> bool {
    family.starts_with("crucible_gateway_") || family == "crucible_budget_exceeded_total"
}

/// Whether `expr` reads model usage only (at least one family, all of them model usage).
pub fn reads_model_usage(expr: &str) -> bool {
    let read = families(expr);
    !read.is_empty() && read.into_iter().all(is_model_usage)
}

/// Sends every query (variables filled from `vars`) to Prometheus at `addr` until each returns
/// series, except those `may_be_empty` lets go. An error fails at once; an empty answer may
/// still fill (a rate needs a second sample of a new series) until `within` has passed.
///
/// # Panics
/// On an error answer, an unknown variable, or a query still empty after `within`.
pub async fn every_query_has_series(
    addr: &str,
    queries: &[Query],
    vars: &BTreeMap<&str, String>,
    may_be_empty: impl Fn(&str) -> bool,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let mut empty: Vec<&Query> = Vec::new();
        for query in queries {
            let promql = substitute(&query.expr, vars)
                .unwrap_or_else(|e| panic!("panel {:?}: {e}", query.origin));
            match instant_query(addr, &promql, Duration::from_secs(10)).await {
                Answer::Error(e) => panic!("panel {:?}: {promql}\n  failed: {e}", query.origin),
                Answer::Series(0) if !may_be_empty(&query.expr) => empty.push(query),
                Answer::Series(_) => {}
            }
        }
        if empty.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no series after {within:?} for (a metric renamed?):\n{}",
            empty
                .iter()
                .map(|q| format!("  {}: {}", q.origin, q.expr))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A Prometheus of a test's own (the binary `infrastructure/local/cluster.sh tool prometheus`
/// builds), scraping `targets` every second, its TSDB in a temporary directory; stopped when
/// dropped.
pub struct Prometheus {
    child: std::process::Child,
    /// `127.0.0.1:PORT` of its HTTP API.
    pub addr: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `bin` and waits (60 s at most) until it has scraped every target once.
    ///
    /// # Panics
    /// When it cannot start, exits, or has not scraped every target within 60 s.
    pub async fn start(bin: &str, targets: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("a directory for Prometheus");
        // A port the system just gave out and took back: free unless taken in between.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = dir.path().join("prometheus.yml");
        let wanted = targets.len();
        let targets = serde_json::to_string(targets).expect("targets");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs:\n  - job_name: crucible\n    static_configs: [{{targets: {targets}}}]\n"
            ),
        )
        .expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = std::process::Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Prometheus {bin}: {e}"));
        let mut prometheus = Prometheus {
            child,
            addr: format!("127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("Prometheus exited ({status}): {}", prometheus.log_tail());
            }
            if instant_query(&prometheus.addr, "up == 1", Duration::from_secs(5)).await
                == Answer::Series(wanted)
            {
                return prometheus;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus has not scraped every target after 60 s: {}",
                prometheus.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(20).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn panel_targets_nested_rows_and_query_variables_are_all_read() {
        let dashboard = json!({
            "panels": [
                {"title": "A", "targets": [{"expr": "up"}, {"expr": ""}]},
                {"title": "row", "panels": [{"title": "B", "targets": [{"expr": "sum(x)"}]}]}
            ],
            "templating": {"list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {"name": "ns", "type": "query", "query": {"query": "label_values(m{a=\"$x\"}, namespace)"}},
                {"name": "r", "type": "custom", "query": "a,b"}
            ]}
        });
        let got = queries(&dashboard).expect("queries");
        let exprs: Vec<(&str, &str)> = got
            .iter()
            .map(|q| (q.origin.as_str(), q.expr.as_str()))
            .collect();
        assert_eq!(
            exprs,
            [
                ("A", "up"),
                ("B", "sum(x)"),
                ("variable ns", "count by (namespace) (m{a=\"$x\"})")
            ]
        );
    }

    #[test]
    fn a_dashboard_without_expressions_or_with_an_unknown_variable_query_is_refused() {
        assert!(queries(&json!({"panels": []})).is_err());
        let odd = json!({"templating": {"list": [{"name": "v", "type": "query", "query": "query_result(up)"}]}});
        assert!(queries(&odd).unwrap_err().contains("variable v"));
    }

    #[test]
    fn variables_are_filled_in_longest_first_and_leftovers_are_errors() {
        let vars = BTreeMap::from([
            ("ns", "team-a".to_string()),
            ("nsx", "other".to_string()),
            ("__rate_interval", "1m".to_string()),
        ]);
        assert_eq!(
            substitute(
                "rate(m{n=~\"$ns\",o=\"${nsx}\"}[$__rate_interval]) + $nsx",
                &vars
            )
            .as_deref(),
            Ok("rate(m{n=~\"team-a\",o=\"other\"}[1m]) + other")
        );
        assert!(
            substitute("m{a=\"$suite\"}", &vars)
                .unwrap_err()
                .contains("$suite")
        );
    }

    #[test]
    fn model_usage_expressions_are_told_from_the_others() {
        assert!(reads_model_usage(
            "sum by (namespace) (rate(crucible_gateway_calls_total{namespace=~\"$namespace\"}[$__rate_interval]))"
        ));
        assert!(reads_model_usage(
            "sum(increase(crucible_gateway_refusals_total{reason=\"budget_exceeded\"}[1h])) + sum(crucible_budget_exceeded_total)"
        ));
        assert!(!reads_model_usage(
            "sum(crucible_budget_exceeded_total) / sum(crucible_evaluations)"
        ));
        assert!(!reads_model_usage("vector(1)"));
        assert_eq!(
            families("rate(crucible_a_total{reason=\"budget_exceeded\"}[1m]) / crucible_b"),
            ["crucible_a_total", "crucible_b"]
        );
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            percent_encode("sum(m{a=~\"x|y\"}) / 2"),
            "sum%28m%7Ba%3D~%22x%7Cy%22%7D%29%20%2F%202"
        );
    }

    #[test]
    fn answers_count_series_and_report_errors() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]},{"metric":{},"value":[1,"2"]}]}}"#;
        assert_eq!(parse_answer(vector), Answer::Series(2));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_answer(empty), Answer::Series(0));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"0"]}}"#;
        assert_eq!(parse_answer(scalar), Answer::Series(1));
        let error =
            r#"{"status":"error","errorType":"bad_data","error":"parse error: unexpected"}"#;
        assert_eq!(
            parse_answer(error),
            Answer::Error("bad_data: parse error: unexpected".into())
        );
        assert!(matches!(parse_answer("<html>"), Answer::Error(_)));
    }
}
