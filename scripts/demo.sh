#!/usr/bin/env bash
# The demo: a local Kubernetes + gVisor cluster, the CRDs, the controller, every example in
# namespace crucible-demo, and `kubectl get evaluations` once they have finished.
#
#   sudo bash scripts/demo.sh        # everything above; leaves cluster and controller running
#   sudo bash scripts/demo.sh down   # stops the controller and the cluster
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
NS=crucible-demo
KUBECTL=("$CLUSTER" kubectl)

if [ "${1:-}" = down ]; then
  stop_controller
  "$CLUSTER" down
  exit 0
fi

ensure_toolchain
"$CLUSTER" up
apply_crds
bash examples/git-repo/publish.sh >/dev/null
start_controller
"${KUBECTL[@]}" create namespace "$NS" --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f - >/dev/null
"${KUBECTL[@]}" -n "$NS" apply -f examples/evaluations/
log "waiting for the evaluations to finish"
deadline=$((SECONDS + 300))
while :; do
  phases=$("${KUBECTL[@]}" -n "$NS" get evaluations -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}')
  pending=$(echo "$phases" | grep -cvE '^(Succeeded|Failed|TimedOut|Cancelled)$' || true)
  [ "$pending" = 0 ] && break
  [ $SECONDS -lt $deadline ] || { echo "still running after 5 minutes:"; break; }
  sleep 2
done
"${KUBECTL[@]}" -n "$NS" get evaluations -o wide
echo
"${KUBECTL[@]}" -n "$NS" get evaluationsuites,evaluationquotas
cat <<MSG

Explore:  eval "\$($CLUSTER env)"; kubectl -n $NS get evaluation arithmetic -o yaml
          kubectl -n $NS describe evaluation timeout
Stop:     sudo bash scripts/demo.sh down
MSG
