#!/bin/bash
# make-fixtures.sh - regenerate test/fixtures/real/{empty,full} from a real kernel:
# boots the dm-vm.sh guest once and runs make-fixtures.guest.sh in it (about 30-60 s
# under TCG). Needs root and apt-get for the first `dm-vm.sh setup`.
#
#   test/kernel/make-fixtures.sh [OUTDIR]         (default: test/fixtures/real)
#   test/kernel/make-fixtures.sh pools [OUTDIR]   only OUTDIR/pools: thin pools and VGs in
#                                                 trouble (make-pool-fixtures.guest.sh)
#
# Only the set made (empty/ and full/, or pools/) is replaced; README.md next to them, and
# pools/README.md, are kept.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
set_=default
if [ "${1:-}" = pools ]; then set_=pools; shift; fi
out=${1:-$root/test/fixtures/real}
mkdir -p "$out"
out=$(readlink -f "$out")

# thin_tools: Debian's thin-provisioning-tools for the pools guest (thin-tools.sh)
. "$here/thin-tools.sh"

"$here/dm-vm.sh" setup
tmp=$(mktemp -d "$out/.new.XXXX")
trap 'rm -rf "$tmp"' EXIT
rc=0
if [ $set_ = pools ]; then
    tools=$(thin_tools)
    [ -n "$tools" ] || echo "make-fixtures: no thin-provisioning-tools; repair scenarios skipped" >&2
    # ~1.2 GB of pool data lands in the guest's tmpfs
    DMVM_SHARE=$tmp${tools:+:$tools} DMVM_TIMEOUT=${DMVM_TIMEOUT:-900} DMVM_MEM=${DMVM_MEM:-3072} \
        "$here/dm-vm.sh" run "$here/make-pool-fixtures.guest.sh" "$tmp/pools" ${tools:+"$tools"} || rc=$?
    if [ "$rc" != 0 ] || ! [ -s "$tmp/pools/lvs.txt" ]; then
        echo "make-fixtures: guest failed (rc=$rc); $out left unchanged" >&2
        exit 1
    fi
    [ ! -f "$out/pools/README.md" ] || cp -p "$out/pools/README.md" "$tmp/pools/"
    rm -rf "$out/pools"
    mv "$tmp/pools" "$out/"
    echo "make-fixtures: wrote $out/pools" >&2
    exit 0
fi
DMVM_SHARE=$tmp DMVM_TIMEOUT=${DMVM_TIMEOUT:-900} \
    "$here/dm-vm.sh" run "$here/make-fixtures.guest.sh" "$tmp" || rc=$?
if [ "$rc" != 0 ] || ! [ -s "$tmp/full/dmsetup.txt" ]; then
    echo "make-fixtures: guest failed (rc=$rc); $out left unchanged" >&2
    exit 1
fi
rm -rf "$out/empty" "$out/full"
mv "$tmp/empty" "$tmp/full" "$out/"
echo "make-fixtures: wrote $out/empty and $out/full" >&2
