//! The visible record of the canary: the ConfigMap `crucible-sandbox` in the system namespace,
//! one key per RuntimeClass holding its `SandboxVerified` condition as JSON. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference};

use super::Verdict;
use super::probe::COMPONENT;

/// Name of the ConfigMap.
pub const CONFIGMAP: &str = "crucible-sandbox";

/// The ConfigMap for `entries` (class, verdict, condition) in `namespace`, owned by `owner`
/// (the controller's pod) if given.
pub fn config_map(
    namespace: &str,
    owner: Option<&OwnerReference>,
    entries: &[(String, Verdict, Condition)],
) -> ConfigMap {
    let data: BTreeMap<String, String> = entries
        .iter()
        .map(|(class, _, condition)| {
            // A Condition holds only strings and a timestamp: it always serializes.
            let json = serde_json::to_string(condition).unwrap_or_else(|e| {
                format!("{{\"status\":\"Unknown\",\"message\":\"unrepresentable: {e}\"}}")
            });
            (class.clone(), json)
        })
        .collect();
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".into(), "crucible".into()),
                ("app.kubernetes.io/component".into(), COMPONENT.into()),
                ("app.kubernetes.io/part-of".into(), "crucible".into()),
            ])),
            owner_references: owner.map(|o| vec![o.clone()]),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::canary::{Check, SandboxVerdicts};

    #[test]
    fn every_class_has_its_condition_under_its_name() {
        let now = Time(jiff::Timestamp::from_second(1_700_000_000).expect("timestamp"));
        let s = SandboxVerdicts::new(
            [
                ("gvisor".to_string(), Verdict::Pending("first run".into())),
                (
                    "gvisor-net".to_string(),
                    Verdict::Pending("first run".into()),
                ),
            ],
            false,
            || {},
            &now,
        );
        s.record(
            "gvisor",
            Verdict::Failed {
                check: Check::Egress,
                message: "connected to the controller's listener 10.88.0.1:1".into(),
            },
            &now,
        );
        let cm = config_map("crucible-system", None, &s.entries());
        assert_eq!(cm.metadata.name.as_deref(), Some("crucible-sandbox"));
        let data = cm.data.expect("data");
        let gvisor: serde_json::Value = serde_json::from_str(&data["gvisor"]).expect("json");
        assert_eq!(
            gvisor,
            serde_json::json!({
                "type": "SandboxVerified",
                "status": "False",
                "reason": "Egress",
                "message": "egress: connected to the controller's listener 10.88.0.1:1",
                "lastTransitionTime": "2023-11-14T22:13:20Z",
            })
        );
        let net: serde_json::Value = serde_json::from_str(&data["gvisor-net"]).expect("json");
        assert_eq!(
            (net["status"].as_str(), net["reason"].as_str()),
            (Some("Unknown"), Some("Pending"))
        );
    }
}
