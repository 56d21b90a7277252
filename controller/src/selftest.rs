//! `crucible selftest`: applies a tiny Evaluation, waits until it has finished, deletes it,
//! and says whether it passed. The Helm chart's `helm test` hook runs it. Talks to the API
//! server.

use std::time::{Duration, Instant};

use kube::Client;
use kube::api::Api;

use crate::crd::{Evaluation, EvaluationSpec};
use crate::ssa;

/// Interval between two looks at the Evaluation.
const POLL: Duration = Duration::from_millis(500);

/// Runs the self-test in `namespace` with `image`.
///
/// # Errors
/// A sentence saying what failed: the API, the deadline, or the evaluation's outcome.
pub async fn run(
    client: Client,
    namespace: &str,
    image: &str,
    timeout: Duration,
) -> Result<String, String> {
    let api: Api<Evaluation> = Api::namespaced(client, namespace);
    let name = format!("crucible-selftest-{}", std::process::id());
    let mut ev = Evaluation::new(
        &name,
        EvaluationSpec {
            image: image.to_string(),
            command: Some(vec![
                "python3".into(),
                "-c".into(),
                r#"print('CRUCIBLE_RESULT {"score": 1, "summary": "selftest"}')"#.into(),
            ]),
            timeout: Some("1m".into()),
            ..Default::default()
        },
    );
    ev.metadata.labels = Some(
        [(
            "app.kubernetes.io/component".to_string(),
            "selftest".to_string(),
        )]
        .into(),
    );
    ssa::apply(&api, ssa::SELFTEST_MANAGER, &ev)
        .await
        .map_err(|e| format!("cannot create Evaluation {namespace}/{name}: {e}"))?;
    let outcome = wait(&api, &name, timeout).await;
    if let Err(error) = ssa::delete(&api, &name).await {
        tracing::warn!(%error, "cannot delete the self-test Evaluation {name}");
    }
    outcome
}

async fn wait(api: &Api<Evaluation>, name: &str, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let ev = api
            .get(name)
            .await
            .map_err(|e| format!("cannot read Evaluation {name}: {e}"))?;
        let status = ev.status.unwrap_or_default();
        if let Some(phase) = status.phase.filter(|p| p.is_finished()) {
            let passed = status.passed();
            let sandbox = status
                .sandbox
                .and_then(|s| s.runtime_class_name)
                .unwrap_or_else(|| "none".into());
            let line = format!(
                "Evaluation {name}: {} (reason {}, runtime class {sandbox})",
                phase.as_str(),
                status.reason.as_deref().unwrap_or("-"),
            );
            return if passed {
                Ok(line)
            } else {
                Err(format!("{line}: {}", status.message.unwrap_or_default()))
            };
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "Evaluation {name} did not finish within {timeout:?} (phase {:?})",
                status.phase
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}
