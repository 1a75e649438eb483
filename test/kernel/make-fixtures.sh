#!/bin/bash
# make-fixtures.sh - regenerate test/fixtures/real/{empty,full} from a real kernel:
# boots the dm-vm.sh guest once and runs make-fixtures.guest.sh in it (about 30-60 s
# under TCG). Needs root and apt-get for the first `dm-vm.sh setup`.
#
#   test/kernel/make-fixtures.sh [OUTDIR]     (default: test/fixtures/real)
#
# Only empty/ and full/ are replaced; README.md next to them is kept.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/test/fixtures/real}
mkdir -p "$out"
out=$(readlink -f "$out")

"$here/dm-vm.sh" setup
tmp=$(mktemp -d "$out/.new.XXXX")
trap 'rm -rf "$tmp"' EXIT
rc=0
DMVM_SHARE=$tmp DMVM_TIMEOUT=${DMVM_TIMEOUT:-900} \
    "$here/dm-vm.sh" run "$here/make-fixtures.guest.sh" "$tmp" || rc=$?
if [ "$rc" != 0 ] || ! [ -s "$tmp/full/dmsetup.txt" ]; then
    echo "make-fixtures: guest failed (rc=$rc); $out left unchanged" >&2
    exit 1
fi
rm -rf "$out/empty" "$out/full"
mv "$tmp/empty" "$tmp/full" "$out/"
echo "make-fixtures: wrote $out/empty and $out/full" >&2
