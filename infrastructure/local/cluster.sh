#!/bin/bash
# cluster.sh - a local single-node Kubernetes cluster (the release: gomod/kubernetes/go.mod) whose
# pods can run under gVisor: Kubernetes, etcd and containerd built from the Go module proxy,
# everything else from Debian bookworm packages (no Docker, no container registry). Needs root,
# bash, cgroup v1 (hybrid is fine), bridge/veth/overlayfs.
# See README.md next to this file for what it does and why.
#
# Usage: cluster.sh SUBCOMMAND
#   up                 install packages, build (or reuse) binaries and images, start everything,
#                      wait until the node is Ready and the default service account exists.
#                      Idempotent: a second `up` is a quick no-op.
#   down               stop everything (pods included), restore the host settings, remove the
#                      runtime state. Keeps the cache of binaries and image tarballs. Idempotent.
#   status             one line per component and the node's readiness; exit 1 if anything is down
#   logs [COMPONENT]   tail of the daemon logs (all components if none is named; LINES=50)
#   kubeconfig         print the kubeconfig path
#   kubectl ARGS...    run the built kubectl with the cluster's kubeconfig
#   image              build only the evaluation image localhost/crucible/python:3.11 into the
#                      cache (what `crucible run` needs; no Kubernetes build, no cluster)
#   import-image TAR   import an OCI/docker archive into containerd's k8s.io namespace
#   env                print `export KUBECONFIG=...; export PATH=...` for eval "$(cluster.sh env)"
#   tool NAME          build (once, cached) and print the path of prometheus, helm, kube-router,
#                      gitops-health, kueue, or runsc (the cluster's, unpacked from Debian)
#   stop-kubelet       stop only the kubelet (a lost node, for tests); `up` starts it again
#
# Environment (all optional):
#   CRUCIBLE_CACHE   kept across `down`: ${XDG_CACHE_HOME:-$HOME/.cache}/crucible
#                      k8s-<v>/bin etcd-<v>/bin containerd-<v>/bin  binaries built with Go
#                      runsc/ gocache/ apt/    runsc's Debian package unpacked, Go build cache,
#                                              private apt lists (bookworm-backports)
#                      images/{pause-k8s-<v>,python}.tar   image tarballs (docker-archive)
#   CRUCIBLE_LAB     runtime state, removed by `down`: /var/lib/crucible-local
#                      pki/ kubeconfig etc/ bin/ data/etcd containerd/ kubelet/ cni/ logs/ run/
#   CRUCIBLE_NODE    node name (crucible-local)
#   LINES            lines per log for `logs` (50)
# Fixed: node IP 10.88.0.1 on bridge labbr0, pod CIDR 10.88.0.0/24, services 10.96.0.0/12,
# API server https://127.0.0.1:6443, containerd socket /run/containerd/containerd.sock.
# Layout: this file only dispatches; the work is in lib/, sourced in this order:
#   lib/common.sh    paths and fixed values, log/die/wait_for, daemon pids, kubectl/ctr wrappers
#   lib/build.sh     packages, runsc, Go, go build of Kubernetes, etcd and containerd (gomod/)
#   lib/images.sh    pause and python images, their import, `import-image`
#   lib/host.sh      recording, preparing and restoring the host (sysctls, iptables, paths,
#                    mounts, bridge)
#   lib/config.sh    PKI, kubeconfigs, containerd/CNI/kubelet configuration
#   lib/daemons.sh   starting/stopping daemons and pods; up, down, status, logs, env
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INFRA_DIR=$(dirname "$SCRIPT_DIR")
# shellcheck source=lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"
# shellcheck source=lib/build.sh
. "$SCRIPT_DIR/lib/build.sh"
# shellcheck source=lib/images.sh
. "$SCRIPT_DIR/lib/images.sh"
# shellcheck source=lib/host.sh
. "$SCRIPT_DIR/lib/host.sh"
# shellcheck source=lib/config.sh
. "$SCRIPT_DIR/lib/config.sh"
# shellcheck source=lib/daemons.sh
. "$SCRIPT_DIR/lib/daemons.sh"

usage() { sed -n '8,25p' "$0" | sed 's/^# \{0,1\}//'; }

main() {
  local sub=${1:-}; [ $# -gt 0 ] && shift
  case "$sub" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    kubeconfig) echo "$KUBECONFIG_PATH" ;;
    kubectl) [ -x "$KUBECTL" ] || die "$KUBECTL not built yet; run '$0 up'"; exec "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@" ;;
    image) cmd_image ;;
    import-image) cmd_import_image "$@" ;;
    env) print_env ;;
    tool) [ $# = 1 ] || die "usage: $0 tool prometheus|helm|kube-router|gitops-health|kueue|runsc"; tool_path "$1" ;;
    stop-kubelet) need_root; stop_daemon kubelet ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
