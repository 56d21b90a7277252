//! What `observe` read from the cluster for one Evaluation: the input of `plan`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::ModelEndpoint;
use crate::error::Result;
use crate::gateway::budget::DailyBudget;
use crate::gateway::notice::UsageAnswer;
use crate::run::fetched::{FetchedSource, SourceProblem};
use crate::run::results::LogCapture;

/// Whether the sandbox's RuntimeClass exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeClassCheck {
    /// The class exists.
    Present,
    /// The class does not exist.
    Missing,
}

/// What `observe` read from the cluster for one Evaluation.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Time of observation.
    pub now: Time,
    /// Pods labelled with the Evaluation's uid.
    pub pods: Vec<Pod>,
    /// The RuntimeClass lookup; `None` when the run is finished and it was not needed.
    pub runtime_class: Option<RuntimeClassCheck>,
    /// Log captures of the current pod's containers, by container name.
    pub logs: BTreeMap<String, LogCapture>,
    /// Why an emergency stop covers the namespace, if one does.
    pub stop: Option<String>,
    /// For a git source: the files at the run's commit, or why they could not be had. Read
    /// when a run starts (and while it has not finished, pinned to its commit).
    pub source: Option<Result<FetchedSource, SourceProblem>>,
    /// For a finished run with `follow: true`: the commit the followed ref points to now.
    pub head: Option<String>,
    /// The ModelEndpoints `spec.models` names, by name (`None`: it does not exist in the
    /// namespace), with their status (whether they are Ready). Read only when an attempt of a
    /// run with models may start.
    pub model_endpoints: BTreeMap<String, Option<ModelEndpoint>>,
    /// The namespace's daily model budget (its EvaluationQuotas'), carried in the token of a
    /// run with models that starts now. Read with the endpoints.
    pub daily_budget: DailyBudget,
    /// For a pod whose steps succeeded: its samples ([`samples_needed`](super::samples_needed)).
    pub samples: Option<super::samples::Samples>,
    /// For a run with models that has started: what the gateway said it used, or why it could
    /// not be asked ([`usage_needed`](super::usage_needed)); final once asked after its pod
    /// was seen ended ([`pod_ended`](super::pod_ended)).
    pub usage: Option<UsageAnswer>,
}
