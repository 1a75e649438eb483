#!/bin/bash
# kernel-test.sh [all|classify|cleanup|conflicts|faults] - the real-kernel test tier (npm run test:kernel).
#
# Boots Debian's kernel under qemu once (dm-vm.sh; TCG, no KVM needed), builds a Proxmox VE node
# "pve1" on loop devices inside it (kernel.guest.sh: VGs pve and ssd-ha01, real LVs, /etc/pve,
# stale and hand-made dm entries, a running VM and container), and runs pve-dm there against the
# live system (kernel.test.mjs): classification first, then cleanup / journal / restore, the pool
# remedies, then the conflicts of issue 19 (stale tables, maps stacked on guest volumes) built in VGs
# of their own and cleaned, checked against the data's checksums, and restored; last the faults of
# issue 20 (pve-dm SIGKILLed at every step of a cleanup and of a restore through the test-only preload
# fault-hook.mjs, its journal unwritable or filling up, races, a hanging lvchange). A MODE other than
# all runs its part alone (cleanup: with the pool remedies).
#
# Needs root and apt-get the first time (dm-vm.sh setup installs qemu, lvm2, ...; about a
# minute). The project folder is shared into the guest read-write with cache=loose
# (DMVM_SHARE_LOOSE) and the host's node runs it from /host, so `npm ci` must have been run.
# Exit status: 0 only when the guest printed "N passed, 0 failed" and exited 0; non-zero when
# a test failed, the VM died or timed out (DMVM_TIMEOUT, default here 3600 s).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mode=${1:-all}
case $mode in all|classify|cleanup|conflicts|faults) ;; *) echo "usage: $0 [all|classify|cleanup|conflicts|faults]" >&2; exit 2;; esac

t0=$(date +%s)
[ -d "$root/node_modules/tsx" ] || { echo "kernel-test: $root/node_modules/tsx missing: run npm ci first" >&2; exit 2; }
"$here/dm-vm.sh" setup
# lvconvert --repair in the guest (tank/cold's leftover cold_meta0) needs thin_repair
. "$here/thin-tools.sh"
tools=$(thin_tools)
[ -n "$tools" ] || { echo "kernel-test: could not fetch thin-provisioning-tools (apt-get download)" >&2; exit 2; }
# kpartx -a in the conflicts part: Debian's kpartx and sfdisk (without them the guest writes the
# partition table with busybox fdisk and maps the partitions with dmsetup as kpartx names them)
. "$here/part-tools.sh"
parttools=""
case $mode in all|conflicts) parttools=$(part_tools)
    [ -n "$parttools" ] || echo "kernel-test: no kpartx/sfdisk (apt-get download): partitions mapped with dmsetup" >&2;;
esac
t1=$(date +%s)

out=$(mktemp "${TMPDIR:-/tmp}/kernel-test.XXXX")
trap 'rm -f "$out"' EXIT
set +e
DMVM_SHARE_LOOSE=$root DMVM_MEM=${DMVM_MEM:-1536} DMVM_TIMEOUT=${DMVM_TIMEOUT:-3600} \
    "$here/dm-vm.sh" run "$here/kernel.guest.sh" "$root" "$mode" "$tools" "$parttools" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
set -e
t2=$(date +%s)

summary=$(tr -d '\r' < "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1 || true)
echo
echo "kernel-test: setup $((t1 - t0)) s, VM run $((t2 - t1)) s, total $((t2 - t0)) s"
if [ -z "$summary" ]; then
    echo "kernel-test: FAILED: the guest printed no totals (VM died, timed out or setup failed; guest exit $rc)" >&2
    exit 1
fi
tr -d '\r' < "$out" | grep -E '^KERNEL-TEST ' || true
echo "$summary"
failed=${summary#*passed, }; failed=${failed% failed}
if [ "$rc" != 0 ] || [ "$failed" != 0 ]; then
    echo "kernel-test: FAILED (guest exit $rc)" >&2
    exit 1
fi
