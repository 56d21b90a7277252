//! LiteLLM's proxy, the baseline most labs would put where the gateway is: installed into the
//! tools cache by `bench/litellm/install.sh` and started with `bench/litellm/config.yaml` in
//! front of the same stand-in providers. Both files are built into the benchmark, so it runs
//! from any directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::procs::{Process, free_port, write};

const INSTALL: &str = include_str!("../../litellm/install.sh");
const CONFIG: &str = include_str!("../../litellm/config.yaml");
/// What callers present to it (its master key).
pub const KEY: &str = "sk-bench-litellm";
/// Its imports alone take seconds; on a busy machine, many.
const STARTUP: Duration = Duration::from_secs(120);

/// The `litellm` command, installed first when missing (its progress on our stderr).
pub fn install() -> Result<PathBuf, String> {
    let output = Command::new("bash")
        .arg("-c")
        .arg(INSTALL)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run bash for LiteLLM's install: {e}"))?;
    let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || path.is_empty() {
        return Err(format!(
            "LiteLLM's proxy could not be installed (bench/litellm/install.sh: {}); \
             its output is above",
            output.status
        ));
    }
    Ok(PathBuf::from(path))
}

/// The environment its configuration reads.
pub struct Upstreams<'a> {
    /// The stand-in provider, up to `/v1`.
    pub provider: &'a str,
    /// The slow stand-in (the memory step), up to `/v1`.
    pub slow_provider: &'a str,
    /// The providers' key.
    pub provider_key: &'a str,
}

/// LiteLLM's proxy listening on a free port of 127.0.0.1, with one worker and no database;
/// its log in `dir`.
pub async fn start(
    litellm: &Path,
    dir: &Path,
    upstreams: &Upstreams<'_>,
) -> Result<(Process, SocketAddr), String> {
    let config = write(dir, "litellm.yaml", CONFIG)?;
    let addr = free_port()?;
    let mut command = Command::new(litellm);
    command
        .arg("--config")
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--num_workers", "1"])
        .env("BENCH_PROVIDER_BASE", upstreams.provider)
        .env("BENCH_SLOW_PROVIDER_BASE", upstreams.slow_provider)
        .env("BENCH_PROVIDER_KEY", upstreams.provider_key)
        .env("BENCH_LITELLM_KEY", KEY)
        // Its own copy of the model price list, not a download at start (no network here).
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("LITELLM_LOG", "ERROR")
        .env_remove("DATABASE_URL");
    let mut process = Process::spawn("LiteLLM's proxy", &mut command, dir.join("litellm.log"))?;
    process.wait_listening(addr, STARTUP).await?;
    Ok((process, addr))
}
