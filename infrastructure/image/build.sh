#!/bin/bash
# build.sh - the controller image, without Docker: `cargo build --release -p crucible`, then a
# minimal root filesystem holding the binary, exactly the shared libraries `ldd` lists (plus the
# dynamic loader), /etc/passwd and /etc/group entries for uid/gid 65532, and the CA bundle;
# umoci makes it a one-layer OCI image and skopeo writes it as a docker-archive.
#
# Usage: infrastructure/image/build.sh [--import] [--no-build | --binary PATH]
#   --import       also import the image into the local cluster (infrastructure/local/cluster.sh
#                  import-image); pods use it with imagePullPolicy Never/IfNotPresent
#   --no-build     skip cargo and use the release binary already in the target directory
#   --binary PATH  skip cargo and package this binary, e.g. target/debug/crucible: scripts/demo.sh
#                  and scripts/test.sh package the debug build they run the controller from, so
#                  the sandbox canary (`crucible canary-probe` in this image) needs no second,
#                  release, build
#
# Output: $CRUCIBLE_CACHE/images/controller.tar (default cache ~/.cache/crucible), tagged
# localhost/crucible/controller:dev (override with CRUCIBLE_CONTROLLER_IMAGE; the controller's
# --canary-image defaults to that tag). Binary: $CARGO_TARGET_DIR/release/crucible (default
# ./target). Idempotent: when the binary and this script are unchanged, the existing tarball is
# kept (its inputs' hash is stored next to it). Needs root (chroot check, file ownership in the
# layer), umoci, skopeo, ldd.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${CRUCIBLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/crucible}
IMAGES=$CACHE/images
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BINARY=$TARGET/release/crucible
REF=${CRUCIBLE_CONTROLLER_IMAGE:-localhost/crucible/controller:dev}
OUT=$IMAGES/controller.tar
UID_GID=65532

log() { printf '[%s] image: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

import=0 build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --import) import=1 ;;
    --no-build) build=0 ;;
    --binary)
      [ $# -ge 2 ] || die "--binary needs a path"
      build=0 BINARY=$2; shift ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || die "must run as root (chroot check, root-owned files in the layer)"
for tool in umoci skopeo ldd sha256sum; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install umoci skopeo)"
done

if [ "$build" = 1 ]; then
  log "cargo build --release -p crucible (target dir $TARGET)"
  (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -p crucible)
fi
[ -x "$BINARY" ] || die "$BINARY not found; build it, or drop --no-build / --binary"

# Inputs: the binary, this script, the reference and the libraries it links (a distro upgrade
# changes them). Unchanged inputs and an existing tarball: nothing to do.
mkdir -p "$IMAGES"
libs=$(ldd "$BINARY" | awk '/=> \// {print $3} /^[ \t]*\/[^ ]+ \(0x/ {print $1}' | sort -u)
[ -n "$libs" ] || die "ldd lists no libraries for $BINARY (a static binary needs no rootfs libraries, but then this script needs a change)"
stamp=$( { sha256sum "$BINARY" "${BASH_SOURCE[0]}"; echo "$REF"; for l in $libs; do sha256sum "$(readlink -f "$l")"; done; } | sha256sum | cut -d' ' -f1)
if [ -f "$OUT" ] && [ "$(cat "$OUT.inputs" 2>/dev/null)" = "$stamp" ]; then
  log "$OUT is up to date ($REF)"
else
  work=$(mktemp -d "$IMAGES/.controller.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  rootfs=$work/rootfs
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot"
  chmod 1777 "$rootfs/tmp"
  chown "$UID_GID:$UID_GID" "$rootfs/home/nonroot"
  install -m 0755 "$BINARY" "$rootfs/usr/local/bin/crucible"
  strip --strip-unneeded "$rootfs/usr/local/bin/crucible" 2>/dev/null || true
  # every library at the path ldd resolved it to (the loader at its ELF interpreter path),
  # copied as a regular file
  for l in $libs; do
    mkdir -p "$rootfs$(dirname "$l")"
    cp -L "$l" "$rootfs$l"
  done
  cat >"$rootfs/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:$UID_GID:$UID_GID:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$rootfs/etc/group" <<EOF
root:x:0:
nonroot:x:$UID_GID:
EOF
  echo "hosts: files dns" >"$rootfs/etc/nsswitch.conf"
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  else
    log "WARNING: /etc/ssl/certs/ca-certificates.crt not found; the image has no CA bundle (apt-get install ca-certificates)"
  fi

  # The image must run on its own: the binary, as uid 65532, inside nothing but this rootfs.
  chroot --userspec="$UID_GID:$UID_GID" "$rootfs" /usr/local/bin/crucible --help >"$work/help.txt" 2>&1 \
    || { cat "$work/help.txt" >&2; die "the binary does not run inside the image's rootfs"; }
  log "chroot check: $(head -n1 "$work/help.txt")"

  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
  revision=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:latest"
  umoci insert --image "$work/oci:latest" "$rootfs" /
  umoci config --image "$work/oci:latest" --os linux --architecture amd64 \
    --config.entrypoint /usr/local/bin/crucible --config.cmd controller \
    --config.user "$UID_GID:$UID_GID" --config.workingdir /home/nonroot \
    --config.env PATH=/usr/local/bin:/usr/bin:/bin \
    --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --config.label org.opencontainers.image.title=crucible \
    --config.label "org.opencontainers.image.version=$version" \
    --config.label "org.opencontainers.image.revision=$revision"
  had_containers=0; [ -e /var/lib/containers ] && had_containers=1
  skopeo copy --quiet "oci:$work/oci:latest" "docker-archive:$OUT.tmp:$REF"
  # skopeo leaves a blob-info cache in /var/lib/containers/cache; do not leave it behind
  [ "$had_containers" = 1 ] || rm -rf /var/lib/containers
  mv "$OUT.tmp" "$OUT"
  echo "$stamp" >"$OUT.inputs"
  log "wrote $OUT ($REF, $(du -h "$OUT" | cut -f1), $(echo "$libs" | wc -l) libraries)"
fi

if [ "$import" = 1 ]; then
  bash "$ROOT/infrastructure/local/cluster.sh" import-image "$OUT"
  log "imported $REF into the local cluster"
fi
