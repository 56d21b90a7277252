# shellcheck shell=bash
# Shared steps of scripts/demo.sh and scripts/test.sh: toolchain, CRDs, the controller process.
# Sourced, not run.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER="$ROOT/infrastructure/local/cluster.sh"
LAB=${CRUCIBLE_LAB:-/var/lib/crucible-local}
CONTROLLER_PID=$LAB/run/crucible-controller.pid
CONTROLLER_LOG=$LAB/logs/crucible-controller.log
# Port of the controller's /metrics, /healthz and /readyz when run from these scripts.
CONTROLLER_PORT=${CRUCIBLE_CONTROLLER_PORT:-18080}
# Prometheus (built by `cluster.sh tool prometheus`) scraping that port in the e2e tier.
PROMETHEUS_PORT=${CRUCIBLE_PROMETHEUS_PORT:-19090}
PROMETHEUS_PID=$LAB/run/prometheus.pid
PROMETHEUS_DIR=$LAB/prometheus
# kube 5 needs Rust 1.89 or newer.
MIN_RUST_MINOR=89

log() { echo "[$(date +%T)] $*"; }
die() { echo "error: $*" >&2; exit 1; }

# Makes sure a recent enough Rust toolchain and the C toolchain (for -sys crates) are present.
ensure_toolchain() {
  [ "$(id -u)" = 0 ] || die "run as root: the local cluster needs it"
  # gcc for -sys crates, libssl-dev + pkg-config for git2's https transport.
  local packages=(gcc libc6-dev pkg-config libssl-dev curl ca-certificates git make)
  local missing=() p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  local minor
  minor=$(cargo --version 2>/dev/null | sed -n 's/^cargo 1\.\([0-9]*\).*/\1/p')
  if [ -z "$minor" ] || [ "$minor" -lt "$MIN_RUST_MINOR" ]; then
    # Debian bookworm's rustc (1.63) is too old for kube 5; rustup is the standard installer.
    log "installing Rust with rustup (needs cargo >= 1.$MIN_RUST_MINOR)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
      --component rustfmt,clippy || die "cannot install Rust; install cargo >= 1.$MIN_RUST_MINOR yourself"
    . "$HOME/.cargo/env"
  fi
}

# Applies the generated CRDs and waits until the API server serves them.
apply_crds() {
  "$CLUSTER" kubectl apply -f "$ROOT/crds/" >/dev/null
  "$CLUSTER" kubectl wait --for condition=established --timeout=60s crd/evaluations.crucible.dev >/dev/null
}

controller_running() {
  [ -f "$CONTROLLER_PID" ] && kill -0 "$(cat "$CONTROLLER_PID")" 2>/dev/null \
    && grep -q crucible "/proc/$(cat "$CONTROLLER_PID")/cmdline" 2>/dev/null
}

# Builds and starts the controller against the local cluster, in the background, with any
# extra flags given; waits for /readyz (caches synced), then for the sandbox canary to verify
# the gvisor RuntimeClass (runs wait for it). file:// git URLs are allowed: the examples'
# repository is published on this machine (examples/git-repo/publish.sh). The canary listens on
# the bridge address and proves the Allowlist class too (kube-router enforces NetworkPolicy).
# The canary pods run `crucible canary-probe` from the controller's image (--canary-image,
# default localhost/crucible/controller:dev): the debug binary just built is packaged as that
# image and imported into the node's containerd, so the probe is always this build's.
start_controller() {
  (cd "$ROOT" && cargo build -q -p crucible --bin crucible)
  import_controller_image
  stop_controller
  mkdir -p "$(dirname "$CONTROLLER_PID")" "$(dirname "$CONTROLLER_LOG")"
  log "starting the controller (log: $CONTROLLER_LOG)"
  KUBECONFIG=$("$CLUSTER" kubeconfig) setsid "$ROOT/target/debug/crucible" controller \
    --metrics-addr "127.0.0.1:$CONTROLLER_PORT" --log-filter "info,crucible=debug,kube=warn" \
    --allow-file-git-urls --git-cache-dir "$LAB/git-cache" \
    --canary-listen-address 10.88.0.1 "$@" \
    >"$CONTROLLER_LOG" 2>&1 </dev/null &
  echo $! >"$CONTROLLER_PID"
  local deadline=$((SECONDS + 60))
  until curl -fsS "http://127.0.0.1:$CONTROLLER_PORT/readyz" >/dev/null 2>&1; do
    controller_alive || { tail -20 "$CONTROLLER_LOG" >&2; die "the controller exited"; }
    [ $SECONDS -lt $deadline ] || { tail -20 "$CONTROLLER_LOG" >&2; die "the controller is not ready after 60s"; }
    sleep 0.5
  done
  log "controller ready; waiting for the sandbox canary"
  deadline=$((SECONDS + 120))
  until curl -fsS "http://127.0.0.1:$CONTROLLER_PORT/metrics" 2>/dev/null \
      | grep -q '^crucible_sandbox_verified{runtime_class="gvisor"} 1$'; do
    controller_alive || { tail -20 "$CONTROLLER_LOG" >&2; die "the controller exited"; }
    if [ $SECONDS -ge $deadline ]; then
      grep -i canary "$CONTROLLER_LOG" | tail -5 >&2
      die "the sandbox canary did not verify gvisor within 120s"
    fi
    sleep 0.5
  done
  log "sandbox verified"
}

