#!/bin/bash
# selftest.sh: cheap checks of the infrastructure scripts that need no cluster (a few seconds).
#  - bash -n and shellcheck on every script and on cluster.sh's lib/*.sh (installs shellcheck with
#    apt if missing); the lib files are checked as cluster.sh sources them (shellcheck -a), so
#    each one must be sourced by cluster.sh, and no function may be defined twice among them
#  - `cluster.sh down` exits 0 twice in a row when nothing is running. If the real cluster is
#    running (or its state dir exists), that check runs against an empty scratch CRUCIBLE_LAB
#    instead, which leaves the real cluster alone.
#  - `status` exits non-zero when nothing runs; `env`, `kubeconfig` and `--help` print.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INFRA=$(dirname "$HERE")
SCRIPTS=("$HERE/cluster.sh" "$HERE/runsc-wrapper" "$HERE/selftest.sh")
LIBS=("$HERE"/lib/*.sh)   # sourced by cluster.sh, not run on their own
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }

for s in "${SCRIPTS[@]}" "${LIBS[@]}"; do
  if bash -n "$s"; then ok "bash -n ${s#"$INFRA"/}"; else bad "bash -n ${s#"$INFRA"/}"; fi
done

# `shellcheck -a` below reaches a lib file only through cluster.sh's `. "$SCRIPT_DIR/lib/NAME.sh"`
# shellcheck disable=SC2016  # the literal $SCRIPT_DIR is what cluster.sh contains
sourced=$(sed -n 's|^\. "\$SCRIPT_DIR/\(lib/[a-z]*\.sh\)"$|\1|p' "$HERE/cluster.sh" | sort)
present=$(for s in "${LIBS[@]}"; do echo "${s#"$HERE"/}"; done | sort)
if [ "$sourced" = "$present" ]; then
  ok "cluster.sh sources every lib/*.sh ($(echo "$present" | wc -l) files)"
else
  bad "cluster.sh sources [$(echo "$sourced" | tr '\n' ' ')] but lib/ has [$(echo "$present" | tr '\n' ' ')]"
fi
# a second definition would silently replace the first one sourced
dups=$(cat "$HERE/cluster.sh" "${LIBS[@]}" | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)() *{.*/\1/p' | sort | uniq -d)
if [ -z "$dups" ]; then ok "no function defined twice in cluster.sh + lib/"; else bad "defined twice: $dups"; fi

if ! command -v shellcheck >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing shellcheck"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
  fi
fi
if command -v shellcheck >/dev/null; then
  # -a: also report what is wrong in the files cluster.sh sources, checked in its context
  if shellcheck -x -a "${SCRIPTS[@]}"; then ok "shellcheck"; else bad "shellcheck"; fi
  # s3.sh uses only part of what it sources, so the sourced files are not checked in its context
  if bash -n "$HERE/s3.sh" && shellcheck -x "$HERE/s3.sh"; then ok "s3.sh"; else bad "s3.sh"; fi
else
  bad "shellcheck not available"
fi

scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
real_lab=${CRUCIBLE_LAB:-/var/lib/crucible-local}
if [ "$(id -u)" != 0 ]; then
  echo "skip down/status checks (need root)"
else
  if [ -e "$real_lab" ]; then
    echo "note: $real_lab exists (cluster up?): running the down checks on a scratch state dir"
    lab=$scratch/lab
  else
    lab=$real_lab
  fi
  for i in 1 2; do
    if CRUCIBLE_LAB=$lab CRUCIBLE_CACHE=$scratch/cache bash "$HERE/cluster.sh" down >"$scratch/down.out" 2>&1; then
      ok "cluster.sh down with nothing running (run $i, CRUCIBLE_LAB=$lab)"
    else
      bad "cluster.sh down with nothing running (run $i): $(cat "$scratch/down.out")"
    fi
  done
  if CRUCIBLE_LAB=$scratch/lab CRUCIBLE_CACHE=$scratch/cache bash "$HERE/cluster.sh" status >/dev/null 2>&1; then
    bad "status exits 0 with nothing running"
  else
    ok "status exits non-zero with nothing running"
  fi
fi
# the Kubernetes release is named once, in gomod/kubernetes/go.mod's require line; every staging
# module must be replaced by the same release's v0.x.y
k8s=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$HERE/gomod/kubernetes/go.mod")
staging=v0.${k8s#v1.}
wrong=$(awk -v want="$staging" '/^replace \(/ {r = 1; next} r && /^\)/ {r = 0} r && $4 != want {print $1 " " $4}' \
          "$HERE/gomod/kubernetes/go.mod")
if [ -n "$k8s" ] && [ -z "$wrong" ] && grep -q "=> k8s.io/api $staging\$" "$HERE/gomod/kubernetes/go.mod"; then
  ok "gomod/kubernetes: k8s.io/kubernetes $k8s, every staging module at $staging"
else
  bad "gomod/kubernetes: k8s.io/kubernetes '$k8s' but replaced with: $wrong"
fi
out=$(CRUCIBLE_LAB=/x/lab CRUCIBLE_CACHE=/x/cache bash "$HERE/cluster.sh" env)
# shellcheck disable=SC2016  # the literal $PATH is what `env` must print
if [ "$out" = "export KUBECONFIG=/x/lab/kubeconfig; export PATH=/x/cache/k8s-${k8s#v}/bin:\$PATH" ]; then
  ok "env"
else
  bad "env printed: $out"
fi
if [ "$(CRUCIBLE_LAB=/x/lab bash "$HERE/cluster.sh" kubeconfig)" = /x/lab/kubeconfig ]; then ok "kubeconfig"; else bad "kubeconfig"; fi
if bash "$HERE/cluster.sh" --help | grep -q '^  up '; then ok "--help"; else bad "--help"; fi
if bash "$HERE/cluster.sh" no-such-command >/dev/null 2>&1; then bad "unknown subcommand exits 0"; else ok "unknown subcommand exits non-zero"; fi

if [ "$fail" != 0 ]; then echo "selftest: FAILED"; exit 1; fi
echo "selftest: all passed"
