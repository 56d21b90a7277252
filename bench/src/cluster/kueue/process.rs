//! Kueue as a host process, as the benchmark runs the controller: the cluster's admin
//! kubeconfig, a Configuration file, a self-signed certificate for its webhook server (no
//! webhook configuration points at it: the Jobs are created suspended and labelled, so nothing
//! needs mutating) and for its metrics server.

use std::path::Path;
use std::process::{Command, Stdio};

use super::objects::{Listen, configuration};
use crate::cluster::controller::{Daemon, free_port};
use crate::cluster::{Error, io_err, lab};

/// Kueue reads its metrics server's certificate from this fixed path when it does not manage
/// certificates itself. The benchmark does not write to the host's /etc: Kueue runs in a mount
/// namespace of its own whose /etc is an overlay, with the certificate in a tmpfs upper layer;
/// both go with the process.
const MOUNT_ETC: &str = r#"set -e
d=$1; shift
mount -t tmpfs -o size=1m,mode=0700 crucible-bench-kueue "$d/overlay"
mkdir -p "$d/overlay/upper/kueue/metrics/certs" "$d/overlay/work"
cp "$d/certs/tls.crt" "$d/certs/tls.key" "$d/overlay/upper/kueue/metrics/certs/"
mount -t overlay crucible-bench-kueue -o "lowerdir=/etc,upperdir=$d/overlay/upper,workdir=$d/overlay/work" /etc
exec "$@""#;

/// Starts `binary` with its files in `dir` (created) and waits until its /readyz answers 200
/// (the webhook server is up; the caller waits for its controllers).
pub async fn start(
    binary: &Path,
    kubeconfig: &Path,
    dir: &Path,
    namespace: &str,
) -> Result<Daemon, Error> {
    let certs = dir.join("certs");
    for d in [&certs, &dir.join("overlay")] {
        std::fs::create_dir_all(d).map_err(io_err(d))?;
    }
    self_signed(&certs)?;
    let health = free_port()?;
    let listen = Listen {
        health,
        metrics: free_port()?,
        webhook: free_port()?,
        cert_dir: &certs.display().to_string(),
    };
    let config = dir.join("config.json");
    let text = serde_json::to_string_pretty(&configuration(namespace, &listen))
        .map_err(|e| Error::Setup(format!("Kueue configuration: {e}")))?;
    std::fs::write(&config, text).map_err(io_err(&config))?;
    // bash closes inherited descriptors; unshare, sh and kueue each exec: one PID throughout.
    let mut command = lab::bash(r#"exec unshare --mount --propagation private /bin/sh -c "$@""#);
    command
        .arg(MOUNT_ETC)
        .arg("sh")
        .arg(dir)
        .arg(binary)
        .arg("--config")
        .arg(&config)
        .env("KUBECONFIG", kubeconfig);
    Daemon::start("kueue", command, health, dir.join("kueue.log")).await
}

/// A key and a certificate for 127.0.0.1 valid for two days, by openssl.
fn self_signed(dir: &Path) -> Result<(), Error> {
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(dir.join("tls.key"))
        .arg("-out")
        .arg(dir.join("tls.crt"))
        .stdin(Stdio::null())
        .output()
        .map_err(io_err("openssl"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Setup(format!(
            "openssl req (Kueue's certificate) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_certificate_for_loopback() {
        let dir = tempfile::tempdir().unwrap();
        self_signed(dir.path()).unwrap();
        let cert = std::fs::read_to_string(dir.path().join("tls.crt")).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(dir.path().join("tls.key").exists());
    }
}
