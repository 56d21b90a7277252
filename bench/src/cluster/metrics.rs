//! API writes from the API server's `apiserver_request_total` (Prometheus text format), by
//! resource and verb, and their differences over a run.

use std::collections::BTreeMap;

/// Verbs of `apiserver_request_total` that change state (reads are GET, LIST and WATCH).
const WRITE_VERBS: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// Write requests by (resource, verb), any response code. A resource is named
/// `plural[.group][/subresource]`, e.g. `evaluations.crucible.dev/status`, `pods/binding`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Writes(pub BTreeMap<(String, String), f64>);

impl Writes {
    /// The write counters in a `/metrics` page.
    pub fn parse(text: &str) -> Writes {
        let mut writes = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = split_labels(rest) else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .iter()
                    .find(|(k, _)| k == name)
                    .map_or("", |(_, v)| v.as_str())
            };
            let (verb, resource) = (label("verb"), label("resource"));
            if resource.is_empty() || !WRITE_VERBS.contains(&verb) {
                continue;
            }
            let key = (
                resource_name(label("group"), resource, label("subresource")),
                verb.to_string(),
            );
            *writes.entry(key).or_insert(0.0) += value;
        }
        Writes(writes)
    }

    /// All writes.
    pub fn total(&self) -> f64 {
        self.0.values().sum()
    }

    /// What happened between `earlier` and `self` (counters only grow; a row that shrank
    /// means the API server restarted, and counts from zero).
    pub fn since(&self, earlier: &Writes) -> Writes {
        let rows = self.0.iter().filter_map(|(key, now)| {
            let before = earlier.0.get(key).copied().unwrap_or(0.0);
            let delta = if *now >= before { now - before } else { *now };
            (delta > 0.0).then(|| (key.clone(), delta))
        });
        Writes(rows.collect())
    }

    /// Takes away `count` writes of `verb` on `resource` (the benchmark's own requests).
    pub fn subtract(&mut self, resource: &str, verb: &str, count: f64) {
        let key = (resource.to_string(), verb.to_string());
        if let Some(value) = self.0.get_mut(&key) {
            *value -= count;
            if *value <= 0.0 {
                self.0.remove(&key);
            }
        }
    }
}

/// `plural[.group][/subresource]`.
pub fn resource_name(group: &str, resource: &str, subresource: &str) -> String {
    let mut name = resource.to_string();
    if !group.is_empty() {
        name.push('.');
        name.push_str(group);
    }
    if !subresource.is_empty() {
        name.push('/');
        name.push_str(subresource);
    }
    name
}

/// Who writes a resource in these runs, besides the controller under test: the scheduler binds
/// pods, the kubelet reports pod status and heartbeats its node, the kubelet asks the API server
/// to authorize the log reads it serves, the controller-manager renews its controllers' tokens,
/// Events come from everyone.
pub fn writer(resource: &str) -> &'static str {
    match resource {
        "pods/binding" => "scheduler",
        "pods/status" => "kubelet, scheduler",
        "nodes" | "nodes/status" | "leases.coordination.k8s.io" => "node heartbeat",
        "subjectaccessreviews.authorization.k8s.io" | "tokenreviews.authentication.k8s.io" => {
            "kubelet auth checks"
        }
        "serviceaccounts/token" => "token renewal",
        "events" | "events.events.k8s.io" => "everyone (see Events)",
        _ => "controller",
    }
}

/// Splits `k="v",...} value` into its labels and the rest; `None` if malformed. Label values
/// may hold escaped quotes, backslashes and newlines.
fn split_labels(text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        };
        labels.push((name.to_string(), value));
        rest = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP apiserver_request_total [ALPHA] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",contentType="application/json",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="POST",version="v1"} 10
apiserver_request_total{code="201",component="apiserver",contentType="application/vnd.kubernetes.protobuf",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="POST",version="v1"} 5
apiserver_request_total{code="200",component="apiserver",contentType="application/json",dry_run="",group="crucible.dev",resource="evaluations",scope="namespace",subresource="status",verb="PATCH",version="v1alpha1"} 7
apiserver_request_total{code="200",component="apiserver",contentType="text/plain;charset=\"utf-8\"",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 99
apiserver_request_total{code="0",component="",contentType="text/plain",dry_run="",group="",resource="",scope="",subresource="/readyz",verb="GET",version=""} 18
apiserver_request_total{code="409",component="apiserver",contentType="application/json",dry_run="",group="",resource="pods",scope="namespace",subresource="binding",verb="POST",version="v1"} 2
apiserver_request_count{resource="pods",verb="POST"} 1000
"#;

    fn writes(rows: &[(&str, &str, f64)]) -> Writes {
        Writes(
            rows.iter()
                .map(|(r, v, n)| ((r.to_string(), v.to_string()), *n))
                .collect(),
        )
    }

    #[test]
    fn parses_write_counters_summed_over_codes_and_content_types() {
        assert_eq!(
            Writes::parse(PAGE),
            writes(&[
                ("evaluations.crucible.dev/status", "PATCH", 7.0),
                ("pods", "POST", 15.0),
                ("pods/binding", "POST", 2.0),
            ])
        );
    }

    #[test]
    fn escaped_label_values_do_not_end_the_label() {
        let (labels, rest) = split_labels(r#"a="x\"y\\z",b="line\nnext"} 3"#).unwrap();
        assert_eq!(labels[0], ("a".into(), "x\"y\\z".into()));
        assert_eq!(labels[1], ("b".into(), "line\nnext".into()));
        assert_eq!(rest, " 3");
        assert!(split_labels(r#"a="unterminated"#).is_none());
    }

    #[test]
    fn deltas_drop_unchanged_rows_and_own_writes() {
        let before = writes(&[("pods", "POST", 10.0), ("leases", "PUT", 4.0)]);
        let after = writes(&[
            ("pods", "POST", 40.0),
            ("leases", "PUT", 4.0),
            ("jobs.batch", "POST", 30.0),
        ]);
        let mut delta = after.since(&before);
        assert_eq!(
            delta,
            writes(&[("jobs.batch", "POST", 30.0), ("pods", "POST", 30.0)])
        );
        delta.subtract("jobs.batch", "POST", 30.0);
        delta.subtract("configmaps", "POST", 1.0);
        assert_eq!(delta, writes(&[("pods", "POST", 30.0)]));
        assert_eq!(delta.total(), 30.0);
        // A restarted API server counts from zero again.
        assert_eq!(
            writes(&[("pods", "POST", 3.0)]).since(&before),
            writes(&[("pods", "POST", 3.0)])
        );
    }

    #[test]
    fn resources_are_named_with_group_and_subresource() {
        assert_eq!(resource_name("", "pods", "binding"), "pods/binding");
        assert_eq!(resource_name("batch", "jobs", ""), "jobs.batch");
        assert_eq!(writer("pods/binding"), "scheduler");
        assert_eq!(writer("networkpolicies.networking.k8s.io"), "controller");
        assert_eq!(writer("serviceaccounts/token"), "token renewal");
    }
}
