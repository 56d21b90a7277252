# shellcheck shell=bash
# lib/images.sh - sourced by cluster.sh: `up` step 4, the pause and python image tarballs (cached
# in $IMAGES), their import into containerd, and the `import-image` subcommand.

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

ensure_images() { ensure_pause_image; ensure_eval_image; ensure_agent_image; }

ensure_pause_image() {
  mkdir -p "$IMAGES"
  local pause_tar=$IMAGES/pause-k8s-$K8S_VERSION.tar
  if [ ! -f "$pause_tar" ]; then
    # the pause binary from the Kubernetes release's own build/pause/linux/pause.c (in the Go
    # module cache since the build), linked statically
    local src
    ensure_go
    src=$(cd "$GOMOD/kubernetes" && "$GO" list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
    [ -f "$src" ] || die "$src not found"
    rm -rf "$IMAGES/pause-rootfs"; mkdir -p "$IMAGES/pause-rootfs"
    gcc -Os -Wall -Werror -static -DVERSION="k8s-$K8S_VERSION-crucible" -o "$IMAGES/pause-rootfs/pause" "$src"
    strip "$IMAGES/pause-rootfs/pause"
    mkimage "$IMAGES/pause-rootfs" "$PAUSE_IMAGE" "$pause_tar" \
      --config.entrypoint /pause --config.user 65535:65535
    rm -rf "$IMAGES/pause-rootfs"
    log "built $PAUSE_IMAGE"
  fi
}

# the evaluation image, which `crucible run` needs too: no Kubernetes build for it
ensure_eval_image() {
  mkdir -p "$IMAGES"
  if [ ! -f "$IMAGES/python.tar" ]; then
    # debootstrap minbase bookworm + python3 (python3-minimal lacks json and friends)
    local rootfs=$IMAGES/python-rootfs mirror t0=$SECONDS
    mirror=$(debian_mirror)
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

# the agent image: the evaluation image and one layer more, the `openai` SDK's wheels for the
# image's Python (bookworm's 3.11) installed by the host's pip into /usr/local/lib/python3.11/
# dist-packages (on Python's path there); no pip, no compiler in the image
ensure_agent_image() {
  local tar=$IMAGES/python-openai-$OPENAI_VERSION.tar
  [ -f "$tar" ] && return 0
  ensure_eval_image
  local t t0=$SECONDS
  t=$(mktemp -d "$IMAGES/.agent.XXXXXX")
  python3 -m pip --version >/dev/null 2>&1 || {
    [ "$(id -u)" = 0 ] || die "python3 -m pip is missing (Debian: python3-pip)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  }
  log "the agent image: openai==$OPENAI_VERSION for Python 3.11 from PyPI"
  python3 -m pip install -q --disable-pip-version-check --no-warn-conflicts --no-compile \
    --target "$t/site" --only-binary=:all: --platform manylinux_2_17_x86_64 \
    --python-version 3.11 --implementation cp "openai==$OPENAI_VERSION" >"$t/pip.log" 2>&1 \
    || { cat "$t/pip.log" >&2; rm -rf "$t"; die "pip could not fetch openai==$OPENAI_VERSION"; }
  rm -rf "$t/site/bin"
  local had_containers=0; [ -e /var/lib/containers ] && had_containers=1
  skopeo copy --quiet "docker-archive:$IMAGES/python.tar" "oci:$t/oci:latest"
  umoci insert --image "$t/oci:latest" "$t/site" /usr/local/lib/python3.11/dist-packages
  skopeo copy --quiet "oci:$t/oci:latest" "docker-archive:$tar.tmp:$AGENT_IMAGE"
  mv "$tar.tmp" "$tar"
  [ "$had_containers" = 1 ] || rm -rf /var/lib/containers
  rm -rf "$t"
  log "built $AGENT_IMAGE in $((SECONDS - t0))s"
}

import_if_missing() {   # import_if_missing REF TAR
  local have
  have=$(ctr_ -n k8s.io images ls -q 2>/dev/null || true)
  grep -qxF "$1" <<<"$have" && return 0
  ctr_ -n k8s.io images import "$2" >/dev/null
  log "imported $1"
}

cmd_image() {
  need_root
  ensure_packages
  ensure_eval_image
  log "$PY_IMAGE is $IMAGES/python.tar"
}

cmd_import_image() {
  need_root
  if [ $# != 1 ] || [ ! -f "$1" ]; then die "usage: $0 import-image TAR (docker-archive or OCI archive)"; fi
  alive containerd || die "containerd is not running; run '$0 up' first"
  ctr_ -n k8s.io images import "$1"
}
