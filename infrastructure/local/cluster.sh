#!/bin/bash
# cluster.sh - a local single-node Kubernetes 1.20.2 cluster whose pods can run under gVisor,
# built only from Debian bookworm packages (no Docker, no container registry, no downloads
# other than apt). Needs root, bash, cgroup v1 (hybrid is fine), bridge/veth/overlayfs.
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
#   kubectl ARGS...    run the built kubectl 1.20 with the cluster's kubeconfig
#   import-image TAR   import an OCI/docker archive into containerd's k8s.io namespace
#   env                print `export KUBECONFIG=...; export PATH=...` for eval "$(cluster.sh env)"
#
# Environment (all optional):
#   CRUCIBLE_CACHE   kept across `down`: ${XDG_CACHE_HOME:-$HOME/.cache}/crucible
#                      k8s-1.20.2/{src,bin,gopath,gocache}  Debian kubernetes source + binaries
#                      images/{pause,python}.tar            image tarballs (docker-archive)
#   CRUCIBLE_LAB     runtime state, removed by `down`: /var/lib/crucible-local
#                      pki/ kubeconfig etc/ bin/ data/etcd containerd/ kubelet/ cni/ logs/ run/
#   CRUCIBLE_NODE    node name (crucible-local)
#   LINES            lines per log for `logs` (50)
# Fixed: node IP 10.88.0.1 on bridge labbr0, pod CIDR 10.88.0.0/24, services 10.96.0.0/12,
# API server https://127.0.0.1:6443, containerd socket /run/containerd/containerd.sock.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INFRA_DIR=$(dirname "$SCRIPT_DIR")
CACHE=${CRUCIBLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/crucible}
LAB=${CRUCIBLE_LAB:-/var/lib/crucible-local}
NODE=${CRUCIBLE_NODE:-crucible-local}

K8S_VERSION=1.20.2
K8S_SRC_VER=1.20.5+really1.20.2-1.1+deb12u1   # Debian bookworm's kubernetes source package
K8S=$CACHE/k8s-$K8S_VERSION
BIN=$K8S/bin
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
PAUSE_IMAGE=localhost/crucible/pause:3.4.1
PY_IMAGE=localhost/crucible/python:3.11

COMPONENTS=(etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet)
PACKAGES=(golang-go make dpkg-dev rsync patch gcc libc6-dev golang-github-modern-go-reflect2-dev
          openssl curl jq iproute2 util-linux etcd-server etcd-client containerd runc runsc
          containernetworking-plugins skopeo umoci debootstrap)
# sysctls kubelet rewrites at start-up (kernel.panic=10, kernel.panic_on_oops=1,
# vm.overcommit_memory=1, ...) plus the forwarding switches the bridge CNI plugin turns on.
# Their values before the first `up` are recorded in $RUN/sysctl.orig and restored.
KUBELET_SYSCTLS=(vm.overcommit_memory=1 vm.panic_on_oom=0 kernel.panic=10 kernel.panic_on_oops=1
                 kernel.keys.root_maxkeys=1000000 kernel.keys.root_maxbytes=25000000)
CNI_SYSCTLS=(net.ipv4.ip_forward net.ipv6.conf.all.forwarding)
# host paths kubelet/containerd/CNI create outside $LAB; removed by `down` unless they existed
# (kubelet 1.20 hard-codes /var/log/pods and /var/lib/kubelet/device-plugins; libcni caches in
# /var/lib/cni; mount(8) keeps /run/mount/utab)
HOST_PATHS=(/run/containerd /run/netns /run/mount /var/log/pods /var/log/containers /var/lib/cni
            /var/lib/kubelet)

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
    etcd) echo /usr/bin/etcd ;;
    containerd) echo /usr/bin/containerd ;;
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

start_daemon() {   # start_daemon NAME ARGS...
  local name=$1 bin; bin=$(bin_of "$1"); shift
  if alive "$name"; then log "$name already running (pid $(cat "$RUN/$name.pid"))"; return 0; fi
  # In a script (no job control) a background job is not a process-group leader, so setsid
  # does not fork and $! is the daemon's pid.
  setsid "$bin" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
  log "started $name (pid $!)"
}

