//! The network gate. A NetworkPolicy engine may program a new pod's rules only after its
//! containers have started (kube-router 2.1 does; the Kubernetes documentation allows it), and
//! until then a sandbox with a network interface reaches what its policy forbids. So every such
//! pod (`Allowlist`, runs with models, the canary of their RuntimeClass) starts with a trusted
//! init container, `crucible network-gate`, that connects to a listener of the controller which
//! no run's policy allows ([`listen`]), and lets the pod go on only once that connection fails:
//! the pod's policy is in force. An engine that never enforces keeps it answering (as does an
//! allowlist naming the controller's address); the gate then fails the pod at its timeout with
//! [`NotInForce`].

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use clap::Args;

/// Name of the init container, and of the subcommand it runs.
pub const CONTAINER: &str = "network-gate";

/// Longest one connect may take: an engine that drops (rather than rejects) makes every
/// blocked connect last this long, once.
const ATTEMPT: Duration = Duration::from_millis(500);
/// Pause between two connects that were answered (the engine has not caught up yet).
const PAUSE: Duration = Duration::from_millis(100);

/// Flags of `crucible network-gate` (set by the controller in the pod spec).
#[derive(Args, Debug)]
pub struct GateArgs {
    /// The controller's gate listener, `IP:PORT`.
    #[arg(long)]
    pub target: SocketAddr,
    /// How long the policy may take to be in force before the pod fails.
    #[arg(long, value_parser = crate::duration::parse)]
    pub timeout: Duration,
}

/// The policy was in force: the gate's connect failed.
#[derive(Debug)]
pub struct InForce {
    /// From the gate's start until the failed connect.
    pub after: Duration,
    /// Connects that were answered before.
    pub answered: u32,
    /// How the connect failed (refused, unreachable, timed out).
    pub error: io::ErrorKind,
}

/// The gate's target still answered at the timeout.
#[derive(Debug, thiserror::Error)]
#[error(
    "the pod's NetworkPolicy was not in force {timeout:?} after it started: {target}, which no sandbox's policy allows, still answered ({answered} connections); the cluster's NetworkPolicy engine does not enforce egress rules, or not in time"
)]
pub struct NotInForce {
    /// The listener that answered.
    pub target: SocketAddr,
    /// The gate's timeout.
    pub timeout: Duration,
    /// Connects answered.
    pub answered: u32,
}

/// Connects to `target` until a connect fails (`Ok`) or `timeout` has passed (`Err`).
pub fn wait(target: SocketAddr, timeout: Duration) -> Result<InForce, NotInForce> {
    let start = Instant::now();
    let mut answered = 0;
    loop {
        match TcpStream::connect_timeout(&target, ATTEMPT) {
            Err(error) => {
                return Ok(InForce {
                    after: start.elapsed(),
                    answered,
                    error: error.kind(),
                });
            }
            Ok(_) => answered += 1,
        }
        if start.elapsed() >= timeout {
            return Err(NotInForce {
                target,
                timeout,
                answered,
            });
        }
        std::thread::sleep(PAUSE);
    }
}

/// `crucible network-gate`: its exit code lets the pod go on; a failure's message is the
/// container's termination message, which the run's condition quotes.
pub fn main(args: &GateArgs) -> std::process::ExitCode {
    match wait(args.target, args.timeout) {
        Ok(done) => {
            println!(
                "network-gate: the pod's NetworkPolicy is in force after {} ms ({} connection(s) answered before; then {:?})",
                done.after.as_millis(),
                done.answered,
                done.error
            );
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Opens the controller's gate listener on `at` (port 0: any free one): it accepts and closes
/// every connection, and lives as long as the process.
pub async fn listen(at: SocketAddr) -> io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(at).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            if let Err(error) = listener.accept().await {
                // Out of descriptors, say: gates see a refusal meanwhile, as with the policy.
                tracing::warn!(%error, "the network gate's listener cannot accept");
                tokio::time::sleep(PAUSE).await;
            }
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_listener_answers_so_the_gate_waits_until_its_timeout() {
        let addr = listen("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("listen on loopback");
        let timeout = Duration::from_millis(300);
        let waited = tokio::task::spawn_blocking(move || wait(addr, timeout))
            .await
            .expect("join");
        let error = waited.expect_err("an answering listener means no policy in force");
        assert!(error.answered >= 2, "{error}");
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }

    #[tokio::test]
    async fn the_gate_opens_once_connections_fail() {
        // A port that answered and then stopped: as a policy coming into force.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let first = std::thread::spawn(move || {
            let accepted = listener.accept().map(|_| ());
            drop(listener);
            accepted
        });
        let waited = tokio::task::spawn_blocking(move || wait(addr, Duration::from_secs(10)))
            .await
            .expect("join");
        first.join().expect("thread").expect("accepted");
        let done = waited.expect("the gate opens once nothing answers");
        assert!(done.answered >= 1, "{done:?}");
        assert_eq!(done.error, io::ErrorKind::ConnectionRefused);
    }
}
