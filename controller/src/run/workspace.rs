//! The workspace ConfigMap of a run: its source files, content-addressed and immutable, created
//! once and reused by every run (and every suite case) with the same files.
//!
//! # Ownership
//! - Inline files of a suite's child Evaluation: the ConfigMap is owned by the **suite** and
//!   shared by all of its children with identical files (the common case: the files come from
//!   the template), so a suite of N cases writes it once instead of N times. It goes when the
//!   suite is deleted (garbage collection), and the suite removes the ones its spec no longer
//!   produces when its spec changes ([`shared_inline_name`] names them). A child's TTL leaves
//!   it alone: siblings may still need it.
//! - Everything else (standalone Evaluations; git sources, whose files are only known once a
//!   run fetched them): owned by the **Evaluation**, as every other child. A new run with other
//!   files deletes the previous run's ConfigMap; the TTL deletes the current one.
//!
//! Sharing across owners would save nothing: a second owner reference is a write too, and a
//! ConfigMap owned by one Evaluation vanishes with it under the pods of another.
//!
//! # Name and verification
//! The name is `<owner>-src-<16 hex>`, the hex from the owner's uid and the content digest: two
//! owners never share a name, and a name says which content it must hold. The ConfigMap is
//! `immutable` and only ever created; one that exists is used only after checking that it is
//! owned by the expected owner, immutable, not being deleted, and that its content has the
//! digest its name was made from. Anything else (someone edited or replaced it) is deleted and
//! created again before the pod is.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath};
use kube::ResourceExt;

use crate::crd::evaluation::{EvaluationSpec, Source};
use crate::digest::{framed_sha256_hex, sha256_hex};
use crate::labels::{
    EVALUATION_ANNOTATION, EVALUATION_UID_LABEL, SOURCE_DIGEST_ANNOTATION, SOURCE_DIGEST_LABEL,
};
use crate::run::identity::short_prefix;
use crate::run::owner::Owner;

/// Longest owner-name prefix: `<prefix>-src-<16 hex>` stays within 63 characters.
const NAME_PREFIX_MAX: usize = 42;

/// The source files of a run: the ConfigMap that holds them and where each key goes under
/// /workspace (ConfigMap keys cannot contain `/`).
#[derive(Clone, Debug, PartialEq)]
pub struct Workspace {
    /// The ConfigMap.
    pub config_map: ConfigMap,
    /// Key → relative path.
    pub items: Vec<KeyToPath>,
    /// [`content_digest`] of the ConfigMap (`sha256:…`), recorded as `provenance.sourceDigest`.
    pub digest: String,
    /// Whether a suite owns it and its children share it.
    pub shared: bool,
}

/// The workspace of a run: inline files as text, files fetched from git (`fetched`) as
/// binaryData. `None` when the spec has no source (or a git source was not fetched).
pub fn desired_workspace(
    spec: &EvaluationSpec,
    owner: &Owner,
    fetched: Option<&BTreeMap<String, Vec<u8>>>,
) -> Option<Workspace> {
    let mut config_map = ConfigMap {
        immutable: Some(true),
        ..Default::default()
    };
    let (paths, shared): (Vec<String>, bool) = match (&spec.source, fetched) {
        (Some(Source::Inline(inline)), _) => {
            config_map.data = Some(inline_data(&inline.files));
            (
                inline.files.keys().cloned().collect(),
                owner.suite_reference.is_some(),
            )
        }
        (Some(Source::Git(_)), Some(files)) => {
            config_map.binary_data = Some(
                files
                    .iter()
                    .map(|(path, bytes)| (workspace_key(path), ByteString(bytes.clone())))
                    .collect(),
            );
            (files.keys().cloned().collect(), false)
        }
        _ => return None,
    };
    let digest = content_digest(&config_map);
    let suite = owner.suite_reference.as_ref().filter(|_| shared);
    let (owner_name, owner_uid) = match suite {
        Some(reference) => (reference.name.as_str(), reference.uid.as_str()),
        None => (owner.name.as_str(), owner.uid.as_str()),
    };
    let name = workspace_name(owner_name, owner_uid, &digest);
    let label = [(SOURCE_DIGEST_LABEL, digest_label(&digest))];
    let mut meta = owner.meta(&name, &label);
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SOURCE_DIGEST_ANNOTATION.to_string(), digest.clone());
    if let Some(reference) = suite {
        // Not one Evaluation's: no Evaluation uid or name on it, the suite as its owner.
        if let Some(labels) = meta.labels.as_mut() {
            labels.remove(EVALUATION_UID_LABEL);
        }
        if let Some(annotations) = meta.annotations.as_mut() {
            annotations.remove(EVALUATION_ANNOTATION);
        }
        meta.owner_references = Some(vec![reference.clone()]);
    }
    config_map.metadata = meta;
    let items = paths
        .into_iter()
        .map(|path| KeyToPath {
            key: workspace_key(&path),
            path,
            mode: None,
        })
        .collect();
    Some(Workspace {
        config_map,
        items,
        digest,
        shared,
    })
}

