# shellcheck shell=bash
# lib/build.sh - sourced by cluster.sh: `up` steps 1-3, the Debian packages, gVisor's runsc from
# bookworm-backports, and the Go builds of Kubernetes, etcd and containerd from the Go module
# proxy (each pinned by a small module of ours in ../gomod/, binaries cached in $CACHE).

PACKAGES=(gcc libc6-dev openssl curl jq iproute2 iptables util-linux runc containernetworking-plugins
          skopeo umoci debootstrap ipset)

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

# apt-get with a private list of sources and package lists under $CACHE/apt (bookworm and
# bookworm-backports), so that the host's apt configuration is never changed
apt_private() {
  local d=$CACHE/apt
  if [ ! -f "$d/sources/debian.sources" ]; then
    mkdir -p "$d/sources" "$d/lists/partial"
    cat >"$d/sources/debian.sources" <<EOF
Types: deb
URIs: $(debian_mirror)
Suites: bookworm bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  apt-get -o APT::Sandbox::User=root -o DPkg::Lock::Timeout=300 -o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts="$d/sources" \
    -o Dir::State::Lists="$d/lists" "$@"
}

debian_mirror() {   # the host's Debian mirror (deb822 or one-line sources), else deb.debian.org
  local m
  m=$(awk '/^URIs:/ && /debian/ && !/security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$m" ] || m=$(awk '$1 == "deb" && $2 ~ /debian/ && $2 !~ /security/ {print $2; exit}' \
                       /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  echo "${m:-http://deb.debian.org/debian}"
}

# up, step 2: gVisor's runsc, the newest Debian has (bookworm-backports: 2024-07-29; bookworm:
# 2022-12-19), unpacked into $RUNSC_DIR rather than installed, so the host's runsc is untouched
ensure_runsc() {
  [ -x "$RUNSC_DIR/usr/bin/runsc" ] && return 0
  log "downloading runsc from bookworm-backports"
  apt_private update -qq
  local t; t=$(mktemp -d)
  (cd "$t" && apt_private download -qq runsc/bookworm-backports >/dev/null 2>&1 \
     || apt_private download -qq runsc >/dev/null) || { rm -rf "$t"; die "apt-get download runsc failed"; }
  rm -rf "$RUNSC_DIR"; mkdir -p "$RUNSC_DIR"
  dpkg-deb -x "$t"/runsc_*.deb "$RUNSC_DIR"
  basename "$t"/runsc_*.deb >"$RUNSC_DIR/package"
  rm -rf "$t"
  log "runsc $(cat "$RUNSC_DIR/package") in $RUNSC_DIR"
}

# Go: the newest go.mod of ../gomod/ names the Go it needs. A `go` that old or newer on PATH (or
# /usr/local/go) is used as it is; otherwise Debian's newest (bookworm-backports' golang-1.23)
# is installed and fetches the toolchain from the Go module proxy (GOTOOLCHAIN).
GO_TOOLCHAIN=go1.27.3   # the toolchain fetched when the machine's Go is too old
go_needed() { awk '$1 == "go" {print $2}' "$GOMOD"/*/go.mod | sort -V | tail -n1; }
go_version_of() { "$1" env GOVERSION 2>/dev/null | sed 's/^go//'; }
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]; }
ensure_go() {
  local need g v
  need=$(go_needed)
  for g in "$(command -v go || true)" /usr/local/go/bin/go; do
    if [ -z "$g" ] || [ ! -x "$g" ]; then continue; fi
    v=$(GOTOOLCHAIN=local go_version_of "$g")
    if [ -n "$v" ] && version_ge "$v" "$need"; then GO=$g; export GOTOOLCHAIN=local; return 0; fi
  done
  g=/usr/lib/go-1.23/bin/go
  if [ ! -x "$g" ]; then
    log "no Go >= $need found: installing golang-1.23-go from bookworm-backports"
    apt_private update -qq
    DEBIAN_FRONTEND=noninteractive apt_private install -y -qq --no-install-recommends \
      golang-1.23-go/bookworm-backports >/dev/null || die "cannot install golang-1.23-go"
  fi
  GO=$g; export GOTOOLCHAIN=$GO_TOOLCHAIN
  log "using $g with GOTOOLCHAIN=$GOTOOLCHAIN (fetched from the Go module proxy)"
}

# go_build MODULE OUTDIR LDFLAGS PACKAGE...: one `go build` of several commands into OUTDIR
go_build() {
  local mod=$1 out=$2 ld=$3 t0=$SECONDS tmp; shift 3
  mkdir -p "$CACHE"   # the first tool built on a fresh machine comes before anything else made it
  tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
  log "go build $mod: $* (first build: minutes)"
  if ! (cd "$GOMOD/$mod" && CGO_ENABLED=0 GOFLAGS=-mod=readonly GOCACHE=${GO_BUILD_CACHE:-$CACHE/gocache} \
          "$GO" build -trimpath -ldflags "-s -w $ld" -o "$tmp/" "$@") >"$tmp.log" 2>&1; then
    rm -rf "$tmp"; die "go build in $GOMOD/$mod failed, see $tmp.log"
  fi
  mkdir -p "$out"; mv "$tmp"/* "$out/"; rm -rf "$tmp" "$tmp.log"
  log "built $mod in $((SECONDS - t0))s"
}

missing_in() {   # missing_in DIR NAME...: true when any NAME is not an executable in DIR
  local d=$1 c; shift
  for c in "$@"; do [ -x "$d/$c" ] || return 0; done
  return 1
}

# up, step 3: the binaries
ensure_binaries() {
  local k=k8s.io/kubernetes/cmd
  local c missing=()
  for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy; do
    [ -x "$BIN/$c" ] || missing+=("$k/$c")   # only what is missing (a cache from before kube-proxy)
  done
  [ ${#missing[@]} -gt 0 ] || missing_in "$ETCD_BIN" etcd \
    || missing_in "$CTRD_BIN" containerd containerd-shim-runc-v2 ctr || return 0
  ensure_go
  if [ ${#missing[@]} -gt 0 ]; then
    local minor v ld=""
    minor=${K8S_VERSION#*.}; minor=${minor%%.*}
    for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $v.gitVersion=v$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=archive"
    done
    go_build kubernetes "$BIN" "$ld" "${missing[@]}"
  fi
  if missing_in "$ETCD_BIN" etcd; then
    go_build etcd "$ETCD_BIN" "" go.etcd.io/etcd/server/v3
    mv "$ETCD_BIN/server" "$ETCD_BIN/etcd"   # `go build` names it after the path before /v3
  fi
  if missing_in "$CTRD_BIN" containerd containerd-shim-runc-v2 ctr; then
    local c=github.com/containerd/containerd/v2
    go_build containerd "$CTRD_BIN" "-X $c/version.Version=v$CTRD_VERSION" \
      $c/cmd/containerd $c/cmd/containerd-shim-runc-v2 $c/cmd/ctr
  fi
}

# The tools around the cluster, same way (each cached; `up` builds them once):
# prometheus (cmd/prometheus without the web UI's assets, which only the `builtinassets` build
# tag embeds, and with static scrape targets only: `remove_all_sd` leaves out the cloud service
# discoveries, most of its build; the tests use the HTTP API), helm 4 and kube-router (the NetworkPolicy
# engine; only its firewall runs, see daemons.sh), and gitops-health (ours: what Flux's kstatus and
# Argo CD's gopher-lua say of our objects, infrastructure/gitops/), and kueue (`cmd/kueue`, the
# benchmark's second queueing baseline, bench/src/cluster/kueue/).
# Their Go build cache is thrown away after the build (about 4.6 GB for the three, of little use
# once the binary is cached; the shared one keeps Kubernetes').
ensure_tool() {   # ensure_tool NAME: builds NAME into its cache directory unless it is there
  local name=$1 GO_BUILD_CACHE
  GO_BUILD_CACHE=$CACHE/.gocache-$name
  case "$name" in
    prometheus) missing_in "$PROM_BIN" prometheus || return 0; ensure_go
      go_build prometheus "$PROM_BIN" "-X github.com/prometheus/common/version.Version=$PROM_VERSION" \
        -tags=remove_all_sd github.com/prometheus/prometheus/cmd/prometheus ;;
    helm) missing_in "$HELM_BIN" helm || return 0; ensure_go
      go_build helm "$HELM_BIN" "-X helm.sh/helm/v4/internal/version.version=v$HELM_VERSION" helm.sh/helm/v4/cmd/helm ;;
    kube-router) missing_in "$KROUTER_BIN" kube-router || return 0; ensure_go
      go_build kube-router "$KROUTER_BIN" "" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router ;;
    gitops-health) missing_in "$GITOPS_HEALTH_BIN" gitops-health || return 0; ensure_go
      go_build gitops-health "$GITOPS_HEALTH_BIN" "" . ;;
    kueue) { missing_in "$KUEUE_BIN" kueue || [ ! -d "$KUEUE_CRDS" ]; } || return 0; ensure_go
      missing_in "$KUEUE_BIN" kueue && go_build kueue "$KUEUE_BIN" \
        "-X sigs.k8s.io/kueue/pkg/version.GitVersion=v$KUEUE_VERSION" sigs.k8s.io/kueue/cmd/kueue
      kueue_crds ;;
    runsc) ensure_runsc ;;   # the cluster's runsc, for `crucible run` where none is installed
    *) die "unknown tool '$name' (prometheus, helm, kube-router, gitops-health, kueue, runsc)" ;;
  esac
  rm -rf "$GO_BUILD_CACHE"
}
# Kueue's CRDs, copied from the module cache next to its binary: the benchmark applies them
# (and removes them) without needing Go.
kueue_crds() {
  local src
  src=$(cd "$GOMOD/kueue" && GOFLAGS=-mod=readonly "$GO" list -m -f '{{.Dir}}' sigs.k8s.io/kueue) \
    || die "sigs.k8s.io/kueue is not in the module cache"
  rm -rf "$KUEUE_CRDS.tmp"; mkdir -p "$KUEUE_CRDS.tmp"
  install -m 0644 "$src"/config/components/crd/bases/*.yaml "$KUEUE_CRDS.tmp/"
  mv "$KUEUE_CRDS.tmp" "$KUEUE_CRDS"
}
tool_path() {   # tool_path NAME: ensure_tool, then print the binary's path
  ensure_tool "$1" >&2
  case "$1" in
    prometheus) echo "$PROM_BIN/prometheus" ;;
    helm) echo "$HELM_BIN/helm" ;;
    kube-router) echo "$KROUTER_BIN/kube-router" ;;
    gitops-health) echo "$GITOPS_HEALTH_BIN/gitops-health" ;;
    runsc) echo "$RUNSC_DIR/usr/bin/runsc" ;;
    kueue) echo "$KUEUE_BIN/kueue" ;;
  esac
}
