//! Paths and limits.

use crucible::source::SourceError;

use crate::fixtures::*;

#[tokio::test]
async fn a_directory_path_yields_every_file_below_it_relative_to_it() {
    within(async {
        let (up, _) = tree_upstream();
        let (_root, cache) = cache();
        for path in ["evals/arith", "./evals/arith/", "/evals/arith"] {
            let fetched = cache
                .fetch(up.request(None, Some(path)), MIB)
                .await
                .unwrap();
            assert_eq!(
                names(&fetched),
                ["data/cases.jsonl", "data/deep/er/x.txt", "eval.py"],
                "{path}"
            );
            assert_eq!(fetched.total_bytes, 3 + 1 + 9);
        }
        let whole = cache.fetch(up.request(None, None), MIB).await.unwrap();
        assert_eq!(whole.files.len(), 5);
        assert!(whole.files.contains_key("evals/other/eval.py"));
    })
    .await;
}

#[tokio::test]
async fn a_file_path_yields_one_entry_named_after_the_file() {
    within(async {
        let (up, _) = tree_upstream();
        let (_root, cache) = cache();
        let fetched = cache
            .fetch(up.request(None, Some("evals/arith/eval.py")), MIB)
            .await
            .unwrap();
        assert_eq!(names(&fetched), ["eval.py"]);
        assert_eq!(fetched.files["eval.py"], b"print(42)");
    })
    .await;
}

#[tokio::test]
async fn a_missing_or_escaping_path_is_an_error_naming_it() {
    within(async {
        let (up, commit) = tree_upstream();
        let (_root, cache) = cache();
        let (message, reason) =
            failure(cache.fetch(up.request(None, Some("evals/nope")), MIB).await);
        assert_eq!(reason, "SourcePathNotFound");
        assert!(
            message.contains("evals/nope") && message.contains(&commit.to_string()),
            "{message}"
        );
        let (_, reason) = failure(cache.fetch(up.request(None, Some("../etc")), MIB).await);
        assert_eq!(reason, "InvalidSourcePath");
    })
    .await;
}

#[tokio::test]
async fn symlinks_and_submodules_are_skipped_inside_a_directory_and_refused_as_the_path() {
    within(async {
        let up = Upstream::new("main");
        let other = up.commit("other", &[("x", b"x")]);
        up.commit_entries(
            "main",
            &[
                ("src/eval.py", Entry::File(b"ok")),
                ("src/link.py", Entry::Symlink("eval.py")),
                ("src/vendor", Entry::Submodule(other)),
            ],
        );
        let (_root, cache) = cache();
        let fetched = cache
            .fetch(up.request(None, Some("src")), MIB)
            .await
            .unwrap();
        assert_eq!(names(&fetched), ["eval.py"]);
        assert_eq!(fetched.skipped, ["link.py", "vendor"]);
        for (path, kind) in [("src/link.py", "symlink"), ("src/vendor", "submodule")] {
            let (message, reason) = failure(cache.fetch(up.request(None, Some(path)), MIB).await);
            assert_eq!(reason, "SourceUnsupportedEntry");
            assert!(message.contains(kind), "{message}");
        }
    })
    .await;
}

#[tokio::test]
async fn files_over_the_limit_are_too_large_and_reading_stops() {
    within(async {
        let up = Upstream::new("main");
        let big = vec![1u8; 3 * MIB];
        up.commit("main", &[("big.bin", &big), ("small.txt", b"12345")]);
        let (_root, cache) = cache();
        let err = cache.fetch(up.request(None, None), MIB).await.unwrap_err();
        assert_eq!(err.reason(), "SourceTooLarge");
        assert!(!err.is_transient());
        match err {
            SourceError::TooLarge { total, limit, .. } => {
                assert_eq!(limit, MIB);
                assert!(total > limit && total <= big.len() + 5, "{total}");
            }
            other => panic!("{other:?}"),
        }
        let small = cache
            .fetch(up.request(None, Some("small.txt")), 5)
            .await
            .unwrap();
        assert_eq!(small.total_bytes, 5);
    })
    .await;
}

#[tokio::test]
async fn more_files_than_a_pod_can_mount_are_refused() {
    within(async {
        let up = Upstream::new("main");
        let names: Vec<String> = (0..=crucible::crd::bounds::MAX_SOURCE_FILES)
            .map(|i| format!("f/{i}.txt"))
            .collect();
        let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
        up.commit("main", &files);
        let (_root, cache) = cache();
        let err = cache
            .fetch(up.request(None, Some("f")), MIB)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "SourceTooManyFiles");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("more than 1000 files"), "{err}");
        up.commit("main", &files[1..]);
        let fetched = cache.fetch(up.request(None, Some("f")), MIB).await.unwrap();
        assert_eq!(fetched.files.len(), 1000);
    })
    .await;
}