stop_pid() {   # stop_pid PID LABEL: SIGTERM, wait up to 20 s, then SIGKILL
  local pid=$1 label=$2 deadline
  kill "$pid" 2>/dev/null || return 0
  deadline=$(( $(date +%s) + 20 ))
  while [ -d "/proc/$pid" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
  if [ -d "/proc/$pid" ]; then kill -9 "$pid" 2>/dev/null || true; log "killed $label ($pid)"
  else log "stopped $label ($pid)"; fi
}

stop_daemon() {
  local pid
  if pid=$(daemon_pid "$1"); then stop_pid "$pid" "$1"; fi
  rm -f "$RUN/$1.pid"
}

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

# ---------------------------------------------------------------------------------------------
# up, step 1: packages
ensure_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# `apt-get source` needs a deb-src twin of the Debian "deb" entry (deb822 or one-line format)
ensure_deb_src() {
  local f=/etc/apt/sources.list.d/crucible-debian-src.sources
  if grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    return 0
  fi
  local uri="" suites="" comps="" signed=""
  if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
    # first deb822 stanza whose URIs point at a Debian mirror (not -security)
    read -r uri suites comps signed < <(awk -v RS= '{
        t = u = s = c = k = ""; n = split($0, L, "\n")
        for (i = 1; i <= n; i++) {
          v = L[i]; sub(/^[A-Za-z-]+:[ \t]*/, "", v)
          if (L[i] ~ /^Types:/) t = v
          if (L[i] ~ /^URIs:/) u = v
          if (L[i] ~ /^Suites:/) s = v
          if (L[i] ~ /^Components:/) c = v
          if (L[i] ~ /^Signed-By:/) k = v
        }
        if (t ~ /deb/ && u ~ /debian/ && u !~ /security/) {
          gsub(/ +/, ",", s); gsub(/ +/, ",", c); print u, s, c, (k == "" ? "-" : k); exit
        } }' /etc/apt/sources.list.d/*.sources) || true
  fi
  if [ -n "$uri" ]; then
    { echo "# added by crucible infrastructure/local/cluster.sh (apt-get source kubernetes)"
      echo "Types: deb-src"; echo "URIs: $uri"; echo "Suites: ${suites//,/ }"
      echo "Components: ${comps//,/ }"; [ "$signed" != - ] && echo "Signed-By: $signed"; } >"$f"
  else
    local line
    line=$(grep -hsE '^deb +(\[[^]]*\] +)?https?://[^ ]*debian[^ ]* ' /etc/apt/sources.list \
           /etc/apt/sources.list.d/*.list | grep -v security | head -n1) \
      || die "no Debian 'deb' entry found in the apt sources; add a deb-src line for bookworm"
    echo "${line/deb /deb-src }" >"${f%.sources}.list"
  fi
  log "added a deb-src entry for apt-get source ($f)"
  apt-get update -qq
}

# up, step 2: Kubernetes 1.20.2 source from Debian, patched so that Go 1.19 can build it
ensure_k8s_source() {
  [ -f "$K8S/src/.crucible-prepared" ] && return 0
  ensure_deb_src
  mkdir -p "$K8S/dl"; rm -rf "$K8S/src"
  (cd "$K8S/dl"
   apt-get source -qq --download-only "kubernetes=$K8S_SRC_VER" 2>&1 \
     || { log "kubernetes=$K8S_SRC_VER not available, trying bookworm's current kubernetes source"
          apt-get source -qq --download-only kubernetes 2>&1; }
   local dsc; dsc=$(find . -maxdepth 1 -name 'kubernetes_*.dsc' | sort | tail -n1)
   dpkg-source -x --skip-patches "$dsc" "$K8S/src" >/dev/null)
  rm -f "$K8S"/kubernetes_*.orig.tar.*   # dpkg-source's copy of dl/'s tarball
  (cd "$K8S/src"
   local p
   while read -r p; do
     case "$p" in ''|'#'*) continue ;; esac
     patch -p1 -s <"debian/patches/$p"
   done <debian/patches/series)
  # GOTCHA: vendored github.com/modern-go/reflect2 v1.0.1 linknames reflect.mapiterinit with the
  # pre-Go-1.18 signature; binaries built with Go >= 1.18 then crash (SIGSEGV in jsoniter).
  # Swap in Debian's reflect2 1.0.2.
  local r=$K8S/src/vendor/github.com/modern-go/reflect2 d=/usr/share/gocode/src/github.com/modern-go/reflect2
  rm -f "$r"/*.go "$r"/*.s
  cp "$d"/*.go "$d"/*.s "$r"/
  touch "$K8S/src/.crucible-prepared"
  log "kubernetes source ready in $K8S/src"
}

# up, step 3: go build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl
ensure_k8s_binaries() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl) c todo=()
  for c in "${want[@]}"; do [ -x "$BIN/$c" ] || todo+=("$c"); done
  [ ${#todo[@]} = 0 ] && return 0
  ensure_k8s_source
  mkdir -p "$BIN" "$K8S/gopath/src/k8s.io" "$K8S/gocache"
  # GOTCHA: k8s 1.20 builds in GOPATH mode (hack/lib/init.sh sets GO111MODULE=off); module mode
  # with -mod=vendor fails under Go 1.19 ("go: updates to go.mod needed").
  [ -L "$K8S/gopath/src/k8s.io/kubernetes" ] || ln -s "$K8S/src" "$K8S/gopath/src/k8s.io/kubernetes"
  local pkgdir=$K8S/gopath/src/k8s.io/kubernetes
  export GOCACHE=$K8S/gocache GOFLAGS='' GO111MODULE=off GOPATH=$K8S/gopath CGO_ENABLED=0
  # GOTCHA: the generated OpenAPI definitions are not in the tarball (kube-apiserver fails with
  # "undefined: openapi.GetOpenAPIDefinitions"); `make gen_openapi` works offline.
  if [ ! -f "$K8S/src/pkg/generated/openapi/zz_generated.openapi.go" ]; then
    log "make gen_openapi (about 1 min)"
    (cd "$pkgdir" && make gen_openapi >"$K8S/gen_openapi.log" 2>&1) \
      || die "make gen_openapi failed, see $K8S/gen_openapi.log"
  fi
  # version ldflags use the vendor path in GOPATH mode, or the binaries report v0.0.0
  local v=k8s.io/kubernetes/vendor ld
  ld="-s -w -X $v/k8s.io/component-base/version.gitVersion=v$K8S_VERSION"
  ld+=" -X $v/k8s.io/component-base/version.gitMajor=1 -X $v/k8s.io/component-base/version.gitMinor=20"
  ld+=" -X $v/k8s.io/component-base/version.gitTreeState=archive"
  ld+=" -X $v/k8s.io/component-base/version.buildDate=2021-01-13T13:20:00Z"
  ld+=" -X $v/k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION"
  ld+=" -X $v/k8s.io/client-go/pkg/version.gitMajor=1 -X $v/k8s.io/client-go/pkg/version.gitMinor=20"
  for c in "${todo[@]}"; do
    local t0=$SECONDS
    if [ "$c" = kube-apiserver ]; then
      log "go build $c (compiles the shared dependencies first: ~5 min on 2 cores)"
    else
      log "go build $c"
    fi
    (cd "$pkgdir" && go build -tags selinux,notest -ldflags "$ld" -o "$BIN/.$c.tmp" "./cmd/$c") \
      || die "go build $c failed"
    mv "$BIN/.$c.tmp" "$BIN/$c"
    log "built $c in $((SECONDS - t0))s"
  done
  unset GOCACHE GOFLAGS GO111MODULE GOPATH CGO_ENABLED
}

# ---------------------------------------------------------------------------------------------
# up, step 4: images (one-layer docker-archive tarballs, imported with `ctr images import`)
mkimage() {   # mkimage ROOTFS REF OUT.tar [umoci config args...]
  local rootfs=$1 ref=$2 out=$3 t; shift 3
  t=$(mktemp -d "$IMAGES/.mkimage.XXXXXX")
  umoci init --layout "$t/oci"
  umoci new --image "$t/oci:latest"
  umoci insert --image "$t/oci:latest" "$rootfs" /
  umoci config --image "$t/oci:latest" --os linux --architecture amd64 "$@"
  local had_containers=0; [ -e /var/lib/containers ] && had_containers=1
  skopeo copy --quiet "oci:$t/oci:latest" "docker-archive:$out.tmp:$ref"
  mv "$out.tmp" "$out"
  # skopeo leaves a blob-info cache in /var/lib/containers/cache; do not leave it behind
  [ "$had_containers" = 1 ] || rm -rf /var/lib/containers
  rm -rf "$t"
}

mounts_under() {   # mount points at or below $1, in mount order
  awk -v p="$1" '$2 == p || index($2, p "/") == 1 {print $2}' /proc/mounts
}

umount_under() {   # unmount everything mounted at or below $1, innermost first
  local m
  mounts_under "$1" | tac | while read -r m; do
    m=$(printf '%b' "$m")   # /proc/mounts escapes blanks as \040
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "WARNING: cannot unmount $m"
  done
}

ensure_images() {
  mkdir -p "$IMAGES"
  if [ ! -f "$IMAGES/pause.tar" ]; then
    # the pause binary from Kubernetes' own build/pause/linux/pause.c, linked statically
    ensure_k8s_source
    rm -rf "$IMAGES/pause-rootfs"; mkdir -p "$IMAGES/pause-rootfs"
    gcc -Os -Wall -Werror -static -DVERSION=3.4.1-crucible -o "$IMAGES/pause-rootfs/pause" \
      "$K8S/src/build/pause/linux/pause.c"
    strip "$IMAGES/pause-rootfs/pause"
    mkimage "$IMAGES/pause-rootfs" "$PAUSE_IMAGE" "$IMAGES/pause.tar" \
      --config.entrypoint /pause --config.user 65535:65535
    rm -rf "$IMAGES/pause-rootfs"
    log "built $PAUSE_IMAGE"
  fi
  if [ ! -f "$IMAGES/python.tar" ]; then
    # debootstrap minbase bookworm + python3 (python3-minimal lacks json and friends)
    local rootfs=$IMAGES/python-rootfs mirror t0=$SECONDS
    mirror=$(awk '/^URIs:/ && /debian/ && !/security/ {print $2; exit}' \
               /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 ~ /debian/ && $2 !~ /security/ {print $2; exit}' \
                                  /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    rm -rf "$rootfs"
    log "debootstrap bookworm + python3 from $mirror (1-3 min)"
    if ! debootstrap --variant=minbase --include=python3 bookworm "$rootfs" "$mirror" \
           >"$IMAGES/debootstrap.log" 2>&1; then
      umount_under "$rootfs"; die "debootstrap failed, see $IMAGES/debootstrap.log"
    fi
    umount_under "$rootfs"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
           "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/usr/share/locale
    mkimage "$rootfs" "$PY_IMAGE" "$IMAGES/python.tar" --config.cmd /usr/bin/python3 \
      --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    rm -rf "$rootfs"
    log "built $PY_IMAGE in $((SECONDS - t0))s"
  fi
}

# ---------------------------------------------------------------------------------------------
# up, step 5: PKI (openssl) and kubeconfigs
cert() {   # cert NAME CN O SAN server|client
  local n=$1 cn=$2 o=$3 san=$4 use=$5 subj
  [ -f "$n.crt" ] && return 0
  openssl genrsa -out "$n.key" 2048 2>/dev/null
  subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o$subj"
  openssl req -new -key "$n.key" -subj "$subj" -out "$n.csr"
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ "$use" = server ]; then echo "extendedKeyUsage=serverAuth"; else echo "extendedKeyUsage=clientAuth"; fi
    [ -n "$san" ] && echo "subjectAltName=$san"; } >"$n.ext"
  openssl x509 -req -in "$n.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
    -extfile "$n.ext" -out "$n.crt" 2>/dev/null
  rm -f "$n.csr" "$n.ext"
}

kubeconfig_file() {   # kubeconfig_file OUT USER CERTNAME
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: crucible-local
  cluster: {certificate-authority: $LAB/pki/ca.crt, server: "https://127.0.0.1:6443"}
users:
- name: $2
  user: {client-certificate: $LAB/pki/$3.crt, client-key: $LAB/pki/$3.key}
contexts:
- name: crucible-local
  context: {cluster: crucible-local, user: $2}
current-context: crucible-local
EOF
}

ensure_pki() {
  mkdir -p "$LAB/pki" "$LAB/etc"
  (cd "$LAB/pki"
   umask 077
   if [ ! -f ca.crt ]; then
     openssl genrsa -out ca.key 2048 2>/dev/null
     openssl req -x509 -new -nodes -key ca.key -sha256 -days 3650 -subj "/CN=crucible-local-ca" -out ca.crt
   fi
   if [ ! -f sa.pub ]; then
     openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
   fi
   cert apiserver kube-apiserver "" "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1,IP:$NODE_IP" server
   cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "" client
   cert admin admin system:masters "" client
   cert controller-manager system:kube-controller-manager "" "" client
   cert scheduler system:kube-scheduler "" "" client
   cert kubelet-client "system:node:$NODE" system:nodes "" client
   cert kubelet-server "$NODE" "" "DNS:$NODE,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP" server)
  kubeconfig_file "$KUBECONFIG_PATH" admin admin
  kubeconfig_file "$LAB/etc/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  kubeconfig_file "$LAB/etc/scheduler.kubeconfig" system:kube-scheduler scheduler
  kubeconfig_file "$LAB/etc/kubelet.kubeconfig" "system:node:$NODE" kubelet-client
}

# up, step 6: containerd, CNI and kubelet configuration, runsc wrapper
write_configs() {
  mkdir -p "$LAB/etc" "$LAB/bin" "$LAB/cni/net.d" "$LAB/cni/ipam" "$LAB/containerd" "$LAB/kubelet" \
           "$LAB/data"
  install -m 0755 "$SCRIPT_DIR/runsc-wrapper" "$LAB/bin/runsc-wrapper"
  ln -sfn runsc-wrapper "$LAB/bin/runsc-wrapper-net"
  cat >"$LAB/etc/containerd.toml" <<EOF
version = 2
root = "$LAB/containerd/root"
state = "$CTRD_STATE"
[grpc]
  address = "$CTRD_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$LAB/containerd/opt"    # default /opt/containerd
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # GOTCHA: this VM's root lacks CAP_SYS_RESOURCE, so runc cannot set the negative
  # oom_score_adj CRI asks for (-998): "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/bin/runc"
    # gVisor through the stock runc v2 shim; runsc flags and fixes in runsc-wrapper
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc.options]
        BinaryName = "$LAB/bin/runsc-wrapper"
        Root = "$CTRD_STATE/runsc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc-net]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc-net.options]
        BinaryName = "$LAB/bin/runsc-wrapper-net"
        Root = "$CTRD_STATE/runsc-net"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$LAB/cni/net.d"
EOF
  # bridge CNI: no masquerade and no default route in the pods, so pods reach only 10.88.0.0/24.
  # It does not enforce NetworkPolicy.
  cat >"$LAB/cni/net.d/10-crucible.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "crucible",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "dataDir": "$LAB/cni/ipam"
      }
    }
  ]
}
EOF
  cat >"$LAB/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $LAB/pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failSwapOn: false
tlsCertFile: $LAB/pki/kubelet-server.crt
tlsPrivateKeyFile: $LAB/pki/kubelet-server.key
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
address: $NODE_IP
podCIDR: $POD_CIDR
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# no KUBE-MARK/KUBE-FIREWALL chains in the host's iptables (there is no kube-proxy anyway)
makeIPTablesUtilChains: false
evictionHard: {memory.available: "200Mi", nodefs.available: "5%", imagefs.available: "5%"}
# the first status after registration is NotReady; post the change sooner than every 10 s
nodeStatusUpdateFrequency: 4s
EOF
}

# ---------------------------------------------------------------------------------------------
# up, step 7: host preparation. Everything `down` has to undo is recorded first, once.
record_host() {
  mkdir -p "$RUN" "$LOGS"
  touch "$LAB/.crucible-local"   # marks $LAB as ours for `down`'s rm -rf
  [ -f "$RUN/host.recorded" ] && return 0
  local s p
  : >"$RUN/sysctl.orig"
  for s in "${KUBELET_SYSCTLS[@]%%=*}" "${CNI_SYSCTLS[@]}"; do
    [ -e "/proc/sys/${s//.//}" ] && echo "$s=$(sysctl -n "$s")" >>"$RUN/sysctl.orig"
  done
  : >"$RUN/paths.preexisting"
  for p in "${HOST_PATHS[@]}" /sys/fs/cgroup/*/kubepods; do
    [ -e "$p" ] && echo "$p" >>"$RUN/paths.preexisting"
  done
  if command -v iptables-save >/dev/null; then
    iptables-save 2>/dev/null | awk '/^\*/{t=substr($1,2)} /^:/{print t, substr($1,2)}' >"$RUN/iptables.chains" || true
  fi
  touch "$RUN/host.recorded"
  log "recorded host settings in $RUN ($(tr '\n' ' ' <"$RUN/sysctl.orig"))"
}

prepare_host() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    touch "$RUN/bridge.created"
  fi
  ip addr show dev "$BRIDGE" | grep -q "inet $NODE_IP/" || ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # GOTCHA: `ip netns add` (also run by `runsc do`) turns /run/netns into a shared self-bind
  # mount the first time it runs; if CNI netns files are mounted by then, containerd cannot
  # unmount them any more and pods hang in Terminating. Make the self-bind now, while empty.
  mkdir -p /run/netns
  if ! mountpoint -q /run/netns && [ -z "$(ls -A /run/netns)" ]; then
    mount --bind /run/netns /run/netns
    mount --make-shared /run/netns
    touch "$RUN/netns.bound"
  fi
}

restore_sysctls() {   # write back the recorded values that differ now
  local kv s v
  [ -f "$RUN/sysctl.orig" ] || return 0
  while IFS= read -r kv; do
    s=${kv%%=*}; v=${kv#*=}
    if [ "$(sysctl -n "$s" 2>/dev/null)" != "$v" ]; then
      sysctl -qw "$s=$v" && log "restored $s=$v"
    fi
  done <"$RUN/sysctl.orig"
}

kubelet_sysctls_applied() {
  local kv
  for kv in "${KUBELET_SYSCTLS[@]}"; do
    [ "$(sysctl -n "${kv%%=*}")" = "${kv#*=}" ] || return 1
  done
}

# ---------------------------------------------------------------------------------------------
kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
ctr_() { ctr --address "$CTRD_SOCK" "$@"; }

node_ready() {
  [ "$(kc get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

import_if_missing() {   # import_if_missing REF TAR
  local have
  have=$(ctr_ -n k8s.io images ls -q 2>/dev/null || true)
  grep -qxF "$1" <<<"$have" && return 0
  ctr_ -n k8s.io images import "$2" >/dev/null
  log "imported $1"
}

cmd_up() {
  need_root
  local t0=$SECONDS kubelet_started=0
  ensure_packages
  ensure_k8s_binaries
  ensure_images
  record_host
  ensure_pki
  write_configs
  prepare_host

  start_daemon etcd --name crucible --data-dir "$LAB/data/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster crucible=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381
  if ! alive containerd && [ -S "$CTRD_SOCK" ] && ctr_ version >/dev/null 2>&1; then
    die "another containerd already serves $CTRD_SOCK; stop it first"
  fi
  start_daemon containerd --config "$LAB/etc/containerd.toml"
  wait_for etcd 30 curl -sf http://127.0.0.1:2379/health
  wait_for containerd 30 ctr_ version

  start_daemon kube-apiserver \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=127.0.0.1 --secure-port=6443 --insecure-port=0 --advertise-address="$NODE_IP" \
    --tls-cert-file="$LAB/pki/apiserver.crt" --tls-private-key-file="$LAB/pki/apiserver.key" \
    --client-ca-file="$LAB/pki/ca.crt" \
    --service-account-key-file="$LAB/pki/sa.pub" --service-account-signing-key-file="$LAB/pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SVC_CIDR" --authorization-mode=Node,RBAC --allow-privileged=true \
    --kubelet-client-certificate="$LAB/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$LAB/pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname --v=1
  # pause + python images: needed before kubelet creates pods (imagePullPolicy Never)
  import_if_missing "$PAUSE_IMAGE" "$IMAGES/pause.tar"
  import_if_missing "$PY_IMAGE" "$IMAGES/python.tar"
  wait_for kube-apiserver 120 kc get --raw /readyz

  start_daemon kube-controller-manager \
    --kubeconfig="$LAB/etc/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$LAB/etc/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$LAB/etc/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --port=0 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$LAB/pki/sa.key" --root-ca-file="$LAB/pki/ca.crt" \
    --cluster-signing-cert-file="$LAB/pki/ca.crt" --cluster-signing-key-file="$LAB/pki/ca.key" \
    --service-cluster-ip-range="$SVC_CIDR" --cluster-name=crucible-local --v=1
  start_daemon kube-scheduler \
    --kubeconfig="$LAB/etc/scheduler.kubeconfig" \
    --authentication-kubeconfig="$LAB/etc/scheduler.kubeconfig" \
    --authorization-kubeconfig="$LAB/etc/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --port=0 --leader-elect=false --v=1

  alive kubelet || kubelet_started=1
  start_daemon kubelet --config="$LAB/etc/kubelet.yaml" --kubeconfig="$LAB/etc/kubelet.kubeconfig" \
    --container-runtime=remote --container-runtime-endpoint="unix://$CTRD_SOCK" \
    --runtime-request-timeout=5m --hostname-override="$NODE" --node-ip="$NODE_IP" \
    --root-dir="$LAB/kubelet" --pod-infra-container-image="$PAUSE_IMAGE" --v=1
  # GOTCHA: after a restart the Node object still says Ready from before: wait for healthz first
  wait_for "kubelet healthz" 60 curl -sf http://127.0.0.1:10248/healthz
  # GOTCHA: kubelet rewrites kernel.panic, kernel.panic_on_oops, vm.overcommit_memory (and
  # checks a few more) a few seconds after it reports healthy. Wait for that, then put the
  # host's own values back (kubelet does it only once, at start-up).
  if [ "$kubelet_started" = 1 ]; then
    wait_for "kubelet's kernel tunables" 60 kubelet_sysctls_applied \
      || log "WARNING: kubelet did not apply its sysctls in time; restoring anyway"
  fi
  restore_sysctls
  wait_for "node $NODE Ready" 120 node_ready
  kc apply -f "$INFRA_DIR/runtimeclasses.yaml" >/dev/null
  wait_for "service account default/default" 60 kc -n default get serviceaccount default
  log "cluster up in $((SECONDS - t0))s. Use: eval \"\$($0 env)\"; kubectl get nodes"
}

# ---------------------------------------------------------------------------------------------
ever_started() { [ -f "$RUN/host.recorded" ]; }

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

kubepods_pids() {   # processes in the kubepods cgroups kubelet created (pods: pause, apps, runsc)
  [ -d /sys/fs/cgroup/pids/kubepods ] || return 0
  find /sys/fs/cgroup/pids/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un
}

stop_pods() {
  # 1. through containerd, while it runs: SIGKILL every task of the k8s.io namespace
  if alive containerd; then
    local tasks t deadline
    tasks=$(ctr_ -n k8s.io tasks ls -q 2>/dev/null || true)
    if [ -n "$tasks" ]; then
      log "killing $(wc -w <<<"$tasks") pod task(s)"
      for t in $tasks; do ctr_ -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
      deadline=$(( $(date +%s) + 15 ))
      while ctr_ -n k8s.io tasks ls 2>/dev/null | awk 'NR > 1 && $3 != "STOPPED"' | grep -q . \
            && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
      for t in $tasks; do ctr_ -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true; done
    fi
  fi
}

kill_leftovers() {   # shims, runsc sandboxes/gofers/wrapper helpers, anything left in kubepods
  # shellcheck disable=SC2046
  kill_pids "containerd shim" $(pids_matching "-address $CTRD_SOCK")
  # shellcheck disable=SC2046
  kill_pids runsc $(pids_matching " $CTRD_STATE/runsc") $(pids_matching "=$CTRD_STATE/runsc")
  # shellcheck disable=SC2046
  kill_pids "pod" $(kubepods_pids)
}

cleanup_iptables() {   # remove KUBE-*/CNI-* chains that did not exist before `up`
  command -v iptables >/dev/null || return 0
  local t ch new
  for t in filter nat mangle; do
    new=$(iptables -t "$t" -S 2>/dev/null | awk '$1 == "-N" {print $2}' | grep -E '^(KUBE|CNI)-' \
          | while read -r ch; do grep -qxF "$t $ch" "$RUN/iptables.chains" 2>/dev/null || echo "$ch"; done) || true
    [ -n "$new" ] || continue
    new=$(tr '\n' ' ' <<<"$new")
    for ch in $(iptables -t "$t" -S | awk '$1 == "-P" || $1 == "-N" {print $2}'); do
      iptables -t "$t" -L "$ch" -n --line-numbers | awk -v new=" $new " 'NR > 2 && index(new, " " $2 " ") {print $1}' \
        | sort -rn | while read -r n; do iptables -t "$t" -D "$ch" "$n"; done
    done
    for ch in $new; do iptables -t "$t" -F "$ch"; done
    for ch in $new; do iptables -t "$t" -X "$ch"; done
    log "removed iptables chains ($t): $new"
  done
}

preexisting() { grep -qxF "$1" "$RUN/paths.preexisting" 2>/dev/null; }

cmd_down() {
  need_root
  local t0=$SECONDS c
  if ! ever_started; then
    for c in "${COMPONENTS[@]}"; do
      alive "$c" && die "$c is running but $RUN/host.recorded is missing; refusing to guess"
    done
    log "nothing to stop ($LAB has no recorded cluster)"
    return 0
  fi
  stop_daemon kubelet
  stop_pods
  stop_daemon kube-scheduler
  stop_daemon kube-controller-manager
  stop_daemon kube-apiserver
  stop_daemon containerd
  kill_leftovers
  stop_daemon etcd

  # mounts: pod network namespaces, container rootfs/shm, kubelet volumes
  local m
  local ns
  for ns in /run/netns/cni-*; do
    if mountpoint -q "$ns"; then umount "$ns" 2>/dev/null || umount -l "$ns"; fi
    rm -f "$ns"
  done
  umount_under "$CTRD_STATE"
  umount_under "$LAB"
  if [ -f "$RUN/netns.bound" ]; then umount /run/netns 2>/dev/null || umount -l /run/netns; fi
  # network: CNI veths still on the bridge, the bridge, iptables chains
  local ifc
  for ifc in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link delete "$ifc" 2>/dev/null || true
  done
  if [ -f "$RUN/bridge.created" ] && ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link delete "$BRIDGE"; log "deleted bridge $BRIDGE"
  fi
  cleanup_iptables
  restore_sysctls
  # cgroups kubelet created (cgroupfs driver): /sys/fs/cgroup/*/kubepods
  local cg
  for cg in /sys/fs/cgroup/*/kubepods; do
    if [ ! -d "$cg" ] || preexisting "$cg"; then continue; fi
    find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || log "WARNING: could not remove all of $cg"
  done
  # host paths created by containerd/kubelet/CNI
  local p
  for p in "${HOST_PATHS[@]}"; do
    if [ ! -e "$p" ] || preexisting "$p"; then continue; fi
    if [ -n "$(mounts_under "$p")" ]; then log "WARNING: $p still has mounts, left in place"; continue; fi
    rm -rf --one-file-system "$p"
  done
  # runtime state
  if [ -n "$(mounts_under "$LAB")" ]; then
    die "mounts left under $LAB, not removing it: $(mounts_under "$LAB" | tr '\n' ' ')"
  fi
  [ -f "$LAB/.crucible-local" ] || die "$LAB is not marked as a crucible-local state dir; not removing it"
  rm -rf --one-file-system "$LAB"
  log "cluster down in $((SECONDS - t0))s (cache kept in $CACHE)"
}

# ---------------------------------------------------------------------------------------------
cmd_status() {
  local c pid rc=0 ready
  for c in "${COMPONENTS[@]}"; do
    if pid=$(daemon_pid "$c"); then
      printf '%-24s running  pid %-8s rss %s kB\n' "$c" "$pid" "$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")"
    else
      printf '%-24s stopped\n' "$c"; rc=1
    fi
  done
  if alive kube-apiserver && [ -x "$KUBECTL" ]; then
    ready=$(kc get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
  fi
  case "${ready:-}" in
    True) printf '%-24s Ready\n' "node/$NODE" ;;
    "") printf '%-24s unknown\n' "node/$NODE"; rc=1 ;;
    *) printf '%-24s NotReady\n' "node/$NODE"; rc=1 ;;
  esac
  return $rc
}

cmd_logs() {
  local c lines=${LINES:-50}
  if [ $# -gt 0 ]; then
    [ -f "$LOGS/$1.log" ] || die "no log for '$1' (components: ${COMPONENTS[*]})"
    tail -n "$lines" "$LOGS/$1.log"; return 0
  fi
  for c in "${COMPONENTS[@]}"; do
    [ -f "$LOGS/$c.log" ] || continue
    echo "==> $LOGS/$c.log <=="; tail -n "$lines" "$LOGS/$c.log"; echo
  done
}

cmd_import_image() {
  need_root
  if [ $# != 1 ] || [ ! -f "$1" ]; then die "usage: $0 import-image TAR (docker-archive or OCI archive)"; fi
  alive containerd || die "containerd is not running; run '$0 up' first"
  ctr_ -n k8s.io images import "$1"
}

print_env() {
  # shellcheck disable=SC2016  # $PATH is expanded later, by the caller's eval
  printf 'export KUBECONFIG=%q; export PATH=%q:$PATH\n' "$KUBECONFIG_PATH" "$BIN"
}

usage() { sed -n '7,18p' "$0" | sed 's/^# \{0,1\}//'; }

main() {
  local sub=${1:-}; [ $# -gt 0 ] && shift
  case "$sub" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    kubeconfig) echo "$KUBECONFIG_PATH" ;;
    kubectl) [ -x "$KUBECTL" ] || die "$KUBECTL not built yet; run '$0 up'"; exec "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@" ;;
    import-image) cmd_import_image "$@" ;;
    env) print_env ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