# The debug binary as the controller image, imported into the local cluster (build.sh keeps
# the tarball while the binary is unchanged; the import of an unchanged image is quick).
import_controller_image() {
  log "packaging target/debug/crucible as the controller image for the sandbox canary"
  bash "$ROOT/infrastructure/image/build.sh" --binary "$ROOT/target/debug/crucible" --import >/dev/null \
    || die "cannot build or import the controller image (infrastructure/image/build.sh)"
}

# The process just started is still there. Not controller_running: until the forked shell has
# exec'd the binary, its command line does not name crucible (a start reported as an exit).
controller_alive() {
  kill -0 "$(cat "$CONTROLLER_PID")" 2>/dev/null
}

stop_controller() {
  if controller_running; then
    kill "$(cat "$CONTROLLER_PID")" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while controller_running && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    controller_running && kill -9 "$(cat "$CONTROLLER_PID")" 2>/dev/null || true
  fi
  rm -f "$CONTROLLER_PID"
}

# Starts Prometheus scraping the controller's /metrics every second (TSDB in $PROMETHEUS_DIR,
# fresh each time, removed with the cluster's state), and waits for its first scrape.
start_prometheus() {
  local bin deadline
  bin=$("$CLUSTER" tool prometheus)
  stop_prometheus
  rm -rf "$PROMETHEUS_DIR"; mkdir -p "$PROMETHEUS_DIR" "$(dirname "$PROMETHEUS_PID")"
  cat >"$PROMETHEUS_DIR/prometheus.yml" <<EOF
global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: crucible
    static_configs: [{targets: ["127.0.0.1:$CONTROLLER_PORT"]}]
EOF
  log "starting Prometheus on 127.0.0.1:$PROMETHEUS_PORT (log: $PROMETHEUS_DIR/prometheus.log)"
  setsid "$bin" --config.file="$PROMETHEUS_DIR/prometheus.yml" --storage.tsdb.path="$PROMETHEUS_DIR/data" \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" >"$PROMETHEUS_DIR/prometheus.log" 2>&1 </dev/null &
  echo $! >"$PROMETHEUS_PID"
  deadline=$((SECONDS + 60))
  # ready, and the first scrape of the controller stored (target discovery takes up to 5 s)
  until curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/query?query=up%3D%3D1" 2>/dev/null | grep -q '"value"'; do
    kill -0 "$(cat "$PROMETHEUS_PID")" 2>/dev/null || { tail -20 "$PROMETHEUS_DIR/prometheus.log" >&2; die "Prometheus exited"; }
    [ $SECONDS -lt $deadline ] || die "Prometheus has not scraped the controller after 60s"
    sleep 0.5
  done
}

stop_prometheus() {
  local pid deadline
  [ -f "$PROMETHEUS_PID" ] || return 0
  pid=$(cat "$PROMETHEUS_PID")
  if grep -q prometheus "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while [ -d "/proc/$pid" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PROMETHEUS_PID"
}
