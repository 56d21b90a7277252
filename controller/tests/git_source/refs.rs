//! Refs.

use std::collections::BTreeMap;

use crate::fixtures::*;

#[tokio::test]
async fn the_default_branch_is_the_remote_head_whatever_its_name() {
    within(async {
        let up = Upstream::new("trunk");
        let head = up.commit("trunk", &[("eval.py", b"print(1)")]);
        up.commit("main", &[("eval.py", b"print(2)")]);
        let (_root, cache) = cache();
        let fetched = cache.fetch(up.request(None, None), MIB).await.unwrap();
        assert_eq!(fetched.commit, head.to_string());
        assert_eq!(fetched.files["eval.py"], b"print(1)");
        assert_eq!(fetched.repo, up.url());
        assert_eq!(
            cache.resolve(up.request(Some("HEAD"), None)).await.unwrap(),
            head.to_string()
        );
    })
    .await;
}

#[tokio::test]
async fn branches_and_both_kinds_of_tags_resolve_to_their_commits() {
    within(async {
        let up = Upstream::new("main");
        let first = up.commit("main", &[("a", b"1")]);
        let second = up.commit("main", &[("a", b"2")]);
        let dev = up.commit("dev", &[("a", b"dev")]);
        up.lightweight_tag("v1", first);
        up.annotated_tag("v2", second);
        let (_root, cache) = cache();
        let resolve = |r: &'static str| cache.resolve(up.request(Some(r), None));
        assert_eq!(resolve("main").await.unwrap(), second.to_string());
        assert_eq!(resolve("dev").await.unwrap(), dev.to_string());
        assert_eq!(resolve("refs/heads/dev").await.unwrap(), dev.to_string());
        assert_eq!(resolve("v1").await.unwrap(), first.to_string());
        assert_eq!(resolve("v2").await.unwrap(), second.to_string());
        assert_eq!(resolve("refs/tags/v2").await.unwrap(), second.to_string());
        let fetched = cache
            .fetch(up.request(Some("v1"), None), MIB)
            .await
            .unwrap();
        assert_eq!(fetched.files["a"], b"1");
    })
    .await;
}

#[tokio::test]
async fn full_and_short_commit_ids_resolve() {
    within(async {
        let up = Upstream::new("main");
        let first = up.commit("main", &[("a", b"1")]);
        up.commit("main", &[("a", b"2")]);
        let (_root, cache) = cache();
        let full = first.to_string();
        assert_eq!(
            cache.resolve(up.request(Some(&full), None)).await.unwrap(),
            full
        );
        let short = full[..7].to_string();
        assert_eq!(
            cache.resolve(up.request(Some(&short), None)).await.unwrap(),
            full
        );
        let upper = full.to_uppercase();
        let fetched = cache
            .fetch(up.request(Some(&upper), None), MIB)
            .await
            .unwrap();
        assert_eq!(fetched.commit, full);
        assert_eq!(fetched.files["a"], b"1");
    })
    .await;
}

#[tokio::test]
async fn an_ambiguous_short_commit_id_is_an_unknown_ref_that_says_so() {
    within(async {
        let up = Upstream::new("main");
        // Enough objects that two share their first four hex digits.
        let contents: Vec<(String, Vec<u8>)> = (0..1500)
            .map(|i| (format!("f{i}"), format!("{i}").into_bytes()))
            .collect();
        let files: Vec<(&str, &[u8])> = contents
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_slice()))
            .collect();
        up.commit("main", &files);
        let mut seen = BTreeMap::new();
        let mut prefix = None;
        up.repo
            .odb()
            .unwrap()
            .foreach(|oid| {
                let p = oid.to_string()[..4].to_string();
                if seen.insert(p.clone(), ()).is_some() {
                    prefix = Some(p);
                    return false;
                }
                true
            })
            .ok();
        let prefix = prefix.expect("1500 objects share a four-digit prefix");
        let (_root, cache) = cache();
        let (message, reason) = failure(cache.resolve(up.request(Some(&prefix), None)).await);
        assert_eq!(reason, "UnknownRef");
        assert!(message.contains("ambiguous"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn an_unknown_ref_names_the_ref_and_the_url() {
    within(async {
        let up = Upstream::new("main");
        up.commit("main", &[("a", b"1")]);
        let (_root, cache) = cache();
        for missing in [
            "nope",
            "feature/x",
            "0123456789abcdef0123456789abcdef01234567",
            "abcdef1",
        ] {
            let (message, reason) =
                failure(cache.fetch(up.request(Some(missing), None), MIB).await);
            assert_eq!(reason, "UnknownRef", "{missing}");
            assert!(message.contains(missing), "{message}");
            assert!(message.contains(&up.url()), "{message}");
        }
    })
    .await;
}

#[tokio::test]
async fn an_empty_repository_has_no_default_branch_to_resolve() {
    within(async {
        let up = Upstream::new("main");
        let (_root, cache) = cache();
        let (message, reason) = failure(cache.resolve(up.request(None, None)).await);
        assert_eq!(reason, "UnknownRef");
        assert!(message.contains("default branch"), "{message}");
    })
    .await;
}
