# shellcheck shell=bash
# lib/common.sh - sourced by cluster.sh (first): the paths and fixed values every part uses,
# logging, polling with a deadline, telling our daemons' pids from anybody else's, and the
# kubectl/ctr wrappers for this cluster.

CACHE=${CRUCIBLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/crucible}
LAB=${CRUCIBLE_LAB:-/var/lib/crucible-local}
NODE=${CRUCIBLE_NODE:-crucible-local}

# The releases are the require lines of ../gomod/*/go.mod (the one place each is named).
GOMOD=$INFRA_DIR/local/gomod
gomod_version() { awk -v m="$2" '$1 == "require" && $2 == m {sub(/^v/, "", $3); print $3}' "$GOMOD/$1/go.mod"; }
K8S_VERSION=$(gomod_version kubernetes k8s.io/kubernetes)
ETCD_VERSION=$(gomod_version etcd go.etcd.io/etcd/server/v3)
CTRD_VERSION=$(gomod_version containerd github.com/containerd/containerd/v2)
# Clients and test tools, built like the cluster (`cluster.sh tool NAME` prints the path).
PROM_VERSION=$(gomod_version prometheus github.com/prometheus/prometheus)
HELM_VERSION=$(gomod_version helm helm.sh/helm/v4)
KROUTER_VERSION=$(gomod_version kube-router github.com/cloudnativelabs/kube-router/v2)
KUEUE_VERSION=$(gomod_version kueue sigs.k8s.io/kueue)
K8S=$CACHE/k8s-$K8S_VERSION
BIN=$K8S/bin
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION/bin
CTRD_BIN=$CACHE/containerd-$CTRD_VERSION/bin
PROM_BIN=$CACHE/prometheus-$PROM_VERSION/bin
HELM_BIN=$CACHE/helm-$HELM_VERSION/bin
KROUTER_BIN=$CACHE/kube-router-$KROUTER_VERSION/bin
KUEUE_BIN=$CACHE/kueue-$KUEUE_VERSION/bin
KUEUE_CRDS=$CACHE/kueue-$KUEUE_VERSION/crds   # its CRDs, from the module cache
# Our own program (gomod/gitops-health): cached by a digest of its source, so an edit rebuilds it.
GITOPS_HEALTH_BIN=$CACHE/gitops-health-$(cat "$GOMOD"/gitops-health/{go.mod,go.sum,main.go} | sha256sum | cut -c1-12)/bin
RUNSC_DIR=$CACHE/runsc     # runsc's Debian package, unpacked (see package in it)
IMAGES=$CACHE/images
KUBECTL=$BIN/kubectl
KUBECONFIG_PATH=$LAB/kubeconfig
RUN=$LAB/run
LOGS=$LAB/logs

NODE_IP=10.88.0.1          # lives on the CNI bridge labbr0 (no dummy links in this kernel)
BRIDGE=labbr0
POD_CIDR=10.88.0.0/24
SVC_CIDR=10.96.0.0/12
CTRD_STATE=/run/containerd
CTRD_SOCK=$CTRD_STATE/containerd.sock
PAUSE_IMAGE=localhost/crucible/pause:k8s-$K8S_VERSION   # build/pause/linux/pause.c of that release
PY_IMAGE=localhost/crucible/python:3.11
# the agent image: PY_IMAGE plus the official `openai` SDK (and its dependencies) from PyPI, one
# layer more; what runs with models use in the examples and the models e2e test
OPENAI_VERSION=3.51.0
AGENT_IMAGE=localhost/crucible/python-openai:3.11

COMPONENTS=(etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-router kube-proxy)

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND every 0.2 s until it succeeds
wait_for() {
  local what=$1 secs=$2 deadline; shift 2
  deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { log "TIMEOUT after ${secs}s waiting for $what"; return 1; }
    sleep 0.2
  done
  log "$what: ok"
}

# ---------------------------------------------------------------------------------------------
# processes: every daemon is started with setsid, its pid recorded in $RUN/NAME.pid. A pid only
# counts as ours if it is alive, its argv[0] is the expected binary and its command line
# mentions $LAB (each daemon gets a config or data path under $LAB).
argv0() { { tr '\0' '\n' <"/proc/$1/cmdline"; } 2>/dev/null | head -n1; }
cmdline() { { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null; }
bin_of() {
  case "$1" in
    etcd) echo "$ETCD_BIN/etcd" ;;
    containerd) echo "$CTRD_BIN/containerd" ;;
    kube-router) echo "$KROUTER_BIN/kube-router" ;;
    *) echo "$BIN/$1" ;;
  esac
}
daemon_pid() {   # prints the pid of component $1 if it is running and ours
  local f=$RUN/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [[ $pid =~ ^[0-9]+$ ]] && [ -d "/proc/$pid" ] || return 1
  [ "$(argv0 "$pid")" = "$(bin_of "$1")" ] || return 1
  [[ $(cmdline "$pid") == *"$LAB"* ]] || return 1
  echo "$pid"
}
alive() { daemon_pid "$1" >/dev/null; }


# pids (other than this script) whose command line contains $1
pids_matching() {
  local p c
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = $$ ] || [ "$p" = "$BASHPID" ] && continue
    c=$(cmdline "$p") || continue
    [[ $c == *"$1"* ]] && echo "$p"
  done
  return 0
}

kill_pids() {   # kill_pids LABEL PID...: SIGTERM, poll up to 10 s, SIGKILL the rest
  local label=$1 p deadline left; shift
  [ $# = 0 ] && return 0
  log "stopping $# leftover $label process(es)"
  kill "$@" 2>/dev/null || true
  deadline=$(( $(date +%s) + 10 ))
  while :; do
    left=(); for p in "$@"; do [ -d "/proc/$p" ] && left+=("$p"); done
    [ ${#left[@]} = 0 ] && return 0
    [ "$(date +%s)" -lt "$deadline" ] || break
    sleep 0.2
  done
  kill -9 "${left[@]}" 2>/dev/null || true
}

kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
ctr_() { "$CTRD_BIN/ctr" --address "$CTRD_SOCK" "$@"; }
