# shellcheck shell=bash
# lib/build.sh - sourced by cluster.sh: `up` steps 1-3, the Debian packages, the Kubernetes
# source from Debian and the Go build of the Kubernetes binaries into $BIN (cached in $CACHE).

K8S_SRC_VER=1.20.5+really1.20.2-1.1+deb12u1   # Debian bookworm's kubernetes source package
PACKAGES=(golang-go golang-1.19-go make dpkg-dev rsync patch gcc libc6-dev golang-github-modern-go-reflect2-dev
          openssl curl jq iproute2 util-linux etcd-server etcd-client containerd runc runsc
          containernetworking-plugins skopeo umoci debootstrap)

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
  # Debian's Go 1.19 (golang-go), not whatever `go` comes first on PATH: Go 1.23+ refuses the
  # linknames that Kubernetes 1.20's vendored code relies on, and GOPATH mode is needed.
  local go119=/usr/lib/go-1.19/bin
  [ -x "$go119/go" ] || die "Debian's Go 1.19 ($go119/go) is missing: apt-get install golang-1.19-go"
  local PATH="$go119:$PATH"
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