/// Name of the ConfigMap a suite (`suite`, `uid`) shares for inline `files`: what
/// [`desired_workspace`] names it for each of the suite's children with those files.
pub fn shared_inline_name(suite: &str, uid: &str, files: &BTreeMap<String, String>) -> String {
    let config_map = ConfigMap {
        data: Some(inline_data(files)),
        ..Default::default()
    };
    workspace_name(suite, uid, &content_digest(&config_map))
}

/// Name of the workspace ConfigMap that owner `owner` (uid `uid`) has for content `digest`.
pub fn workspace_name(owner: &str, uid: &str, digest: &str) -> String {
    let hash = framed_sha256_hex([uid.as_bytes(), digest.as_bytes()]);
    format!(
        "{}-src-{}",
        short_prefix(owner, NAME_PREFIX_MAX),
        &hash[..16]
    )
}

/// The label value of a digest: its first 32 hex digits (label values have at most 63).
fn digest_label(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(32)]
}

fn inline_data(files: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(path, content)| (workspace_key(path), content.clone()))
        .collect()
}

/// sha256 of what a ConfigMap holds: every `data` and `binaryData` entry, keys included, in key
/// order, text and binary kept apart.
pub fn content_digest(config_map: &ConfigMap) -> String {
    let text = config_map.data.iter().flatten();
    let binary = config_map.binary_data.iter().flatten();
    let fields = text
        .flat_map(|(k, v)| [b"text".as_slice(), k.as_bytes(), v.as_bytes()])
        .chain(binary.flat_map(|(k, v)| [b"binary".as_slice(), k.as_bytes(), v.0.as_slice()]));
    format!("sha256:{}", framed_sha256_hex(fields))
}

/// ConfigMap key of a file path: the path itself when it is a valid key, else the path with
/// every other character replaced and a hash, so that `a/b.py` and `a_b.py` cannot collide.
fn workspace_key(path: &str) -> String {
    let valid = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
    if path.len() <= 200 && path.chars().all(valid) && path != "." && path != ".." {
        return path.to_string();
    }
    let flat: String = path
        .chars()
        .take(200)
        .map(|c| if valid(c) { c } else { '_' })
        .collect();
    format!("{flat}-{}", &sha256_hex(path.as_bytes())[..8])
}

/// What to do with a ConfigMap that already has the workspace's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Existing {
    /// It is the workspace: use it.
    Reuse,
    /// It is not (edited, replaced, foreign): delete it and create the workspace.
    Replace(String),
    /// It is being deleted: try again shortly.
    Wait(String),
}

/// Whether `existing` may serve as the workspace `desired`.
pub fn check_existing(existing: &ConfigMap, desired: &ConfigMap) -> Existing {
    if existing.metadata.deletion_timestamp.is_some() {
        return Existing::Wait("it is being deleted".into());
    }
    let owner = desired.owner_references().first().map(|r| r.uid.as_str());
    if !existing
        .owner_references()
        .iter()
        .any(|r| Some(r.uid.as_str()) == owner)
    {
        return Existing::Replace("it is not owned by the workspace's owner".into());
    }
    if existing.immutable != Some(true) {
        return Existing::Replace("it is not immutable".into());
    }
    if content_digest(existing) != content_digest(desired) {
        return Existing::Replace(
            "its content does not have the digest its name was made from (edited?)".into(),
        );
    }
    Existing::Reuse
}

#[cfg(test)]
#[path = "workspace_tests.rs"]
pub(crate) mod tests;
