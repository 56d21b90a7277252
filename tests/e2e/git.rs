//! Evaluation code from Git on a real cluster: a repository the test creates with git2, read
//! through a file:// URL by the controller, pinned to a commit, re-run when `follow: true`
//! sees a new commit; a bad ref fails with a reason and no pod.

use std::path::Path;
use std::time::Duration;

use crucible::crd::Evaluation;
use crucible::crd::evaluation::Phase;
use crucible_e2e::{
    apply_evaluation, parse_evaluation, pods_of, wait_finished, wait_for, with_temp_ns,
};
use git2::{Repository, Signature};
use kube::Api;

/// Commits `score` into `evals/e/eval.py` on `main`; returns the commit id.
fn commit_score(repo: &Repository, score: f64) -> String {
    let dir = repo.workdir().expect("work tree").join("evals/e");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let code = format!(
        "import json, os\nprint('scoring')\nopen(os.environ['CRUCIBLE_RESULT_PATH'], 'w').write(json.dumps({{'score': {score}}}))\n"
    );
    std::fs::write(dir.join("eval.py"), code).expect("write");
    let mut index = repo.index().expect("index");
    index.add_path(Path::new("evals/e/eval.py")).expect("add");
    index.write().expect("write index");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("find tree");
    let sig = Signature::now("e2e", "e2e@localhost").expect("signature");
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<_> = parent.iter().collect();
    repo.commit(
        Some("refs/heads/main"),
        &sig,
        &sig,
        &format!("score {score}"),
        &tree,
        &parents,
    )
    .expect("commit")
    .to_string()
}

fn git_eval(name: &str, url: &str, reference: &str, follow: bool) -> Evaluation {
    parse_evaluation(&format!(
        "apiVersion: crucible.dev/v1alpha1\nkind: Evaluation\nmetadata: {{name: {name}}}\nspec:\n  image: localhost/crucible/python:3.11\n  command: [python3, /workspace/eval.py]\n  timeout: 1m\n  source:\n    git: {{url: \"{url}\", ref: {reference}, path: evals/e, follow: {follow}}}\n"
    ))
}

#[tokio::test]
async fn git_code_is_pinned_to_its_commit_and_follow_reruns_on_a_new_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = Repository::init(dir.path()).expect("init");
    repo.set_head("refs/heads/main").expect("main");
    let first = commit_score(&repo, 0.25);
    let url = format!("file://{}", dir.path().display());
    with_temp_ns("git", |client, ns| async move {
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        apply_evaluation(&client, &ns, &git_eval("from-git", &url, "main", true)).await;
        let done = wait_finished(&api, "from-git", Duration::from_secs(120)).await;
        let status = done.status.expect("status");
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
        assert_eq!(status.result.map(|r| r.score), Some(0.25));
        let provenance = status.provenance.expect("provenance");
        assert_eq!(provenance.commit.as_deref(), Some(first.as_str()));
        assert_eq!(provenance.repo.as_deref(), Some(url.as_str()));

        let second = commit_score(&repo, 0.75);
        let rerun = wait_for(
            &api,
            "from-git",
            Duration::from_secs(120),
            "re-run at the new commit",
            |e: &Evaluation| {
                e.status.as_ref().is_some_and(|s| {
                    s.phase.is_some_and(Phase::is_finished)
                        && s.provenance.as_ref().and_then(|p| p.commit.as_deref())
                            == Some(second.as_str())
                })
            },
        )
        .await;
        let status = rerun.status.expect("status");
        assert_eq!(status.result.map(|r| r.score), Some(0.75));
        assert_eq!(status.history.len(), 1);
        assert_eq!(status.history[0].commit.as_deref(), Some(first.as_str()));
        assert_eq!(status.history[0].score, Some(0.25));
    })
    .await;
}

#[tokio::test]
async fn an_unknown_ref_fails_with_its_reason_and_creates_no_pod() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = Repository::init(dir.path()).expect("init");
    repo.set_head("refs/heads/main").expect("main");
    commit_score(&repo, 1.0);
    let url = format!("file://{}", dir.path().display());
    with_temp_ns("gitref", |client, ns| async move {
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        apply_evaluation(
            &client,
            &ns,
            &git_eval("bad-ref", &url, "no-such-branch", false),
        )
        .await;
        let done = wait_finished(&api, "bad-ref", Duration::from_secs(60)).await;
        let status = done.status.clone().expect("status");
        assert_eq!(status.reason.as_deref(), Some("UnknownRef"), "{status:#?}");
        assert!(
            status
                .message
                .as_deref()
                .is_some_and(|m| m.contains("no-such-branch"))
        );
        assert!(pods_of(&client, &ns, &done).await.is_empty());
    })
    .await;
}

/// Twenty runs in two namespaces read from an https server that accepts connections and
/// never answers (a listener this test opens on loopback and never accepts from): a trivial
/// run in a third namespace still succeeds within 30 s (no shared worker waits for git), and
/// the stalled runs wait in the queue with the reason `SourceUnreachable`.
#[tokio::test]
async fn a_silent_git_server_holds_up_no_other_namespace() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "https://127.0.0.1:{}/org/repo",
        silent.local_addr().expect("address").port()
    );
    let stalled_ns = |prefix: &'static str, url: String| async move {
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(with_temp_ns(prefix, move |client, ns| async move {
            for i in 0..10 {
                let mut ev = git_eval(&format!("stalled-{i}"), &url, "main", false);
                if let Some(crucible::crd::evaluation::Source::Git(git)) = &mut ev.spec.source {
                    git.path = Some(format!("evals/e{i}"));
                }
                apply_evaluation(&client, &ns, &ev).await;
            }
            let _ = tx.send(ns);
            // Keep the namespace until the bystander is done.
            let _ = done_rx.await;
        }));
        let ns = rx.await.expect("namespace ready");
        (ns, done_tx, task)
    };
    let (first, first_done, first_task) = stalled_ns("silent-a", url.clone()).await;
    let (_second, second_done, second_task) = stalled_ns("silent-b", url.clone()).await;
    with_temp_ns("bystander", |client, ns| async move {
        let api: Api<Evaluation> = Api::namespaced(client.clone(), &ns);
        let started = std::time::Instant::now();
        apply_evaluation(&client, &ns, &crucible_e2e::sleeper("trivial", 0, "100m")).await;
        let done = wait_finished(&api, "trivial", Duration::from_secs(30)).await;
        let status = done.status.expect("status");
        assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
        assert!(started.elapsed() < Duration::from_secs(30));
        // What a tenant with the silent server sees.
        let stalled: Api<Evaluation> = Api::namespaced(client.clone(), &first);
        wait_for(
            &stalled,
            "stalled-0",
            Duration::from_secs(90),
            "queued with SourceUnreachable",
            |e: &Evaluation| {
                e.status.as_ref().is_some_and(|s| {
                    s.phase == Some(Phase::Queued)
                        && s.queue
                            .as_ref()
                            .and_then(|q| q.reason.as_deref())
                            .is_some_and(|r| r.starts_with("SourceUnreachable"))
                })
            },
        )
        .await;
    })
    .await;
    let _ = (first_done.send(()), second_done.send(()));
    let _ = (first_task.await, second_task.await);
    drop(silent);
}
