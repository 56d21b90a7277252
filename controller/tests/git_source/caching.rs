//! Caching.

use std::os::unix::fs::MetadataExt;

use crucible::source::{GitCache, GitRequest};

use crate::fixtures::*;

#[tokio::test]
async fn a_pinned_commit_stays_while_the_branch_moves_and_the_cache_is_reused() {
    within(async {
        let up = Upstream::new("main");
        let pinned = up.commit("main", &[("eval.py", b"v1")]);
        let (_root, cache) = cache();
        let first = cache
            .fetch(up.request(Some("main"), None), MIB)
            .await
            .unwrap();
        assert_eq!(first.commit, pinned.to_string());

        let dir = cache.repo_dir(&up.request(None, None)).unwrap();
        let inode = std::fs::metadata(&dir).unwrap().ino();
        std::fs::write(dir.join("marker"), "kept").unwrap();

        let moved = up.commit("main", &[("eval.py", b"v2")]);
        assert_eq!(
            cache.resolve(up.request(Some("main"), None)).await.unwrap(),
            moved.to_string()
        );
        let at_pin = cache
            .fetch(up.request(Some(&pinned.to_string()), None), MIB)
            .await
            .unwrap();
        assert_eq!(at_pin.files["eval.py"], b"v1");
        let at_head = cache.fetch(up.request(None, None), MIB).await.unwrap();
        assert_eq!(at_head.files["eval.py"], b"v2");

        // Incremental: the same directory, not a new clone.
        assert_eq!(std::fs::metadata(&dir).unwrap().ino(), inode);
        assert_eq!(std::fs::read_to_string(dir.join("marker")).unwrap(), "kept");
        assert_eq!(std::fs::read_dir(dir.parent().unwrap()).unwrap().count(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_cached_full_commit_id_needs_no_network() {
    within(async {
        let up = Upstream::new("main");
        let commit = up.commit("main", &[("a", b"1")]);
        let (_root, cache) = cache();
        cache.fetch(up.request(None, None), MIB).await.unwrap();
        let request = up.request(Some(&commit.to_string()), None);
        drop(up); // the remote is gone
        let fetched = cache.fetch(request.clone(), MIB).await.unwrap();
        assert_eq!(fetched.files["a"], b"1");
        let (_, reason) = failure(
            cache
                .resolve(GitRequest {
                    reference: Some("main".into()),
                    ..request
                })
                .await,
        );
        assert_eq!(reason, "SourceRepositoryNotFound");
    })
    .await;
}

#[tokio::test]
async fn a_branch_deleted_upstream_disappears_from_the_cache() {
    within(async {
        let up = Upstream::new("main");
        up.commit("main", &[("a", b"1")]);
        up.commit("gone", &[("a", b"2")]);
        let (_root, cache) = cache();
        cache.resolve(up.request(Some("gone"), None)).await.unwrap();
        up.repo
            .find_reference("refs/heads/gone")
            .unwrap()
            .delete()
            .unwrap();
        let (_, reason) = failure(cache.resolve(up.request(Some("gone"), None)).await);
        assert_eq!(reason, "UnknownRef");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_fetches_of_one_repository_all_see_the_same_files() {
    within(async {
        let up = Upstream::new("main");
        let big = vec![7u8; 256 * 1024];
        let commit = up.commit("main", &[("data/big.bin", &big), ("eval.py", b"x")]);
        let (_root, cache) = cache();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let cache = cache.clone();
                let request = up.request(if i % 2 == 0 { Some("main") } else { None }, None);
                tokio::spawn(async move { cache.fetch(request, MIB).await })
            })
            .collect();
        for task in tasks {
            let fetched = task.await.unwrap().unwrap();
            assert_eq!(fetched.commit, commit.to_string());
            assert_eq!(fetched.files["data/big.bin"].len(), big.len());
        }
        let repos = cache.root().join("repos");
        assert_eq!(std::fs::read_dir(repos).unwrap().count(), 1);
    })
    .await;
}

#[tokio::test]
async fn least_recently_used_repositories_are_evicted_over_budget() {
    within(async {
        let ups: Vec<Upstream> = (0..3)
            .map(|i| {
                let up = Upstream::new("main");
                up.commit("main", &[("eval.py", format!("repo {i}").as_bytes())]);
                up
            })
            .collect();
        let (_root, probe) = cache();
        probe.fetch(ups[0].request(None, None), MIB).await.unwrap();
        let one = disk_usage(&probe.root().join("repos"));

        let root = tempfile::tempdir().unwrap();
        let cache = GitCache::new(root.path().to_path_buf(), one * 5 / 2).allow_file_urls(true);
        let dir = |i: usize| cache.repo_dir(&ups[i].request(None, None)).unwrap();
        let a = cache.fetch(ups[0].request(None, None), MIB).await.unwrap();
        cache.fetch(ups[1].request(None, None), MIB).await.unwrap();
        // Using A again (from the cache) makes B the least recently used.
        cache
            .fetch(ups[0].request(Some(&a.commit), None), MIB)
            .await
            .unwrap();
        cache.fetch(ups[2].request(None, None), MIB).await.unwrap();
        assert!(dir(0).exists(), "recently used A is kept");
        assert!(!dir(1).exists(), "least recently used B is evicted");
        assert!(dir(2).exists(), "C, just fetched, is kept");

        // A budget smaller than one repository keeps only the one in use.
        let tiny = GitCache::new(root.path().to_path_buf(), 1).allow_file_urls(true);
        tiny.fetch(ups[1].request(None, None), MIB).await.unwrap();
        assert!(dir(1).exists());
        assert!(!dir(0).exists() && !dir(2).exists());
    })
    .await;
}
