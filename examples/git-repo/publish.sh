#!/usr/bin/env bash
# Publishes examples/git-repo/ as a bare Git repository for the git-source example and the
# demo: file://$CRUCIBLE_EXAMPLES_REPO (default /var/lib/crucible-local/repos/examples.git),
# branch main. Re-running commits the current files again only if they changed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${CRUCIBLE_EXAMPLES_REPO:-/var/lib/crucible-local/repos/examples.git}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$(dirname "$REPO")"
[ -d "$REPO" ] || git init -q --bare -b main "$REPO"
git clone -q "$REPO" "$WORK/clone" 2>/dev/null
cd "$WORK/clone"
git checkout -q -B main
rsync -a --delete --exclude .git --exclude publish.sh "$HERE/" ./ 2>/dev/null || {
  find . -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
  (cd "$HERE" && tar --exclude publish.sh -cf - .) | tar -xf -
}
git add -A
if ! git diff --cached --quiet; then
  git -c user.name=crucible -c user.email=crucible@localhost commit -q -m "examples"
  git push -q origin main
fi
echo "file://$REPO"
