#!/bin/bash
# charts/test.sh - checks of the Helm chart in charts/crucible.
#
# Usage: bash charts/test.sh [--cluster [--no-build | --binary PATH]]
#   (always)    build helm 4 (cluster.sh tool helm) and install kubernetes-validate into
#               $CRUCIBLE_CACHE (both cached);
#               helm lint (default values, values-local.yaml); helm template with several value
#               sets, each validated offline against the Kubernetes 1.20 schemas (strict), plus
#               assertions on what was rendered (RBAC rules, leader election, PDB API version,
#               dashboard ConfigMap: charts/tests/test_render.py, one unittest per check);
#               values.schema.json must reject bad values.
#   --cluster   also, when the local cluster answers: build and import the controller image
#               (infrastructure/image/build.sh --import), `helm install` into a fresh namespace
#               chart-e2e with values-local.yaml, wait for the Deployment, `helm test`,
#               `helm uninstall`, check that nothing of the release is left, delete the namespace.
#               Needs root (image import). --no-build: use the release binary already built;
#               --binary PATH: package that binary instead (scripts/test.sh: its debug build).
# Prints `N passed, M failed` last and exits non-zero when anything failed.
#
# Tools (pinned; a second run reuses them):
#   helm 4 (infrastructure/local/gomod/helm: helm.sh/helm/v4 from the Go module proxy, `go build`
#     of cmd/helm by `cluster.sh tool helm`, cached in $CRUCIBLE_CACHE/helm-<version>/bin).
#   promql-parser==0.11.0: parses every query of the Grafana dashboard (Grafana variables replaced
#     by sample values); controller/tests/dashboard_metrics.rs checks the metric names.
#   kubernetes-validate==1.24.1: the last release whose bundled schemas reach back to 1.20 (1.25
#     and later start at 1.25). Kinds it has no schema for (CRD-backed ones such as the
#     ServiceMonitor) only print a WARN and pass; it has no flag to skip kinds, so this script
#     fails on every WARN except for the kinds in UNVALIDATED_KINDS. An API version that 1.20
#     does not serve (e.g. policy/v1 PodDisruptionBudget) is caught the same way.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART=$ROOT/charts/crucible
TESTS=$ROOT/charts/tests/test_render.py   # assertions on the rendered manifests (unittest)
CACHE=${CRUCIBLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/crucible}
TOOLS=$CACHE/tools
HELM=   # set by ensure_tools: the path `cluster.sh tool helm` prints
VENV=$TOOLS/venv
KV=$VENV/bin/kubernetes-validate
PY=$VENV/bin/python
KV_PIN='kubernetes-validate==1.24.1'
PROMQL_PIN='promql-parser==0.11.0'   # Python binding of the promql-parser crate: dashboard syntax
KUBE_VERSION=1.20.2               # what `helm template` renders for (the local cluster)
VALIDATE_VERSION=1.20.0           # schema set of kubernetes-validate
UNVALIDATED_KINDS='ServiceMonitor'  # CRD-backed kinds without a schema (space-separated)
CLUSTER="$ROOT/infrastructure/local/cluster.sh"
E2E_NS=chart-e2e
E2E_RELEASE=crucible-e2e

