//! `crucible stop` against an API server that accepts and never answers ends with a message
//! (its reads are bounded as the controller's are) instead of hanging the operator's terminal.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn stop_against_a_silent_api_server_fails_with_a_message() {
    // The kernel accepts into the backlog; nothing ever answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("address").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: silent\n\
             clusters: [{{name: silent, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n\
             users: [{{name: nobody, user: {{}}}}]\n\
             contexts: [{{name: silent, context: {{cluster: silent, user: nobody}}}}]\n"
        ),
    )
    .expect("write kubeconfig");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_crucible"))
        .args(["stop", "--all", "--reason", "test"])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run crucible");
    // The read limit is 30 s; without it the command would wait for ever, so this test gives
    // up (and fails) at 90 s.
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("crucible stop still waits on a silent API server after 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("stderr");
    }
    assert!(!status.success(), "stop succeeded against a silent server");
    assert!(stderr.starts_with("crucible: "), "{stderr}");
    drop(silent);
}
