#!/bin/bash
# make-fixtures.sh - regenerate test/fixtures/real/{empty,full} from a real kernel:
# boots the dm-vm.sh guest once and runs make-fixtures.guest.sh in it (about 30-60 s
# under TCG). Needs root and apt-get for the first `dm-vm.sh setup`.
#
#   test/kernel/make-fixtures.sh [OUTDIR]         (default: test/fixtures/real)
#   test/kernel/make-fixtures.sh pools [OUTDIR]   only OUTDIR/pools: thin pools and VGs in
#                                                 trouble (make-pool-fixtures.guest.sh)
#   test/kernel/make-fixtures.sh conflicts [OUTDIR]   only OUTDIR/conflicts: kernel tables that
#                                                 differ from LVM's metadata, maps stacked on
#                                                 guest volumes (make-conflict-fixtures.guest.sh)
#
# Only the set made (empty/ and full/, pools/ or conflicts/) is replaced; README.md next to
# them, pools/README.md and conflicts/README.md, are kept.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
set_=default
case ${1:-} in pools|conflicts) set_=$1; shift;; esac
out=${1:-$root/test/fixtures/real}
mkdir -p "$out"
out=$(readlink -f "$out")

# thin_tools: Debian's thin-provisioning-tools for the pools guest (thin-tools.sh)
. "$here/thin-tools.sh"

# part_tools: Debian's kpartx and sfdisk for the conflicts guest (part-tools.sh)
. "$here/part-tools.sh"

# run_set SET GUEST_SCRIPT CHECK TOOLS: runs the guest script into $tmp/SET (TOOLS shared with the
# guest and given as its second argument), and only when it wrote CHECK replaces $out/SET with it,
# keeping $out/SET/README.md.
run_set() {
    local set=$1 script=$2 check=$3 tools=$4 rc=0
    DMVM_SHARE=$tmp${tools:+:$tools} DMVM_TIMEOUT=${DMVM_TIMEOUT:-900} \
        "$here/dm-vm.sh" run "$here/$script" "$tmp/$set" ${tools:+"$tools"} || rc=$?
    if [ "$rc" != 0 ] || ! [ -s "$tmp/$set/$check" ]; then
        echo "make-fixtures: guest failed (rc=$rc); $out left unchanged" >&2
        exit 1
    fi
    [ ! -f "$out/$set/README.md" ] || cp -p "$out/$set/README.md" "$tmp/$set/"
    rm -rf "${out:?}/$set"
    mv "$tmp/$set" "$out/"
    echo "make-fixtures: wrote $out/$set" >&2
}

"$here/dm-vm.sh" setup
tmp=$(mktemp -d "$out/.new.XXXX")
trap 'rm -rf "$tmp"' EXIT
rc=0
if [ $set_ = conflicts ]; then
    tools=$(part_tools)
    [ -n "$tools" ] || echo "make-fixtures: no kpartx/sfdisk; the guest makes the partition maps with dmsetup" >&2
    run_set conflicts make-conflict-fixtures.guest.sh conflicting/dmsetup-table.txt "$tools"
    exit 0
fi
if [ $set_ = pools ]; then
    tools=$(thin_tools)
    [ -n "$tools" ] || echo "make-fixtures: no thin-provisioning-tools; repair scenarios skipped" >&2
    # ~1.2 GB of pool data lands in the guest's tmpfs
    export DMVM_MEM=${DMVM_MEM:-3072}
    run_set pools make-pool-fixtures.guest.sh lvs.txt "$tools"
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
