//! Where the controller finds the model gateway: its Service in the system namespace (the
//! cluster IP sandboxes call, since they have no DNS; the selector and target port their
//! NetworkPolicy allows) and the tokens' signing key, read once at the controller's start.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Api, Client};

use crate::config::{GatewayFlags, GatewaySettings, TokenKey};

/// Longest the Service's lookup may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The gateway's settings from `flags`: its Service (`NAMESPACE/NAME`, or `NAME` in
/// `system_namespace`) and the signing key.
///
/// # Errors
/// A sentence for the operator's log naming the Service or the file (never the key).
pub async fn resolve(
    client: &Client,
    system_namespace: &str,
    flags: &GatewayFlags,
) -> Result<GatewaySettings, String> {
    let key = super::key_bytes(&flags.token_key_file)?;
    let (namespace, name) = flags
        .service
        .split_once('/')
        .unwrap_or((system_namespace, &flags.service));
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service = tokio::time::timeout(CALL_TIMEOUT, api.get_opt(name))
        .await
        .map_err(|_| format!("reading Service {namespace}/{name} timed out"))?
        .map_err(|e| format!("cannot read Service {namespace}/{name}: {e}"))?
        .ok_or_else(|| {
            format!(
                "the model gateway's Service {namespace}/{name} does not exist (--gateway-service)"
            )
        })?;
    settings(&service, namespace, TokenKey(key.into()))
        .map_err(|why| format!("Service {namespace}/{name}: {why}"))
}

/// The settings `service` gives: its cluster IP and first port for sandboxes, its selector and
/// numeric target port for their NetworkPolicy. Pure.
pub fn settings(
    service: &Service,
    namespace: &str,
    token_key: TokenKey,
) -> Result<GatewaySettings, String> {
    let spec = service.spec.as_ref().ok_or("it has no spec")?;
    let ip = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .ok_or("it has no cluster IP (a headless Service cannot be reached without DNS)")?;
    let ip: std::net::IpAddr = ip
        .parse()
        .map_err(|_| format!("its cluster IP {ip:?} is not an address"))?;
    let pod_labels = spec.selector.clone().unwrap_or_default();
    if pod_labels.is_empty() {
        // An empty selector would let sandboxes reach every pod of the namespace.
        return Err(
            "it has no selector; the sandboxes' NetworkPolicy needs the gateway's pod labels"
                .into(),
        );
    }
    let port = spec
        .ports
        .as_ref()
        .and_then(|ports| ports.first())
        .ok_or("it has no port")?;
    let pod_port = match &port.target_port {
        None => port.port,
        Some(IntOrString::Int(p)) => *p,
        Some(IntOrString::String(name)) => {
            return Err(format!(
                "its targetPort {name:?} is a name; give the port's number (a sandbox's \
                 NetworkPolicy names the gateway pods' port)"
            ));
        }
    };
    let host = match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    Ok(GatewaySettings {
        base_url: format!("http://{host}:{}", port.port),
        namespace: namespace.to_string(),
        pod_labels,
        port: pod_port,
        token_key,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};

    use super::*;

    fn key() -> TokenKey {
        TokenKey(vec![1; 32].into())
    }

    fn service(ip: &str, selector: &[(&str, &str)], target: Option<IntOrString>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                selector: Some(
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ports: Some(vec![ServicePort {
                    port: 80,
                    target_port: target,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_cluster_ip_is_called_and_the_pods_port_allowed() {
        let s = settings(
            &service(
                "10.96.0.40",
                &[("app", "gateway")],
                Some(IntOrString::Int(8080)),
            ),
            "crucible-system",
            key(),
        )
        .expect("settings");
        assert_eq!(s.base_url, "http://10.96.0.40:80");
        assert_eq!(s.port, 8080);
        assert_eq!(s.namespace, "crucible-system");
        assert_eq!(
            s.pod_labels,
            BTreeMap::from([("app".to_string(), "gateway".to_string())])
        );
        let v6 = settings(&service("fd00::1", &[("app", "g")], None), "ns", key()).expect("v6");
        assert_eq!((v6.base_url.as_str(), v6.port), ("http://[fd00::1]:80", 80));
    }

    #[test]
    fn a_service_sandboxes_could_not_be_confined_to_is_refused() {
        for (svc, says) in [
            (service("None", &[("app", "g")], None), "cluster IP"),
            (service("10.0.0.1", &[], None), "selector"),
            (
                service(
                    "10.0.0.1",
                    &[("app", "g")],
                    Some(IntOrString::String("calls".into())),
                ),
                "targetPort",
            ),
        ] {
            let err = settings(&svc, "ns", key()).expect_err("refused");
            assert!(err.contains(says), "{err}");
        }
    }
}
