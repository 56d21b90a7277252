#!/usr/bin/env bash
# The whole test suite, cheapest first: formatting, clippy, unit + mock-API + drift + example
# tests, checks of the cluster scripts and the Argo CD health check, then the end-to-end tier
# against a real local Kubernetes + gVisor cluster (started here, stopped at the end even on
# failure): the README's demo (scripts/demo.sh, every example's `# expect:` checked), the
# kubectl's strict field validation of every example and explain of every field, the sandbox
# canary, every example, sandbox, network, the attack battery, lifecycle, quota, suites, the
# Grafana dashboard against Prometheus, git, emergency stop, leader failover, and the Helm chart
# installed and tested (Helm 4).
#
#   sudo bash scripts/test.sh
#
# CRUCIBLE_KEEP_CLUSTER=1 leaves a cluster this script started running afterwards.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_toolchain

started_cluster=0
cleanup() {
  local rc=$?
  stop_controller
  stop_prometheus
  if [ -n "${S3_DIR:-}" ]; then
    kill -- -"$s3_up" 2>/dev/null || true   # a build still running
    bash infrastructure/local/s3.sh down || rc=1
    rm -rf "$S3_DIR"
  fi
  if [ "$started_cluster" = 1 ] && [ -z "${CRUCIBLE_KEEP_CLUSTER:-}" ]; then
    log "stopping the local cluster"
    "$CLUSTER" down || rc=1
  fi
  exit $rc
}
trap cleanup EXIT

# The S3-compatible server the e2e tier stores samples in (SeaweedFS, infrastructure/local/s3.sh;
# bound to 127.0.0.1, data in a directory of this run). Its first build takes minutes, so it
# builds while the Rust checks run.
S3_DIR=$(mktemp -d /tmp/crucible-s3.XXXXXX)
export CRUCIBLE_S3_DIR=$S3_DIR
setsid bash infrastructure/local/s3.sh up >"$S3_DIR/up.log" 2>&1 &
s3_up=$!

log "cargo fmt --check"
cargo fmt --all -- --check
log "import layers (scripts/imports.py)"
python3 scripts/imports.py --check
log "cargo clippy"
cargo clippy --workspace --all-targets --features crucible-e2e/e2e -- -D warnings
log "cargo test (unit, mock API server, CRD drift, examples)"
cargo test --workspace
log "cluster script checks"
bash infrastructure/local/selftest.sh
log "Argo CD health check cases (gopher-lua, as Argo CD runs them)"
bash infrastructure/gitops/test.sh

if ! "$CLUSTER" status >/dev/null 2>&1; then
  started_cluster=1
  log "starting the local cluster (a cold start builds Kubernetes: ~10-15 min)"
  "$CLUSTER" up
fi
log "the README's demo, as a new user runs it (checks every example's '# expect:' line)"
bash scripts/demo.sh
stop_controller
"$CLUSTER" kubectl delete namespace crucible-demo --wait=false >/dev/null
log "kubectl of the cluster's release: every example applied with --validate=strict, explain shows every field"
python3 scripts/clients.py
# crucible run: examples, hostile results, forgery, sandbox (runsc, no cluster); the cluster's runsc
# when none is installed (a fresh machine has only the one `up` unpacked)
command -v runsc >/dev/null || PATH=$(dirname "$("$CLUSTER" tool runsc)"):$PATH
cargo build -q -p crucible --bin crucible; CRUCIBLE_BIN=$ROOT/target/debug/crucible cargo test -p crucible-e2e --features e2e --test local
log "sandbox canary with its own controller (no other controller may run meanwhile)"
KUBECONFIG=$("$CLUSTER" kubeconfig) CRUCIBLE_BIN=$ROOT/target/debug/crucible \
  cargo test -p crucible-e2e --features e2e --test canary
log "restarts while a retry is pending and while samples wait, with controllers of its own (no other controller may run meanwhile)"
KUBECONFIG=$("$CLUSTER" kubeconfig) CRUCIBLE_BIN=$ROOT/target/debug/crucible CRUCIBLE_SYSTEM_NAMESPACE=crucible-system \
  cargo test -p crucible-e2e --features e2e --test restart -- --test-threads=1
log "a node lost under a deleted run's pod: the kubelet stops, the slot is freed at the pod's release time"
KUBECONFIG=$("$CLUSTER" kubeconfig) CRUCIBLE_BIN=$ROOT/target/debug/crucible CRUCIBLE_SYSTEM_NAMESPACE=crucible-system \
  CRUCIBLE_CLUSTER=$CLUSTER cargo test -p crucible-e2e --features e2e --test lostnode
log "models: an agent calls its model through the gateway (a pod behind its Service) and reaches nothing else; the dashboard's usage panels against a Prometheus of its own"
KUBECONFIG=$("$CLUSTER" kubeconfig) CRUCIBLE_BIN=$ROOT/target/debug/crucible CRUCIBLE_SYSTEM_NAMESPACE=crucible-system \
  CRUCIBLE_PROMETHEUS_BIN=$("$CLUSTER" tool prometheus) cargo test -p crucible-e2e --features e2e --test models
log "the results store's S3 server (SeaweedFS)"
wait "$s3_up" || { cat "$S3_DIR/up.log" >&2; die "infrastructure/local/s3.sh up failed"; }
eval "$(bash infrastructure/local/s3.sh env)"   # AWS_* for the controller, the tests and the store
cargo test -p crucible --lib store:: -- --ignored
start_controller --leader-election --system-namespace crucible-system --follow-interval 3s \
  --results-store s3://crucible-results/e2e
start_prometheus
log "end-to-end tests (Prometheus scrapes the controller for the dashboard test)"
export KUBECONFIG=$("$CLUSTER" kubeconfig) CRUCIBLE_E2E_CONTROLLER_LOG=$CONTROLLER_LOG
export CRUCIBLE_E2E_PROMETHEUS=127.0.0.1:$PROMETHEUS_PORT CRUCIBLE_E2E_RESULTS_STORE=s3://crucible-results/e2e
CRUCIBLE_E2E_CONTROLLER_PID=$(cat "$CONTROLLER_PID")
export CRUCIBLE_E2E_CONTROLLER_PID
cargo test -p crucible-e2e --features e2e --test e2e -- --test-threads=3 --skip battery::every_attack
log "attack battery (alone: its pods together take most of the node's 2 cores)"
cargo test -p crucible-e2e --features e2e --test e2e -- battery::every_attack
cat target/tmp/attack-battery.txt
log "emergency stop of everything (runs alone)"
CRUCIBLE_BIN=$ROOT/target/debug/crucible CRUCIBLE_SYSTEM_NAMESPACE=crucible-system \
  cargo test -p crucible-e2e --features e2e --test stop_all
log "leader election failover (kills the controller started above)"
CRUCIBLE_BIN=$ROOT/target/debug/crucible CRUCIBLE_E2E_CONTROLLER_PID=$(cat "$CONTROLLER_PID") \
  CRUCIBLE_SYSTEM_NAMESPACE=crucible-system cargo test -p crucible-e2e --features e2e --test failover
log "Helm chart (Helm 4): lint, render + validate for 1.20, install + helm test + uninstall"
bash charts/test.sh --cluster --binary "$ROOT/target/debug/crucible"  # the debug build the e2e tier ran: no release build in CI
log "all tests passed"
