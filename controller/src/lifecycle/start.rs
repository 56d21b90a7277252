//! Starting an attempt of a run: the sandbox checked (fail closed when it is missing), the git
//! source pinned, a run with models connected to the gateway (its token minted, its endpoints
//! checked), and the children built in the order they are created — the run's NetworkPolicy,
//! its workspace ConfigMap, then its pod. Pure.

use crate::crd::evaluation::{
    EvaluationStatus, NetworkMode, Phase, Provenance, SandboxStatus, Source,
};
use crate::requeue::Requeue;
use crate::run::identity::{child_name, pod_name};
use crate::run::phase::Outcome;
use crate::run::pod::{Attempt, desired_network_policy, desired_pod};
use crate::run::validate;
use k8s_openapi::api::core::v1::EnvVar;

use crate::crd::bounds::shown;
use crate::gateway::grant::{self, RunGrant};
use crate::gateway::token::SigningKey;
use crate::run::models::{
    Gateway, RunModel, add_model_env, gateway_network_policy, model_env, models,
};
use crate::run::workspace::{desired_workspace, workspace_name};

use super::predicates::*;
use super::steps::Planner;
use super::*;

impl Planner<'_> {
    /// Creates the children of attempt `attempt`, or fails closed when the sandbox is missing.
    pub(super) fn start_attempt(&mut self, attempt: i32) {
        let class = validate::runtime_class(&self.ev.spec, self.config).to_string();
        // Unsandboxed runs say so in status and in their Admitted Event (no Event of its own).
        let sandboxed = match self.obs.runtime_class {
            Some(RuntimeClassCheck::Present) => true,
            Some(RuntimeClassCheck::Missing) if self.config.allow_unsandboxed => false,
            _ => {
                return self.finish(Outcome::new(
                    Phase::Failed,
                    "SandboxUnavailable",
                    format!("RuntimeClass {class} does not exist; no pod was created (install gVisor and the RuntimeClass)"),
                ));
            }
        };
        let attempt_id = self
            .key
            .attempt_id(&self.owner.uid, self.status.run_generation, attempt);
        let pod_name = pod_name(&self.owner.name, &attempt_id);
        let policy_name = child_name(&self.owner.name, POLICY_SUFFIX);
        let fetched = match &self.obs.source {
            Some(Ok(source)) => Some(source),
            _ => None,
        };
        if matches!(self.ev.spec.source, Some(Source::Git(_))) && fetched.is_none() {
            if let Some(Err(problem)) = &self.obs.source
                && problem.transient
            {
                // A retry waits for its source: the fetch's end (or the retry delay) brings
                // the run back.
                self.status.message = Some(format!(
                    "attempt {attempt} waits for its source: {}: {}",
                    problem.reason, problem.message
                ));
                self.requeue = if problem.is_pending() {
                    Requeue::AwaitChange
                } else {
                    Requeue::After(SOURCE_RETRY)
                };
                return;
            }
            let message = "the git source was not read before starting the pod".to_string();
            return self.finish(Outcome::new(Phase::Failed, "SourceUnavailable", message));
        }
        if let Some(source) = fetched {
            let provenance = self
                .status
                .provenance
                .get_or_insert_with(Provenance::default);
            provenance.repo = Some(source.repo.clone());
            provenance.commit = Some(source.commit.clone());
        }
        let workspace = desired_workspace(&self.ev.spec, &self.owner, fetched.map(|f| &f.files));
        let digest = workspace.as_ref().map(|w| w.digest.clone());
        if let Some((name, previous)) = self.own_workspace(self.ev.status.as_ref())
            && digest.as_ref() != Some(&previous)
        {
            // The previous run had other files: its ConfigMap is of no use now.
            self.plan_delete.push((ChildKind::ConfigMap, name));
        }
        self.status
            .provenance
            .get_or_insert_with(Provenance::default)
            .source_digest = digest;
        let timeout_seconds = i64::try_from(timeout(self.ev, self.config).as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        let run_id = self.status.run_id.as_deref().unwrap_or_default();
        let models = match self.connect_models(run_id, timeout_seconds) {
            Ok(models) => models,
            Err(why) => {
                return self.finish(Outcome::new(Phase::Failed, "ModelEndpointUnavailable", why));
            }
        };
        let mut pod = desired_pod(
            &self.ev.spec,
            &self.owner,
            &Attempt {
                pod_name: &pod_name,
                attempt_id: &attempt_id,
                run_id: self.status.run_id.as_deref().unwrap_or_default(),
                runtime_class: sandboxed.then_some(class.as_str()),
                timeout_seconds,
                workspace: workspace.as_ref(),
            },
            self.config,
        );
        self.plan_create
            .push(match validate::network_mode(&self.ev.spec) {
                NetworkMode::None => Child::SandboxPolicy,
                NetworkMode::Allowlist => Child::NetworkPolicy(Box::new(desired_network_policy(
                    &self.ev.spec,
                    &self.owner,
                    &policy_name,
                    run_id,
                    &self.config.forbidden_egress,
                ))),
            });
        if let (Some(vars), Some(gateway)) = (models, &self.config.gateway) {
            add_model_env(&mut pod, &vars);
            // Beside the namespace's deny-all (policies add up): the gateway and nothing else.
            self.plan_create
                .push(Child::NetworkPolicy(Box::new(gateway_network_policy(
                    &self.owner,
                    &policy_name,
                    run_id,
                    &Gateway::from(gateway),
                ))));
        }
        if let Some(workspace) = workspace {
            self.plan_create
                .push(Child::ConfigMap(Box::new(workspace.config_map)));
        }
        self.plan_create.push(Child::Pod(Box::new(pod)));
        self.status.phase = Some(Phase::Pending);
        // The queue's reason is over once admitted.
        self.status.reason = None;
        self.status.attempts = Some(attempt);
        self.status.pod_name = Some(pod_name);
        self.status.start_time = Some(self.obs.now.clone());
        self.status.queue = None;
        self.status.sandbox = Some(SandboxStatus {
            runtime_class_name: sandboxed.then_some(class),
            sandboxed,
        });
        self.requeue = Requeue::After(timeout(self.ev, self.config).min(MAX_RESYNC));
    }

    /// For a run with models: the sandbox's variables (the gateway's URLs and the run's token,
    /// valid until the run's deadline). `None` without models; why not when a model's endpoint
    /// cannot serve it.
    fn connect_models(
        &self,
        run_id: &str,
        timeout_seconds: i64,
    ) -> Result<Option<Vec<EnvVar>>, String> {
        let listed = models(&self.ev.spec);
        if listed.is_empty() {
            return Ok(None);
        }
        // Validation refuses models without a gateway; this is the same refusal, kept closed.
        let gateway = self
            .config
            .gateway
            .as_ref()
            .ok_or("this controller is not connected to a model gateway")?;
        let mut run_models = Vec::with_capacity(listed.len());
        for m in listed {
            let Some(Some(endpoint)) = self.obs.model_endpoints.get(&m.endpoint) else {
                return Err(format!(
                    "spec.models {}: ModelEndpoint {} does not exist in this namespace",
                    shown(&m.name),
                    shown(&m.endpoint)
                ));
            };
            // The namespace's endpoint must list the model: the gateway serves every namespace,
            // so this keeps a namespace to the models its platform team gave it.
            if !endpoint.spec.models.contains(&m.model) {
                return Err(format!(
                    "spec.models {}: ModelEndpoint {} does not list model {}",
                    shown(&m.name),
                    shown(&m.endpoint),
                    shown(&m.model)
                ));
            }
            run_models.push(RunModel {
                model: m,
                api: endpoint.spec.api,
            });
        }
        let key = SigningKey::new(&gateway.token_key.0)
            .ok_or("the controller's token key is too short")?;
        // Valid while the controller may still let the pod run (its deadline and grace).
        let expires = self
            .obs
            .now
            .0
            .as_second()
            .saturating_add(timeout_seconds)
            .saturating_add(i64::try_from(DEADLINE_GRACE.as_secs()).unwrap_or(0));
        let token = grant::mint(
            &key,
            &self.ev.spec,
            &RunGrant {
                namespace: &self.owner.namespace,
                evaluation: &self.owner.name,
                run_id,
                expires,
                daily_budget: self.obs.daily_budget,
            },
        );
        Ok(Some(model_env(
            &run_models,
            &Gateway::from(gateway),
            &self.owner.namespace,
            &token,
        )))
    }

    /// The workspace ConfigMap the run of `status` used, when this Evaluation owns it (not a
    /// suite): its name and digest. Decided from that run's status, not the current spec: a
    /// run from git has a commit, and a suite shares only inline files.
    pub(super) fn own_workspace(
        &self,
        status: Option<&EvaluationStatus>,
    ) -> Option<(String, String)> {
        let provenance = status?.provenance.as_ref()?;
        let digest = provenance.source_digest.clone()?;
        let inline = provenance.commit.is_none();
        if inline && self.owner.suite_reference.is_some() {
            return None;
        }
        let name = workspace_name(&self.owner.name, &self.owner.uid, &digest);
        Some((name, digest))
    }
}
