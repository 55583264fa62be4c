#!/bin/sh
# Compare `fleetrun apply` end to end between a commit and the working tree,
# in the same rounds of bench_spawn.py.
#
#   bench/compare.sh [REV|DIR] [bench_spawn.py options...]
#
# REV (default HEAD) is checked out as a git worktree under /tmp (kept for
# later runs); DIR is any other fleetrun checkout. The working tree holding
# this script is "after". Example: bench/compare.sh HEAD~3 --rounds 7
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
before=${1:-HEAD}
[ $# -gt 0 ] && shift
if [ -d "$before" ]; then
    dir=$before
else
    rev=$(git -C "$here" rev-parse --short "$before^{commit}")
    dir=/tmp/fleetrun-before-$rev
    [ -d "$dir" ] || git -C "$here" worktree add --detach "$dir" "$rev" >/dev/null
fi
exec "${PYTHON:-python3}" "$here/bench/bench_spawn.py" \
    --fleetrun-src "before=$dir" --fleetrun-src "after=$here" "$@"
