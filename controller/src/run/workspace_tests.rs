use super::*;
use crate::crd::Evaluation;
use crate::crd::evaluation::{GitSource, InlineSource};
use crate::run::owner::owner;

fn inline(files: &[(&str, &str)]) -> Option<Source> {
    Some(Source::Inline(InlineSource {
        files: files
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect(),
    }))
}

pub(crate) fn workspace_of(ev: &Evaluation) -> Workspace {
    desired_workspace(&ev.spec, &owner(ev).expect("owner"), None).expect("workspace")
}

pub(crate) fn case(name: &str, uid: &str, files: &[(&str, &str)]) -> Evaluation {
    Evaluation::test()
        .with_spec(|s| s.source = inline(files))
        .child_of("s", name, uid)
}

#[test]
fn suite_cases_with_the_same_files_share_one_suite_owned_configmap() {
    let files = [("eval.py", "print(1)"), ("lib/util.py", "x = 1")];
    let a = workspace_of(&case("a", "uid-a", &files));
    let b = workspace_of(&case("b", "uid-b", &files));
    assert_eq!(a.config_map.metadata.name, b.config_map.metadata.name);
    assert_eq!(
        a.config_map, b.config_map,
        "the same object, whoever creates it"
    );
    assert!(a.shared);
    let owners = a
        .config_map
        .metadata
        .owner_references
        .clone()
        .expect("owner");
    assert_eq!(
        (
            owners.len(),
            owners[0].kind.as_str(),
            owners[0].uid.as_str()
        ),
        (1, "EvaluationSuite", "s-uid")
    );
    let labels = a.config_map.metadata.labels.clone().expect("labels");
    assert!(!labels.contains_key(EVALUATION_UID_LABEL), "{labels:?}");
    assert_eq!(a.config_map.immutable, Some(true));
    // What the suite computes from its spec alone names the same ConfigMap.
    let files: BTreeMap<String, String> = files
        .iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect();
    assert_eq!(
        a.config_map.metadata.name.as_deref(),
        Some(shared_inline_name("s", "s-uid", &files).as_str())
    );
    let name = a.config_map.metadata.name.clone().unwrap_or_default();
    assert!(name.starts_with("s-src-") && name.len() <= 63, "{name}");
}

#[test]
fn other_files_or_another_owner_make_another_configmap() {
    let one = workspace_of(&case("a", "uid-a", &[("eval.py", "print(1)")]));
    let edited = workspace_of(&case("b", "uid-b", &[("eval.py", "print(2)")]));
    let renamed = workspace_of(&case("c", "uid-c", &[("main.py", "print(1)")]));
    let standalone = workspace_of(&Evaluation::test());
    let mut recreated = Evaluation::test();
    recreated.metadata.uid = Some("other-uid".into());
    let other_standalone = workspace_of(&recreated);
    let names: std::collections::BTreeSet<_> =
        [&one, &edited, &renamed, &standalone, &other_standalone]
            .iter()
            .map(|w| w.config_map.metadata.name.clone())
            .collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert_ne!(one.digest, edited.digest);
    assert_eq!(
        one.digest, standalone.digest,
        "same files, same content digest"
    );
    assert!(!standalone.shared);
    let owners = standalone
        .config_map
        .metadata
        .owner_references
        .expect("owner");
    assert_eq!(owners[0].kind, "Evaluation");
}

#[test]
fn git_sources_are_never_shared() {
    let files = BTreeMap::from([("eval.py".to_string(), b"print(1)".to_vec())]);
    let ev = case("a", "uid-a", &[]).with_spec(|s| {
        s.source = Some(Source::Git(GitSource {
            url: "file:///repo".into(),
            ..Default::default()
        }))
    });
    let ws =
        desired_workspace(&ev.spec, &owner(&ev).expect("owner"), Some(&files)).expect("workspace");
    assert!(!ws.shared);
    let owners = ws.config_map.metadata.owner_references.expect("owner");
    assert_eq!(owners[0].kind, "Evaluation");
}

#[test]
fn workspace_maps_nested_paths_to_valid_keys() {
    let ev = Evaluation::test()
        .with_spec(|s| s.source = inline(&[("eval.py", "a"), ("lib/util.py", "b")]));
    let ws = workspace_of(&ev);
    let data = ws.config_map.data.clone().expect("data");
    assert_eq!(data["eval.py"], "a");
    let nested = data
        .keys()
        .find(|k| k.starts_with("lib_util.py-"))
        .expect("nested key");
    assert!(
        nested
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    );
    assert!(
        ws.items
            .iter()
            .any(|i| &i.key == nested && i.path == "lib/util.py")
    );
    let owner = owner(&ev).expect("owner");
    assert!(desired_workspace(&EvaluationSpec::default(), &owner, None).is_none());
}

#[test]
fn git_files_become_binary_data_with_mapped_paths() {
    let ev = Evaluation::test().with_spec(|s| {
        s.source = Some(Source::Git(GitSource {
            url: "file:///repo".into(),
            ..Default::default()
        }))
    });
    let files = BTreeMap::from([
        ("eval.py".to_string(), b"print(1)".to_vec()),
        ("data/weird name.bin".to_string(), vec![0, 159, 255]),
    ]);
    let owner = owner(&ev).expect("owner");
    assert!(
        desired_workspace(&ev.spec, &owner, None).is_none(),
        "not fetched: nothing"
    );
    let ws = desired_workspace(&ev.spec, &owner, Some(&files)).expect("workspace");
    let binary = ws.config_map.binary_data.clone().expect("binaryData");
    assert_eq!(binary["eval.py"].0, b"print(1)");
    let item = ws
        .items
        .iter()
        .find(|i| i.path == "data/weird name.bin")
        .expect("item");
    assert!(
        item.key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)),
        "{}",
        item.key
    );
    assert_eq!(binary[&item.key].0, vec![0, 159, 255]);
}

#[test]
fn text_and_binary_content_digest_apart() {
    let text = ConfigMap {
        data: Some(BTreeMap::from([("a".to_string(), "x".to_string())])),
        ..Default::default()
    };
    let binary = ConfigMap {
        binary_data: Some(BTreeMap::from([(
            "a".to_string(),
            ByteString(b"x".to_vec()),
        )])),
        ..Default::default()
    };
    assert_ne!(content_digest(&text), content_digest(&binary));
    assert!(content_digest(&text).starts_with("sha256:"));
}

#[test]
fn an_existing_configmap_is_used_only_when_it_is_exactly_the_workspace() {
    let desired = workspace_of(&Evaluation::test()).config_map;
    assert_eq!(check_existing(&desired, &desired), Existing::Reuse);
    let mut edited = desired.clone();
    edited.data = Some(BTreeMap::from([(
        "eval.py".to_string(),
        "import os".to_string(),
    )]));
    assert!(matches!(
        check_existing(&edited, &desired),
        Existing::Replace(_)
    ));
    let mut foreign = desired.clone();
    foreign.metadata.owner_references = None;
    assert!(matches!(
        check_existing(&foreign, &desired),
        Existing::Replace(_)
    ));
    let mut mutable = desired.clone();
    mutable.immutable = None;
    assert!(matches!(
        check_existing(&mutable, &desired),
        Existing::Replace(_)
    ));
    let mut going = desired.clone();
    going.metadata.deletion_timestamp = Some(crate::fixtures::at(0));
    assert!(matches!(
        check_existing(&going, &desired),
        Existing::Wait(_)
    ));
}
