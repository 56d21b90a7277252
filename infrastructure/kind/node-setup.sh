#!/bin/bash
# node-setup.sh [CLUSTER]: install gVisor (runsc + containerd-shim-runsc-v1) into every node
# container of a kind cluster created with kind-config.yaml, then restart containerd there.
#
# The binaries come from gVisor's official release bucket (the same files its apt repository
# ships), are downloaded once on this host, checked against their published SHA-512 sums and
# copied into the nodes with `docker cp` (kind node images have no curl/gpg to spare).
#   GVISOR_RELEASE  release to install, e.g. 20250512.0 (default: latest)
#   DOCKER          container CLI (default: docker; `podman` works too)
set -euo pipefail
CLUSTER=${1:-crucible}
RELEASE=${GVISOR_RELEASE:-latest}
DOCKER=${DOCKER:-docker}
ARCH=$(uname -m)   # x86_64 or aarch64, as in gVisor's bucket layout
if [ "$RELEASE" = latest ]; then
  URL=https://storage.googleapis.com/gvisor/releases/release/latest/$ARCH
else
  URL=https://storage.googleapis.com/gvisor/releases/release/$RELEASE/$ARCH
fi

command -v kind >/dev/null || { echo "kind not found" >&2; exit 1; }
mapfile -t NODES < <(kind get nodes --name "$CLUSTER")
[ ${#NODES[@]} -gt 0 ] || { echo "no nodes for kind cluster '$CLUSTER'" >&2; exit 1; }

TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
(cd "$TMP"
 for f in runsc containerd-shim-runsc-v1; do
   curl -fsSLO "$URL/$f"; curl -fsSLO "$URL/$f.sha512"
 done
 sha512sum -c runsc.sha512 containerd-shim-runsc-v1.sha512
 chmod 0755 runsc containerd-shim-runsc-v1)

# runsc flags per handler (the shim turns `key = "value"` under [runsc_config] into --key=value)
cat >"$TMP/runsc.toml" <<'TOML'
[runsc_config]
  network = "none"
TOML
cat >"$TMP/runsc-net.toml" <<'TOML'
[runsc_config]
  network = "sandbox"
TOML

for node in "${NODES[@]}"; do
  echo "== $node"
  "$DOCKER" cp "$TMP/runsc" "$node:/usr/local/bin/runsc"
  "$DOCKER" cp "$TMP/containerd-shim-runsc-v1" "$node:/usr/local/bin/containerd-shim-runsc-v1"
  "$DOCKER" cp "$TMP/runsc.toml" "$node:/etc/containerd/runsc.toml"
  "$DOCKER" cp "$TMP/runsc-net.toml" "$node:/etc/containerd/runsc-net.toml"
  "$DOCKER" exec "$node" systemctl restart containerd
  "$DOCKER" exec "$node" runsc --version | head -n1
done
echo "gVisor installed on ${#NODES[@]} node(s); now: kubectl apply -f $(dirname "$0")/runtimeclasses.yaml"
