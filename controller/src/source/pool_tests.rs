use std::net::TcpListener;

use super::*;
use crate::runner;

fn key(namespace: &str, repository: &str) -> JobKey {
    JobKey {
        namespace: namespace.into(),
        repository: repository.into(),
        reference: None,
        path: None,
        files: None,
    }
}

#[test]
fn a_namespace_never_holds_more_than_its_share_and_namespaces_take_turns() {
    let mut slots = Slots::default();
    for repo in ["a1", "a2", "a3"] {
        slots.push(key("a", repo));
    }
    slots.push(key("b", "b1"));
    let started: Vec<String> = std::iter::from_fn(|| slots.next(8, 2))
        .map(|k| k.repository)
        .collect();
    // a's third waits for its share although slots are free; b is not held up by a's backlog.
    assert_eq!(started, ["a1", "b1", "a2"]);
    // The slot of a's fetch frees at its deadline, its share only when its thread ends.
    slots.finished();
    assert_eq!(slots.next(8, 2), None);
    slots.released("a");
    assert_eq!(
        slots.next(8, 2).map(|k| k.repository).as_deref(),
        Some("a3")
    );
    // The pool's slots bound every namespace together.
    slots.push(key("c", "c1"));
    assert_eq!(slots.next(3, 2), None);
}

/// A server that accepts connections (the kernel does, into the backlog) and never answers.
fn silent_server() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    (listener, format!("http://127.0.0.1:{port}"))
}

fn pool(root: &std::path::Path, slots: usize, share: usize) -> Arc<FetchPool> {
    let cache = GitCache::new(root.join("cache"), u64::MAX)
        .allow_file_urls(true)
        .with_answer_timeout(Duration::from_millis(500));
    Arc::new(FetchPool::with_slots(
        cache,
        Duration::from_secs(60),
        slots,
        share,
    ))
}

fn request(url: String) -> GitRequest {
    GitRequest {
        url,
        ..Default::default()
    }
}

/// A repository with one commit, as a `file://` URL.
fn upstream(dir: &std::path::Path) -> String {
    let repo = git2::Repository::init(dir).expect("init");
    let blob = repo.blob(b"print(1)").expect("blob");
    let mut tree = repo.treebuilder(None).expect("tree");
    tree.insert("eval.py", blob, 0o100644).expect("insert");
    let tree = repo.find_tree(tree.write().expect("write")).expect("find");
    let sig = git2::Signature::now("Test", "test@example.invalid").expect("signature");
    repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &[])
        .expect("commit");
    format!("file://{}", dir.display())
}

async fn woken(triggers: &mut runner::Triggers) -> Key {
    tokio::time::timeout(Duration::from_secs(20), triggers.recv())
        .await
        .expect("the fetch's end woke nobody")
        .expect("trigger channel open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_a_stalled_source_returns_at_once_and_its_end_wakes_the_evaluation() {
    let root = tempfile::tempdir().expect("tempdir");
    let (_server, url) = silent_server();
    let pool = pool(root.path(), 4, 2);
    let (trigger, mut triggers) = runner::channel();
    pool.connect(trigger);
    let ev = Key::new("tenant", "ev");
    let asked = std::time::Instant::now();
    let answer = pool.files(&ev, request(format!("{url}/repo")), 1 << 20);
    assert!(matches!(answer, Answer::Pending(_)), "{answer:?}");
    assert!(asked.elapsed() < Duration::from_millis(200));
    assert_eq!(woken(&mut triggers).await, ev);
    match pool.files(&ev, request(format!("{url}/repo")), 1 << 20) {
        Answer::Ready(Err(error)) => {
            assert_eq!(error.reason(), "SourceUnreachable");
            assert!(error.to_string().contains("no answer within"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_fetches_of_one_namespace_do_not_hold_up_another() {
    let root = tempfile::tempdir().expect("tempdir");
    let (_server, url) = silent_server();
    let pool = pool(root.path(), 2, 1);
    let (trigger, mut triggers) = runner::channel();
    pool.connect(trigger);
    let (first, second) = (Key::new("a", "first"), Key::new("a", "second"));
    let _ = pool.files(&first, request(format!("{url}/one")), 1 << 20);
    // Its namespace's share is taken: this one waits although a slot is free.
    match pool.files(&second, request(format!("{url}/two")), 1 << 20) {
        Answer::Pending(why) => assert!(why.contains("waiting for a git fetch slot"), "{why}"),
        other => panic!("{other:?}"),
    }
    let repo = tempfile::tempdir().expect("tempdir");
    let local = upstream(repo.path());
    let other = Key::new("b", "other");
    let _ = pool.files(&other, request(local.clone()), 1 << 20);
    assert_eq!(woken(&mut triggers).await, other);
    match pool.files(&other, request(local), 1 << 20) {
        Answer::Ready(Ok(fetched)) => assert_eq!(fetched.files["eval.py"], b"print(1)"),
        answer => panic!("{answer:?}"),
    }
}
