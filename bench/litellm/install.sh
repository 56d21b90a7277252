#!/usr/bin/env bash
# bench/litellm/install.sh: makes sure LiteLLM's proxy (the benchmark's baseline for the model
# gateway) is installed in the tools cache, and prints the path of its `litellm` command.
# `crucible-bench gateway --litellm` runs this (it carries a copy built in); it can also be run
# by hand. A virtual environment of its own under $CACHE/tools/litellm-$VERSION, never in the
# repository; installed once, and again only when the pin changes or an install broke off.
set -euo pipefail

# litellm[proxy], pinned: figures are compared across runs. The newest whose `proxy` extra
# installs from the registry this project uses: 1.110 needs a `litellm-proxy` package it does
# not carry, and later 1.108 and 1.109 releases (1.108.14 and 1.109.3 checked) pin
# `litellm-proxy-extras` builds newer than it has.
VERSION=1.108.0
CACHE=${CRUCIBLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/crucible}
VENV=$CACHE/tools/litellm-$VERSION
STAMP=$VENV/.installed   # written last: a venv without it is an unfinished install

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

if [ ! -f "$STAMP" ]; then
  log "installing litellm[proxy]==$VERSION into $VENV (once; a few minutes)"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV" 2>/dev/null || {
    rm -rf "$VENV"
    command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] || { log "python3 -m venv failed"; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  }
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "litellm[proxy]==$VERSION" >&2
  touch "$STAMP"
fi
echo "$VENV/bin/litellm"
