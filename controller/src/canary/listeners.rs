//! The two listeners one canary run connects to (the allowlisted and the unlisted port),
//! each greeting with the run's nonce; they close when dropped.

use std::net::{IpAddr, SocketAddr};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The two ports one canary run connects to; they close when dropped.
pub(super) struct Listeners {
    pub(super) listed: SocketAddr,
    pub(super) unlisted: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Listeners {
    pub(super) async fn open(ip: IpAddr, greeting: String) -> std::io::Result<Self> {
        let listed = TcpListener::bind((ip, 0)).await?;
        let unlisted = TcpListener::bind((ip, 0)).await?;
        let addrs = (listed.local_addr()?, unlisted.local_addr()?);
        let tasks = [listed, unlisted]
            .into_iter()
            .map(|l| tokio::spawn(serve(l, greeting.clone())))
            .collect();
        Ok(Listeners {
            listed: addrs.0,
            unlisted: addrs.1,
            tasks,
        })
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// Greets every connection; a failing accept ends the listener (the canary then fails closed).
pub(super) async fn serve(listener: TcpListener, greeting: String) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let _ = stream.write_all(greeting.as_bytes()).await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::canary::probe;

    #[tokio::test]
    async fn the_listener_greets_with_the_nonce_and_closes_when_dropped() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let listeners = Listeners::open(ip, probe::greeting("abc"))
            .await
            .expect("listen on loopback");
        assert_ne!(listeners.listed, listeners.unlisted);
        for addr in [listeners.listed, listeners.unlisted] {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let mut read = String::new();
            stream.read_to_string(&mut read).await.expect("read");
            assert_eq!(read, "crucible-canary abc\n");
        }
        let addr = listeners.listed;
        drop(listeners);
        // The accept task is aborted: nothing answers any more (refused, or reset).
        let mut closed = false;
        for _ in 0..50 {
            match tokio::net::TcpStream::connect(addr).await {
                Err(_) => {
                    closed = true;
                    break;
                }
                Ok(_) => tokio::task::yield_now().await,
            }
        }
        assert!(closed, "the listener still accepts after the run");
    }
}
