#!/usr/bin/env bash
# Tests the Argo CD health check: runs argocd/health.lua against every case of
# argocd/health_test.yaml (Argo CD's resource_customizations layout) and compares the health
# status and message. One line per case, then "N passed, M failed"; exits non-zero on any
# failure.
#
#   sudo bash infrastructure/gitops/test.sh
#
# Needs Lua 5.1 (Argo CD's Lua is gopher-lua, a Lua 5.1) and a YAML module for it. Debian
# bookworm has both: lua5.1 and lua-yaml (lyaml, a LibYAML binding built for 5.1-5.4). They are
# installed when missing (apt-get update once, then apt-get install), which needs root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
packages=(lua5.1 lua-yaml)

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "test.sh: missing Debian packages: ${missing[*]}; run as root to install them" >&2
    exit 2
  fi
  echo "test.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if ! lua5.1 -e 'require("lyaml")' 2>/dev/null; then
  echo "test.sh: lua5.1 cannot load lyaml (package lua-yaml)" >&2
  exit 2
fi

cd "$here/argocd"
shopt -s nullglob
testdata=(testdata/*.yaml)
exec lua5.1 "$here/run_health_tests.lua" "$here/argocd" "${testdata[@]}"
