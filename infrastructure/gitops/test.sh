#!/usr/bin/env bash
# Tests the Argo CD health check the way Argo CD runs it: argocd/health.lua under gopher-lua (the
# Lua Argo CD embeds), with the object as `obj` and only the libraries Argo CD opens, against
# every case of argocd/health_test.yaml (Argo CD's resource_customizations layout), comparing
# status and message. One line per case, then "N passed, M failed"; exits non-zero on any
# failure or on a testdata file no case uses.
#
#   sudo bash infrastructure/gitops/test.sh
#
# The checker is infrastructure/local/gomod/gitops-health (kstatus and gopher-lua from the Go
# module proxy), built once into the cache by `cluster.sh tool gitops-health` (root: it may
# install Go). scripts/demo.sh runs its `live` mode against the examples on the cluster.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
checker=$(bash "$here/../local/cluster.sh" tool gitops-health)
exec "$checker" cases "$here/argocd"
