//! The Evaluation a child object belongs to: the labels, annotation and controller reference
//! every child carries. Pure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::Evaluation;
use crate::error::{Error, Result};
use crate::labels::{
    EVALUATION_ANNOTATION, EVALUATION_UID_LABEL, MANAGED_LABEL, RUN_ID_LABEL, SUITE_LABEL,
};

/// Identity of the Evaluation a child belongs to.
#[derive(Clone, Debug)]
pub struct Owner {
    /// Evaluation name.
    pub name: String,
    /// Evaluation namespace.
    pub namespace: String,
    /// Evaluation uid.
    pub uid: String,
    /// Controller owner reference to the Evaluation.
    pub reference: OwnerReference,
    /// The suite the Evaluation belongs to, copied onto its children as a label.
    pub suite: Option<String>,
    /// For a suite's child: the owner reference to that suite (which owns shared workspaces).
    pub suite_reference: Option<OwnerReference>,
}

impl Owner {
    /// Metadata of a child named `name`: the controller's labels and `extra_labels`, owned by
    /// the Evaluation.
    pub(crate) fn meta(&self, name: &str, extra_labels: &[(&str, &str)]) -> ObjectMeta {
        let mut labels = BTreeMap::from([
            (
                "app.kubernetes.io/name".to_string(),
                "crucible-evaluation".to_string(),
            ),
            (
                "app.kubernetes.io/managed-by".to_string(),
                "crucible".to_string(),
            ),
            (
                "app.kubernetes.io/part-of".to_string(),
                "crucible".to_string(),
            ),
            (MANAGED_LABEL.to_string(), "true".to_string()),
            (EVALUATION_UID_LABEL.to_string(), self.uid.clone()),
        ]);
        labels.extend(
            extra_labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        if let Some(suite) = &self.suite {
            labels.insert(SUITE_LABEL.to_string(), suite.clone());
        }
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                EVALUATION_ANNOTATION.to_string(),
                self.name.clone(),
            )])),
            owner_references: Some(vec![self.reference.clone()]),
            ..Default::default()
        }
    }

    /// Selects the pods of run `run_id` of this Evaluation.
    pub(crate) fn run_selector(&self, run_id: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([
                (EVALUATION_UID_LABEL.to_string(), self.uid.clone()),
                (RUN_ID_LABEL.to_string(), run_id.to_string()),
            ])),
            ..Default::default()
        }
    }
}

/// The owner identity of `ev`'s children.
///
/// # Errors
/// [`Error::MissingObjectKey`] when the object has no namespace or uid (never for objects read
/// from the API server).
pub fn owner(ev: &Evaluation) -> Result<Owner> {
    Ok(Owner {
        name: ev.name_any(),
        namespace: ev
            .namespace()
            .ok_or(Error::MissingObjectKey("metadata.namespace"))?,
        uid: ev.uid().ok_or(Error::MissingObjectKey("metadata.uid"))?,
        reference: ev
            .controller_owner_ref(&())
            .ok_or(Error::MissingObjectKey("metadata.uid"))?,
        suite: ev.labels().get(SUITE_LABEL).cloned(),
        suite_reference: suite_reference(ev),
    })
}

/// The controller reference of `ev` to the suite its `crucible.dev/suite` label names, if the
/// suite made it.
fn suite_reference(ev: &Evaluation) -> Option<OwnerReference> {
    let suite = ev.labels().get(SUITE_LABEL)?;
    let kind = crate::crd::EvaluationSuite::kind(&());
    let api_version = crate::crd::EvaluationSuite::api_version(&());
    ev.owner_references()
        .iter()
        .find(|r| {
            r.controller == Some(true)
                && r.kind == kind
                && r.api_version == api_version
                && &r.name == suite
        })
        .cloned()
}
