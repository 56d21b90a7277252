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

# The JSONPath of each key an example's `# expect:` line may state, by kind.
field() {
  case "$1:$2" in
    Evaluation:phase|EvaluationSuite:phase) echo '{.status.phase}' ;;
    Evaluation:passed) echo '{.status.result.passed}' ;;
    Evaluation:reason) echo '{.status.reason}' ;;
    EvaluationSuite:total|EvaluationSuite:succeeded|EvaluationSuite:failed) echo "{.status.$2}" ;;
    EvaluationQuota:maxRunning) echo '{.spec.maxRunning}' ;;
    *) return 1 ;;
  esac
}

# Every example's `# expect:` line against the live object (a suite's counts may trail its last
# child by a moment: each object gets 60 s to agree). Exits non-zero on any difference, so CI,
# which runs this demo, fails when the README's first command stops doing what it says.
check_expectations() {
  local file line kind name pair key want path got wrong=0 deadline
  for file in examples/evaluations/*.yaml; do
    line=$(sed -n 's/^# expect: *//p' "$file" | head -n1)
    [ -n "$line" ] || continue
    kind=$(sed -n 's/^kind: *//p' "$file" | head -n1)
    name=$(awk '/^metadata:/ {m=1; next} m && /^  name:/ {print $2; exit}' "$file")
    deadline=$((SECONDS + 60))
    for pair in $line; do
      key=${pair%%=*} want=${pair#*=}
      [ "$key" = kind ] && continue
      path=$(field "$kind" "$key") || { echo "$file: cannot check '$key'"; wrong=1; continue; }
      while :; do
        got=$("${KUBECTL[@]}" -n "$NS" get "${kind,,}" "$name" -o "jsonpath=$path" 2>/dev/null || true)
        [ "$got" = "$want" ] || [ $SECONDS -ge $deadline ] && break
        sleep 1
      done
      [ "$got" = "$want" ] || { echo "$file: $kind/$name $key is '$got', expected '$want'"; wrong=1; }
    done
  done
  [ "$wrong" = 0 ] || die "an example did not reach the outcome its '# expect:' line states"
  log "every example reached the outcome its '# expect:' line states"
}

# What Flux (kstatus) and Argo CD (health.lua under gopher-lua) say of the finished examples,
# computed by the code they run (infrastructure/gitops/README.md): it must agree with each
# example's `# expect:` line, and nothing finished may read as still in progress.
check_gitops_health() {
  local checker
  checker=$("$CLUSTER" tool gitops-health)
  "${KUBECTL[@]}" -n "$NS" get evaluations,evaluationsuites -o json \
    | "$checker" live infrastructure/gitops/argocd/health.lua examples/evaluations \
    || die "Flux's or Argo CD's health of an example disagrees with its '# expect:' line"
  log "kstatus and Argo CD's health.lua agree with every example's '# expect:' line"
}

if [ "${1:-}" = down ]; then
  stop_controller
  "$CLUSTER" down
  exit 0
fi

ensure_toolchain
"$CLUSTER" up
apply_crds
bash examples/git-repo/publish.sh >/dev/null
# Runs' samples go to a results store on this machine (docs/samples.md)
start_controller --results-store "file://$LAB/results"
"${KUBECTL[@]}" create namespace "$NS" --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f - >/dev/null
# Pod Security admission enforces `restricted`: the examples' pods are admitted under it
"${KUBECTL[@]}" label namespace "$NS" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
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
echo
check_expectations
check_gitops_health
cat <<MSG

Explore:  eval "\$($CLUSTER env)"; kubectl -n $NS get evaluation arithmetic -o yaml
          kubectl -n $NS describe evaluation timeout
          target/debug/crucible samples samples-arithmetic -n $NS --failed
Stop:     sudo bash scripts/demo.sh down
MSG
