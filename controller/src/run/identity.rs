//! Names, labels and hashes that identify an Evaluation's runs and children. Pure.
//!
//! A run is identified by the spec that runs (its hash) and the `crucible.dev/rerun` annotation;
//! each attempt of a run of an Evaluation (by uid) gets its own deterministic pod name, so a controller that crashes
//! between creating a pod and writing status finds the same pod again instead of making a second.

use crate::crd::{Evaluation, EvaluationSpec};
use crate::digest::sha256_hex;
use crate::labels::RERUN_ANNOTATION;

/// Longest evaluation-name prefix in child names: `<prefix>-<10 hex>` stays within 63
/// characters, the limit for pod hostnames.
const NAME_PREFIX_MAX: usize = 52;

/// sha256 of the part of the spec that decides what runs.
///
/// `cancel`, `ttlSecondsAfterFinished`, `keepPodOnFailure` and `compareTo` are left out: they
/// change what happens around a run, not the run, so editing them must not start a new one.
pub fn spec_hash(spec: &EvaluationSpec) -> String {
    let run_spec = EvaluationSpec {
        cancel: None,
        ttl_seconds_after_finished: None,
        keep_pod_on_failure: None,
        compare_to: None,
        ..spec.clone()
    };
    let bytes = serde_json::to_vec(&run_spec).expect("EvaluationSpec always serializes to JSON");
    format!("sha256:{}", sha256_hex(&bytes))
}

/// The identity of the run an Evaluation asks for now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunKey {
    /// [`spec_hash`] of the spec.
    pub spec_hash: String,
    /// Value of the rerun annotation.
    pub rerun: Option<String>,
}

impl RunKey {
    /// The run `ev` asks for.
    pub fn of(ev: &Evaluation) -> Self {
        RunKey {
            spec_hash: spec_hash(&ev.spec),
            rerun: ev
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(RERUN_ANNOTATION))
                .cloned(),
        }
    }

    /// 16 hex characters naming this run of Evaluation `uid` for admission: started at
    /// `generation`, and, for a run started because a followed branch moved, at commit `head`.
    /// Every attempt of a run shares it; another Evaluation (even with the same spec), a spec
    /// change, a rerun or a new commit makes a new one.
    pub fn run_id(&self, uid: &str, generation: Option<i64>, head: Option<&str>) -> String {
        let text = format!(
            "{uid}\n{}\n{}\n{}\n{}",
            self.spec_hash,
            self.rerun.as_deref().unwrap_or(""),
            generation.unwrap_or(0),
            head.unwrap_or("")
        );
        sha256_hex(text.as_bytes())[..16].to_string()
    }

    /// 10 hex characters naming attempt `attempt` of this run of Evaluation `uid`, started at
    /// `generation`.
    ///
    /// The uid keeps names unique when an Evaluation is deleted and re-created with the same
    /// spec (the new one must never find the old one's pod under its name); the generation
    /// when a spec goes A → B → A.
    pub fn attempt_id(&self, uid: &str, generation: Option<i64>, attempt: i32) -> String {
        let text = format!(
            "{uid}\n{}\n{}\n{}\n{attempt}",
            self.spec_hash,
            self.rerun.as_deref().unwrap_or(""),
            generation.unwrap_or(0)
        );
        sha256_hex(text.as_bytes())[..10].to_string()
    }
}

fn prefix(name: &str) -> &str {
    short_prefix(name, NAME_PREFIX_MAX)
}

/// At most the first `max` bytes of `name` (on a character boundary), without a trailing `-`
/// or `.`: the start of a child's name.
pub fn short_prefix(name: &str, max: usize) -> &str {
    let mut end = name.len().min(max);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].trim_end_matches(['-', '.'])
}

/// Pod name of one attempt: `<evaluation>-<attempt id>`.
pub fn pod_name(evaluation: &str, attempt_id: &str) -> String {
    format!("{}-{attempt_id}", prefix(evaluation))
}

/// Name of a per-Evaluation child (NetworkPolicy, ConfigMap): `<evaluation>-<suffix>`, shortened
/// with a hash when the Evaluation's name is long.
pub fn child_name(evaluation: &str, suffix: &str) -> String {
    let full = format!("{evaluation}-{suffix}");
    if full.len() <= 63 {
        full
    } else {
        let hash = &sha256_hex(evaluation.as_bytes())[..8];
        format!(
            "{}-{hash}-{suffix}",
            prefix(&evaluation[..40.min(evaluation.len())])
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_hash_ignores_cancel_ttl_keep_pod_and_compare_to() {
        let spec = EvaluationSpec {
            image: "img".into(),
            ..Default::default()
        };
        let edited = EvaluationSpec {
            cancel: Some(true),
            ttl_seconds_after_finished: Some(5),
            keep_pod_on_failure: Some(true),
            compare_to: Some(crate::crd::samples::CompareTo {
                previous: Some(true),
                ..Default::default()
            }),
            ..spec.clone()
        };
        assert_eq!(spec_hash(&spec), spec_hash(&edited));
        let other = EvaluationSpec {
            image: "img2".into(),
            ..spec.clone()
        };
        assert_ne!(spec_hash(&spec), spec_hash(&other));
    }

    #[test]
    fn attempts_and_reruns_get_distinct_pod_names() {
        let key = RunKey {
            spec_hash: "sha256:x".into(),
            rerun: None,
        };
        let rerun = RunKey {
            rerun: Some("1".into()),
            ..key.clone()
        };
        let first = key.attempt_id("u1", Some(1), 1);
        assert_ne!(first, key.attempt_id("u1", Some(1), 2));
        assert_ne!(first, rerun.attempt_id("u1", Some(1), 1));
        assert_ne!(first, key.attempt_id("u1", Some(3), 1));
        assert_ne!(
            first,
            key.attempt_id("u2", Some(1), 1),
            "a re-created Evaluation"
        );
        assert_eq!(first, key.attempt_id("u1", Some(1), 1));
    }

    #[test]
    fn runs_differ_by_evaluation_spec_rerun_generation_and_followed_commit() {
        let key = RunKey {
            spec_hash: "sha256:x".into(),
            rerun: None,
        };
        let rerun = RunKey {
            rerun: Some("1".into()),
            ..key.clone()
        };
        let ids = [
            key.run_id("uid-a", Some(1), None),
            key.run_id("uid-b", Some(1), None),
            rerun.run_id("uid-a", Some(1), None),
            key.run_id("uid-a", Some(2), None),
            key.run_id("uid-a", Some(1), Some("abc")),
        ];
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            ids.len(),
            "two Evaluations of one spec differ too"
        );
        assert_eq!(
            key.run_id("uid-a", Some(1), None),
            key.run_id("uid-a", Some(1), None)
        );
    }

    #[test]
    fn long_names_are_shortened_to_valid_dns_labels() {
        let long = "a".repeat(200);
        let pod = pod_name(&long, "0123456789");
        assert!(pod.len() <= 63, "{pod}");
        let child = child_name(&long, "workspace");
        assert!(child.len() <= 63, "{child}");
        assert_ne!(child_name(&long, "x"), child_name(&"b".repeat(200), "x"));
        assert_eq!(child_name("short", "workspace"), "short-workspace");
    }
}
