#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# s3.sh - a local S3-compatible server for the samples store's s3:// tests (docs/samples.md):
# SeaweedFS's `weed` (the release: gomod/seaweedfs/go.mod), built from the Go module proxy into
# $CACHE (never the repository), listening on 127.0.0.1 only, with one fixed test credential.
# Needs no cluster and touches none.
#
#   s3.sh up     build `weed` (first time: minutes), start it, create the bucket (idempotent)
#   s3.sh env    the variables the store and the tests read:  eval "$(s3.sh env)"
#   s3.sh down   stop it (the data stays in $S3_DIR/data until removed)
#
# Then: eval "$(infrastructure/local/s3.sh env)"
#       cargo test -p crucible --lib store:: -- --ignored
set -euo pipefail
INFRA_DIR=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/common.sh
. "$INFRA_DIR/local/lib/common.sh"
# shellcheck source=lib/build.sh
. "$INFRA_DIR/local/lib/build.sh"

SW_VERSION=$(gomod_version seaweedfs github.com/seaweedfs/seaweedfs)
SW_BIN=$CACHE/seaweedfs-$SW_VERSION/bin
S3_DIR=${CRUCIBLE_S3_DIR:-$CACHE/s3}
S3_PORT=${CRUCIBLE_S3_PORT:-8333}
MASTER_PORT=${CRUCIBLE_S3_MASTER_PORT:-9633}
BUCKET=crucible-results
# A test credential for a server bound to 127.0.0.1: not a secret.
ACCESS_KEY=crucible-test
SECRET_KEY=crucible-test-secret

weed_pid() {   # the pid of our weed, if it runs: alive, argv[0] our binary, data dir ours
  local p; p=$(cat "$S3_DIR/weed.pid" 2>/dev/null) || return 1
  [ "$(argv0 "$p")" = "$SW_BIN/weed" ] && cmdline "$p" | grep -q -- "$S3_DIR/data" && echo "$p"
}

ensure_weed() {
  [ -x "$SW_BIN/weed" ] && return 0
  ensure_go
  go_build seaweedfs "$SW_BIN" "" github.com/seaweedfs/seaweedfs/weed
}

s3_ready() { curl -s -o /dev/null -m 2 "http://127.0.0.1:$S3_PORT/"; }

up() {
  ensure_weed
  mkdir -p "$S3_DIR/data"
  cat >"$S3_DIR/s3.json" <<EOF
{"identities": [{"name": "crucible-test",
  "credentials": [{"accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
  if ! weed_pid >/dev/null; then
    log "starting weed (S3 on 127.0.0.1:$S3_PORT)"
    setsid "$SW_BIN/weed" server -dir="$S3_DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -master.port="$MASTER_PORT" -volume.port=$((MASTER_PORT + 1)) -filer.port=$((MASTER_PORT + 2)) \
      -master.volumeSizeLimitMB=64 -volume.max=32 -s3 -s3.port="$S3_PORT" -s3.config="$S3_DIR/s3.json" \
      >"$S3_DIR/weed.log" 2>&1 </dev/null &
    echo $! >"$S3_DIR/weed.pid"
  fi
  wait_for "S3 on 127.0.0.1:$S3_PORT" 120 s3_ready || { tail -20 "$S3_DIR/weed.log" >&2; exit 1; }
  # The bucket, through weed's own shell (no S3 client needed); an existing one is fine.
  echo "s3.bucket.create -name $BUCKET" |
    "$SW_BIN/weed" shell -master="127.0.0.1:$MASTER_PORT" >>"$S3_DIR/weed.log" 2>&1 || true
  log "bucket s3://$BUCKET ready; eval \"\$($0 env)\""
}

env_() {
  cat <<EOF
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=us-east-1
export AWS_ENDPOINT=http://127.0.0.1:$S3_PORT
export AWS_ALLOW_HTTP=true
export CRUCIBLE_TEST_S3_URL=s3://$BUCKET/tests
EOF
}

down() {
  local p
  if p=$(weed_pid); then kill_pids weed "$p"; fi
  rm -f "$S3_DIR/weed.pid"
}

case ${1:-} in
  up) up ;;
  env) env_ ;;
  down) down ;;
  *) echo "usage: $0 up|env|down" >&2; exit 2 ;;
esac