cluster=0 image_args=(--import) binary=${CARGO_TARGET_DIR:-$ROOT/target}/release/crucible
while [ $# -gt 0 ]; do
  case "$1" in
    --cluster) cluster=1 ;;
    --no-build) image_args+=(--no-build) ;;
    --binary)
      [ $# -ge 2 ] || { echo "--binary needs a path" >&2; exit 2; }
      binary=$2; image_args+=(--binary "$2"); shift ;;
    -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/crucible-chart-test.XXXXXX")
passed=0 failed=0 ran_tests=()
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
pass() { passed=$((passed + 1)); echo "PASS $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
finish() {
  echo "$passed passed, $failed failed"
  rm -rf "$WORK"
  [ "$failed" = 0 ]
}

# check NAME COMMAND...: PASS when COMMAND exits 0; otherwise FAIL with the tail of its output
check() {
  local name=$1 out; shift
  out=$WORK/$(echo "$name" | tr -c 'a-zA-Z0-9_.-' '_').log
  if "$@" >"$out" 2>&1; then pass "$name"; else fail "$name"; tail -n 25 "$out" | sed 's/^/    /'; fi
}

# check_fails NAME PATTERN COMMAND...: PASS when COMMAND fails and its output matches PATTERN
check_fails() {
  local name=$1 pattern=$2 out; shift 2
  out=$WORK/$(echo "$name" | tr -c 'a-zA-Z0-9_.-' '_').log
  if "$@" >"$out" 2>&1; then
    fail "$name (succeeded, should have failed)"
  elif grep -qE "$pattern" "$out"; then
    pass "$name"
  else
    fail "$name (failed without /$pattern/)"; tail -n 10 "$out" | sed 's/^/    /'
  fi
}

# ---------------------------------------------------------------------------------------------
ensure_tools() {
  HELM=$(bash "$CLUSTER" tool helm) || return 1
  "$HELM" version --short | grep -q '^v4\.' || { log "not helm 4: $("$HELM" version --short)"; return 1; }
  mkdir -p "$TOOLS"
  local stamp="$KV_PIN $PROMQL_PIN"
  if [ -x "$KV" ] && [ "$(cat "$TOOLS/.pins" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  log "installing $KV_PIN and $PROMQL_PIN into $TOOLS"
  if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV" 2>/dev/null || {
      rm -rf "$VENV"
      command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] || { log "python3 -m venv failed"; return 1; }
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$VENV"
    } || return 1
  fi
  "$PY" -m pip install -q --disable-pip-version-check "$KV_PIN" "$PROMQL_PIN" || return 1
  echo "$stamp" >"$TOOLS/.pins"
}

# ---------------------------------------------------------------------------------------------
# render NAME ARGS...: helm template for Kubernetes $KUBE_VERSION (CRDs included) -> $WORK/NAME.yaml
render() {
  local name=$1; shift
  "$HELM" template crucible "$CHART" --namespace chart-validate --kube-version "$KUBE_VERSION" \
    --include-crds "$@" >"$WORK/$name.yaml"
}

# validate FILE: kubernetes-validate --strict against 1.20; any WARN (no schema) fails unless
# the kind is listed in UNVALIDATED_KINDS
validate() {
  local file=$1 out rc warn kind
  out=$("$KV" -k "$VALIDATE_VERSION" --strict --quiet "$file" 2>&1); rc=$?
  echo "$out"
  [ "$rc" = 0 ] || return 1
  warn=$(echo "$out" | grep '^WARN' || true)
  for kind in $UNVALIDATED_KINDS; do
    warn=$(echo "$warn" | grep -v "for kind $kind with" || true)
  done
  [ -z "$warn" ] || { echo "no schema (not served by Kubernetes $VALIDATE_VERSION?): $warn"; return 1; }
}

# chart_test CLASS.METHOD: one test of charts/tests/test_render.py (assertions on the files
# render wrote, and on the dashboard); all_tests_ran checks that none was left out
chart_test() {
  ran_tests+=("$1")
  CHART_RENDERED=$WORK "$PY" "$TESTS" "$1"
}

all_tests_ran() {
  local defined
  defined=$(awk '/^class /{c = $2; sub(/[(:].*/, "", c)} /^    def test_/{m = $2; sub(/\(.*/, "", m); print c "." m}' "$TESTS" | sort)
  [ -n "$defined" ] || { echo "no tests found in $TESTS"; return 1; }
  diff <(echo "$defined") <(printf '%s\n' "${ran_tests[@]}" | sort) && echo "$(echo "$defined" | wc -l) tests"
}

offline_checks() {
  check "helm lint (default values)" "$HELM" lint --strict "$CHART"
  check "helm lint (values-local.yaml)" "$HELM" lint --strict "$CHART" -f "$CHART/values-local.yaml"

  # defaults: 2 replicas, leader election, PDB policy/v1beta1 on 1.20
  if render defaults; then
    check "defaults: kubernetes-validate $VALIDATE_VERSION --strict" validate "$WORK/defaults.yaml"
    check "defaults: ClusterRole has exactly the documented rules" chart_test Defaults.test_cluster_role
    check "defaults: namespaced Roles for the stop ConfigMap, the Lease and the self-test" chart_test Defaults.test_namespaced_roles
    check "defaults: Deployment (2 replicas, leader election, hardened, probes, downward API, canary in its image)" chart_test Defaults.test_deployment
    check "defaults: the controller's NetworkPolicy admits sandbox canaries" chart_test Defaults.test_network_policy_admits_canaries
    check "defaults: the controller's NetworkPolicy admits sandbox pods' network gate" chart_test Defaults.test_network_policy_admits_the_network_gate_of_sandbox_pods
    check "defaults: PodDisruptionBudget is policy/v1beta1 on Kubernetes 1.20" chart_test Defaults.test_pdb_v1beta1
    check "defaults: no ServiceMonitor, RuntimeClass or dashboard ConfigMap" chart_test Defaults.test_no_optional_objects
  else
    fail "helm template (defaults)"
  fi

  if render v125 --kube-version 1.25.0; then
    check "Kubernetes 1.25: PodDisruptionBudget is policy/v1" chart_test Kube125.test_pdb_v1
  else
    fail "helm template (--kube-version 1.25.0)"
  fi

  # everything optional switched on
  if render optional --set serviceMonitor.enabled=true --set runtimeClasses.create=true \
       --set dashboards.enabled=true --set 'serviceMonitor.labels.release=prometheus'; then
    check "serviceMonitor+runtimeClasses+dashboards: kubernetes-validate $VALIDATE_VERSION --strict" validate "$WORK/optional.yaml"
    check "serviceMonitor+runtimeClasses+dashboards: objects" chart_test Optional.test_objects
  else
    fail "helm template (serviceMonitor+runtimeClasses+dashboards)"
  fi

  # the GPU RuntimeClass alone, renamed, pinned to GPU nodes
  if render gpu --set runtimeClasses.gpu.create=true --set controller.gpuRuntimeClass=gvisor-gpu \
       --set-string 'runtimeClasses.gpu.scheduling.nodeSelector.nvidia\.com/gpu\.present=true'; then
    check "runtimeClasses.gpu: kubernetes-validate $VALIDATE_VERSION --strict" validate "$WORK/gpu.yaml"
    check "runtimeClasses.gpu: one nvproxy RuntimeClass, named as the controller uses it" chart_test Gpu.test_gpu_runtime_class
  else
    fail "helm template (runtimeClasses.gpu)"
  fi
  check_fails "schema rejects runtimeClasses.gpu.handler: Runsc_NV" 'handler' \
    "$HELM" template crucible "$CHART" --set runtimeClasses.gpu.handler=Runsc_NV

  # one replica: no leader election, Recreate, no PDB, no Lease Role
  if render single --set replicaCount=1 --set rbac.readSecrets=false --set 'controller.namespaces={team-a,team-b}' \
       --set controller.maxCpu=8 --set controller.maxMemory=16Gi --set controller.maxGpu=0; then
    check "replicaCount 1: kubernetes-validate $VALIDATE_VERSION --strict" validate "$WORK/single.yaml"
    check "replicaCount 1: no leader election, Recreate, no PDB, no Secrets rule, caps" chart_test Single.test_single_replica
  else
    fail "helm template (replicaCount 1)"
  fi

  # a results store on a claim, with a Secret for the environment
  if render results --set controller.resultsStore.url=file:///var/lib/crucible/results \
       --set controller.resultsStore.existingClaim=crucible-results \
       --set controller.resultsStore.envFromSecret=crucible-s3 --set controller.samplesLogMaxBytes=8388608 \
       --set controller.resultsStore.retention=2160h; then
    check "resultsStore: kubernetes-validate $VALIDATE_VERSION --strict" validate "$WORK/results.yaml"
    check "resultsStore: URL, log budget, claim mounted, Secret as environment; none by default" chart_test ResultsStore.test_results_store
  else
    fail "helm template (resultsStore)"
  fi
  check_fails "schema rejects controller.resultsStore.retention: 90d" 'retention' \
    "$HELM" template crucible "$CHART" --set controller.resultsStore.retention=90d
  check_fails "schema rejects controller.resultsStore.url: http://x" 'url' \
    "$HELM" template crucible "$CHART" --set controller.resultsStore.url=http://x

  # watched namespaces listed: Secrets readable only there
  if render namespaced-secrets --set 'controller.namespaces={team-a,team-b}'; then
    check "controller.namespaces: kubernetes-validate $VALIDATE_VERSION --strict" validate "$WORK/namespaced-secrets.yaml"
    check "controller.namespaces: Secrets by a Role in each, none cluster-wide" chart_test NamespacedSecrets.test_secrets_only_in_watched_namespaces
  else
    fail "helm template (controller.namespaces)"
  fi

  # the sandbox canary off; configured, with the system namespace elsewhere; and (by default) in
  # the controller's image, digest included
  if render canary-off --set controller.canary.enabled=false \
     && render canary-elsewhere --set controller.systemNamespace=crucible-system \
       --set controller.canary.image=mirror.example/crucible/controller:0.1.0 --set controller.canary.listenAddress=10.0.0.7 \
       --set controller.canary.allowlist=false --set controller.canary.interval=1h \
     && render canary-digest --set image.repository=registry.example/crucible/controller \
       --set "image.digest=sha256:$(printf 'ab%.0s' {1..32})"; then
    check "canary off: kubernetes-validate $VALIDATE_VERSION --strict" validate "$WORK/canary-off.yaml"
    check "canary elsewhere: kubernetes-validate $VALIDATE_VERSION --strict" validate "$WORK/canary-elsewhere.yaml"
    check "canary off: CRUCIBLE_SANDBOX_CANARY=false, no canary ingress" chart_test Canary.test_disabled
    check "canary elsewhere: image override, address, Role and ingress in the system namespace" chart_test Canary.test_elsewhere
    check "canary digest: the canary runs the controller's image by digest" chart_test Canary.test_follows_the_controller_digest
  else
    fail "helm template (controller.canary)"
  fi
  check_fails "schema rejects controller.canary.interval: soon" 'interval' \
    "$HELM" template crucible "$CHART" --set controller.canary.interval=soon

  # a release and a namespace that YAML 1.1 reads as booleans: every name and label is quoted
  if "$HELM" template off "$CHART" --namespace yes --kube-version "$KUBE_VERSION" \
       --set serviceMonitor.enabled=true --set dashboards.enabled=true >"$WORK/bool.yaml"; then
    check "release 'off' in namespace 'yes': kubernetes-validate $VALIDATE_VERSION --strict" validate "$WORK/bool.yaml"
  else
    fail "helm template (release off, namespace yes)"
  fi

  # the model gateway with one endpoint
  if render gateway --set gateway.enabled=true --set serviceMonitor.enabled=true --set 'gateway.endpoints[0].name=stand-in' \
       --set 'gateway.endpoints[0].api=openai' --set 'gateway.endpoints[0].baseURL=http://10.88.0.1:8090/v1' \
       --set 'gateway.endpoints[0].secretRef.name=stand-in-key' --set 'gateway.endpoints[0].secretRef.key=apiKey' \
       --set 'gateway.endpoints[0].models={stand-in-small}' \
       --set 'gateway.endpoints[0].pricing.stand-in-small.inputPerMTok=1' \
       --set 'gateway.endpoints[0].pricing.stand-in-small.outputPerMTok=2'; then
    check "gateway: kubernetes-validate $VALIDATE_VERSION --strict" validate "$WORK/gateway.yaml"
    check "gateway: its own restricted Deployment, endpoints file" chart_test Gateway.test_gateway_deployment_is_restricted
    check "gateway: Service selects the gateway pods by a numeric port" chart_test Gateway.test_service_selects_the_gateway_by_a_numeric_port
    check "gateway: token key in controller and gateway only, provider key in the gateway only" chart_test Gateway.test_keys_go_where_they_are_used_only
    check "gateway: Prometheus scrapes its metrics port through a Service of its own" chart_test Gateway.test_prometheus_scrapes_the_gateway_apart_from_the_sandboxes_service
    check "gateway: the controller's NetworkPolicy lets it send revocations to the gateway" chart_test Gateway.test_controller_may_send_revocations_to_the_gateway
    check "gateway: RBAC for ModelEndpoints and the gateway's Service only" chart_test Gateway.test_controller_may_read_endpoints_and_the_gateway_service_only
  else
    fail "helm template (gateway)"
  fi
  check_fails "schema rejects gateway.endpoints[0].api: grpc" 'api' \
    "$HELM" template crucible "$CHART" --set gateway.enabled=true --set 'gateway.endpoints[0].name=x' \
      --set 'gateway.endpoints[0].api=grpc' --set 'gateway.endpoints[0].baseURL=http://x' \
      --set 'gateway.endpoints[0].secretRef.name=k' --set 'gateway.endpoints[0].secretRef.key=k' --set 'gateway.endpoints[0].models={m}'

  # the local cluster's values
  if render local -f "$CHART/values-local.yaml"; then
    check "values-local.yaml: kubernetes-validate $VALIDATE_VERSION --strict" validate "$WORK/local.yaml"
    check "values-local.yaml: hostNetwork, API server env, image Never, canary in it, Allowlist canary on" chart_test Local.test_local_cluster
  else
    fail "helm template (values-local.yaml)"
  fi

  check "dashboard: every query parses as PromQL (promql-parser)" chart_test Dashboard.test_queries_parse

  # values.schema.json rejects bad values; the templates refuse unsafe combinations
  check_fails "schema rejects replicaCount: \"two\" (helm lint)" 'replicaCount' \
    "$HELM" lint "$CHART" --set-string replicaCount=two
  check_fails "schema rejects replicaCount: \"two\" (helm template)" 'replicaCount' \
    "$HELM" template crucible "$CHART" --set-string replicaCount=two
  check_fails "schema rejects logging.format: xml" 'format' \
    "$HELM" template crucible "$CHART" --set logging.format=xml
  check_fails "schema rejects an unknown top-level key (typo)" 'replicaCont' \
    "$HELM" template crucible "$CHART" --set replicaCont=3
  check_fails "schema rejects controller.defaults.timeout: soon" 'timeout' \
    "$HELM" template crucible "$CHART" --set controller.defaults.timeout=soon
  check_fails "leaderElection.enabled=false with 2 replicas is refused" 'two replicas' \
    "$HELM" template crucible "$CHART" --set controller.leaderElection.enabled=false

  check "charts/tests/test_render.py: every test ran" all_tests_ran
}

# ---------------------------------------------------------------------------------------------
kubectl_() { bash "$CLUSTER" kubectl "$@"; }

e2e_cleanup() {
  KUBECONFIG=$KCFG "$HELM" uninstall "$E2E_RELEASE" -n "$E2E_NS" --wait >/dev/null 2>&1 || true
  kubectl_ delete namespace "$E2E_NS" --ignore-not-found --wait=true --timeout=120s >/dev/null 2>&1 || true
}

e2e_dump() {
  log "dump of $E2E_NS:"
  kubectl_ -n "$E2E_NS" get all,evaluations -o wide 2>&1 | sed 's/^/    /' >&2 || true
  kubectl_ -n "$E2E_NS" logs "deployment/$E2E_RELEASE" --tail=40 2>&1 | sed 's/^/    controller: /' >&2 || true
  kubectl_ -n "$E2E_NS" logs "$E2E_RELEASE-selftest" --tail=40 2>&1 | sed 's/^/    selftest: /' >&2 || true
  kubectl_ -n "$E2E_NS" get events --sort-by=.lastTimestamp 2>&1 | tail -n 20 | sed 's/^/    /' >&2 || true
}

# nothing of the release left in the namespace or the cluster
# The namespace's deny-all policy for sandbox pods stays: it belongs to the namespace, not to
# the release (docs/operations.md); the helm test's self-test run created it here. So does the
# leader Lease: it has no owner (owned by the leader's pod, the garbage collector deleted it under
# the replica that took over), so it goes with the namespace or by hand (docs/operations.md).
no_leftovers() {
  local left
  left=$(kubectl_ -n "$E2E_NS" get pods,configmaps,leases,roles,rolebindings,serviceaccounts,services,deployments,networkpolicies,poddisruptionbudgets,evaluations \
           -o name 2>&1 | grep -vE '^(configmap/kube-root-ca\.crt|serviceaccount/default|networkpolicy\.networking\.k8s\.io/crucible-sandbox-deny-all|lease\.coordination\.k8s\.io/crucible-controller)$' || true)
  left+=$(kubectl_ get clusterroles,clusterrolebindings -l "app.kubernetes.io/instance=$E2E_RELEASE" -o name 2>&1 || true)
  left+=$(kubectl_ get "clusterrole/$E2E_RELEASE" "clusterrolebinding/$E2E_RELEASE" -o name 2>/dev/null || true)
  if [ -n "$left" ]; then echo "left behind: $left"; return 1; fi
}

# the Lease's holder is the controller pod (leader election took it), within 30 s
lease_held_by_controller() {
  local pod holder deadline=$((SECONDS + 30))
  pod=$(kubectl_ -n "$E2E_NS" get pods -l app.kubernetes.io/component=controller -o jsonpath='{.items[0].metadata.name}')
  while [ $SECONDS -lt $deadline ]; do
    holder=$(kubectl_ -n "$E2E_NS" get lease crucible-controller -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
    [ -n "$pod" ] && [ "$holder" = "$pod" ] && { echo "holder $holder"; return 0; }
    sleep 1
  done
  echo "Lease holder '$holder', controller pod '$pod'"; return 1
}

# controller_pod_admitted [HELM ARGS...]: the Deployment's pod template as a Pod, created with a
# server-side dry run in $E2E_NS (so Pod Security admission decides, and nothing is created)
controller_pod_admitted() {
  "$HELM" template "$E2E_RELEASE" "$CHART" -n "$E2E_NS" "$@" --show-only templates/deployment.yaml \
    >"$WORK/deployment.yaml" || return 1
  "$PY" - "$WORK/deployment.yaml" >"$WORK/pod.yaml" <<'EOF' || return 1
import sys, yaml
template = yaml.safe_load(open(sys.argv[1]))["spec"]["template"]
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pod-security-check"},
       "spec": template["spec"]}
yaml.safe_dump(pod, sys.stdout)
EOF
  kubectl_ -n "$E2E_NS" create --dry-run=server -f "$WORK/pod.yaml"
}

cluster_checks() {
  KCFG=$(bash "$CLUSTER" kubeconfig)
  if ! kubectl_ get --raw /readyz >/dev/null 2>&1; then
    fail "cluster: the local cluster does not answer (sudo infrastructure/local/cluster.sh up)"
    return
  fi
  if [ "$(id -u)" != 0 ]; then fail "cluster: must run as root (image import)"; return; fi
  check "cluster: build and import the controller image" bash "$ROOT/infrastructure/image/build.sh" "${image_args[@]}"
  if ! "$binary" selftest --help >/dev/null 2>&1; then
    fail "cluster: the binary has no 'crucible selftest' (helm test cannot run)"
  fi

  trap 'e2e_cleanup' EXIT
  e2e_cleanup
  check "cluster: create namespace $E2E_NS" kubectl_ create namespace "$E2E_NS"
  # Watch only the test namespace: other controllers may be running against this cluster.
  # Leader election on (one replica: hostNetwork would clash on the metrics port), so the Lease
  # RBAC is exercised against a real API server.
  if KUBECONFIG=$KCFG "$HELM" install "$E2E_RELEASE" "$CHART" -n "$E2E_NS" -f "$CHART/values-local.yaml" \
       --set "controller.namespaces={$E2E_NS}" --set-json 'logging.filter="info,crucible=debug,kube=warn"' \
       --set controller.leaderElection.enabled=true --wait --timeout 3m >"$WORK/install.log" 2>&1; then
    pass "cluster: helm install (values-local.yaml, leader election) and Deployment ready"
  else
    fail "cluster: helm install"; tail -n 20 "$WORK/install.log" | sed 's/^/    /'; e2e_dump
    e2e_cleanup; trap - EXIT
    return
  fi
  check "cluster: rollout status" kubectl_ -n "$E2E_NS" rollout status "deployment/$E2E_RELEASE" --timeout=60s
  check "cluster: the controller pod holds the Lease $E2E_NS/crucible-controller" lease_held_by_controller
  local port
  port=$(grep -A1 'metricsPort' "$CHART/values-local.yaml" | grep -o '[0-9]\+' | head -n1)
  check "cluster: /metrics of the in-cluster controller (hostNetwork :$port) has crucible_ families" \
    bash -c "curl -fsS http://127.0.0.1:$port/metrics | grep -q '^# TYPE crucible_'"
  if KUBECONFIG=$KCFG "$HELM" test "$E2E_RELEASE" -n "$E2E_NS" --timeout 4m >"$WORK/test.log" 2>&1; then
    pass "cluster: helm test (crucible selftest)"
  else
    fail "cluster: helm test (crucible selftest)"; tail -n 20 "$WORK/test.log" | sed 's/^/    /'; e2e_dump
  fi
  # Pod Security: with default values the controller's pod passes `restricted` (values-local.yaml
  # needs hostNetwork, which no profile but `privileged` allows: this cluster has no kube-proxy)
  check "cluster: label $E2E_NS pod-security.kubernetes.io/enforce=restricted" \
    kubectl_ label namespace "$E2E_NS" pod-security.kubernetes.io/enforce=restricted
  check "cluster: restricted admits the controller pod of the default values (server dry-run)" \
    controller_pod_admitted
  check_fails "cluster: restricted refuses the controller pod of values-local.yaml (hostNetwork)" \
    'violates PodSecurity "restricted' controller_pod_admitted -f "$CHART/values-local.yaml"
  check "cluster: helm uninstall" env KUBECONFIG="$KCFG" "$HELM" uninstall "$E2E_RELEASE" -n "$E2E_NS" --wait --timeout 2m
  # pods terminate asynchronously after the Deployment is gone
  local deadline=$((SECONDS + 60))
  while kubectl_ -n "$E2E_NS" get pods -o name 2>/dev/null | grep -q . && [ $SECONDS -lt $deadline ]; do sleep 1; done
  # no_leftovers must pass without deleting anything by hand (the ownerless Lease aside)
  until no_leftovers >/dev/null 2>&1 || [ $SECONDS -ge $deadline ]; do sleep 1; done
  check "cluster: nothing of the release left after uninstall" no_leftovers
  check "cluster: delete namespace $E2E_NS" kubectl_ delete namespace "$E2E_NS" --wait=true --timeout=120s
  trap - EXIT
}

if ensure_tools >"$WORK/tools.log" 2>&1; then
  pass "tools: $("$HELM" version --short), $("$KV" --version 2>&1 | head -n1)"
  offline_checks
  [ "$cluster" = 1 ] && cluster_checks
else
  fail "tools: install helm and kubernetes-validate"; tail -n 20 "$WORK/tools.log" | sed 's/^/    /'
fi
finish
