# kernel-conflicts.guest.sh PROJECT [PART_TOOLS] - runs INSIDE the dm-vm.sh guest (busybox sh, real
# kernel, real dmsetup/lvm): kernel.test.mjs runs it at the start of its part `conflicts`, after the
# other parts ran on node pve1 (kernel.guest.sh), so that nothing they expect changes. Do not run it
# on a real host.
#
# Builds issue 19's conflicts with the recipes of make-conflict-fixtures.guest.sh, in two VGs of their
# own on new loop devices (loop3-5): csan, a shared thick LVM on two PVs (storage `csan`, 1 MiB
# extents), and cthin, an lvmthin pool (storage `cthin`). Every guest disk is filled with random data
# first, so that a checksum tells which blocks a device maps:
#   VM 401  csan/vm-401-disk-0 reduced 4 -> 2 MiB in the metadata only (--driverloaded n, as another
#           node of a shared VG does); VM 402's disk made on the freed extents, which the kernel
#           still maps into vm-401
#   VM 403  extended 4 -> 6 MiB, its old table loaded back
#   VM 404  moved to the other PV by pvmove, written there, its old table loaded back (the old place)
#   VM 405  a thin LV re-created: its old table maps the thin id LVM gave VM 406's disk since
#   VM 407  a stopped guest's disk with a partition table, its partitions mapped on the host by kpartx
#   VM 408  a VG of the guest's own (vg-debian: root, swap) inside its disk, activated on the host
#   VM 409  stale like 403 while the VM runs (fake-kvm.mjs holds the disk open, as QEMU does)
#   VM 410  stale like 403 while the VM is locked (lock: migrate in its config)
#   VM 411  a bystander nothing happens to
#   VM 412  stale like 403, an unused disk of a running VM (its QEMU does not hold it open)
# Writes their configs under /etc/pve/nodes/pve1 and appends the two storages to storage.cfg.
# PART_TOOLS: Debian's kpartx and sfdisk with their libraries in lib/ (part-tools.sh), as this guest
# sees them; without them the partition table is written with busybox fdisk and the partitions are
# mapped with dmsetup exactly as kpartx names them (make-conflict-fixtures.guest.sh does the same).
ROOT=${1:?usage: kernel-conflicts.guest.sh PROJECT [PART_TOOLS]}
PT=${2:-}

log() { echo ">>> [conflicts] $*" >&2; }
# x CMD...: a setup step; the whole build fails when it does
x() { "$@" || { echo "CONFLICTS-SETUP FAILED (rc=$?): $*" >&2; exit 1; }; }
die() { echo "CONFLICTS-SETUP FAILED: $*" >&2; exit 1; }
mkloop() {  # mkloop N FILE SIZE (busybox losetup has no --show)
    [ -b "/dev/loop$1" ] || mknod "/dev/loop$1" b 7 "$1"
    truncate -s "$3" "/tmp/$2" && losetup "/dev/loop$1" "/tmp/$2"
}
# reload DMNAME TABLE: put TABLE under the live device, as LVM does (load, suspend, resume)
reload() {
    x dmsetup load "$1" --table "$2"
    x dmsetup suspend "$1"
    x dmsetup resume "$1"
}
# fill DEVICE MIB: random data, past the page cache
fill() { dd if=/dev/urandom of="$1" bs=1M count="$2" oflag=direct 2>/dev/null || die "fill $1"; }
# thick NAME SIZE VMID [PV..]: as Proxmox VE 9's lvm plugin makes a disk
thick() {
    n=$1 s=$2 id=$3; shift 3
    x lvcreate -q -aly -Wy --yes --size "$s" --name "$n" --setautoactivation n --addtag "pve-vm-$id" csan "$@"
}
# thin NAME SIZE: as the lvmthin plugin makes a disk
thin() { x lvcreate -q -aly -V "$2" --name "$1" --thinpool cthin/data; }
field() { lvs --noheadings -o "$1" "$2" | tr -d ' '; }
SCAN_LVS='devices { scan_lvs = 1 }'

t0=$(cut -d' ' -f1 /proc/uptime)
x modprobe -a dm_mirror       # pvmove's temporary mirror
cd /tmp || exit 1
A=/dev/loop3 B=/dev/loop4 T=/dev/loop5
x mkloop 3 csan-a.img 64M
x mkloop 4 csan-b.img 64M
x mkloop 5 cthin.img 128M
x pvcreate -q "$A" "$B" "$T"
x vgcreate -q -s 1M csan "$A" "$B"
x vgcreate -q -s 1M cthin "$T"
x lvcreate -q -L 64M --chunksize 64K -T cthin/data

# ---- 1. reduced behind the active LV, its freed extents given to another guest --------------
thick vm-401-disk-0 4M 401 "$A:0-3"
fill /dev/mapper/csan-vm--401--disk--0 4
x lvreduce -q -f -L 2M --driverloaded n csan/vm-401-disk-0   # metadata only: A 0-1
thick vm-402-disk-0 2M 402 "$A:2-3"                                     # what vm-401 still maps
fill /dev/mapper/csan-vm--402--disk--0 2
[ "$(field seg_pe_ranges csan/vm-402-disk-0)" = "$A:2-3" ] || die "vm-402-disk-0 is not on $A:2-3"

# ---- 2. extended, then the old table loaded back; pvmoved, then the old table loaded back -----
stale_extended() {  # NAME VMID [PV]: 4 MiB, grown by 2 MiB, the 4 MiB table loaded back
    thick "$1" 4M "$2" ${3:+"$3"}
    d=/dev/mapper/csan-$(echo "$1" | sed 's/-/--/g')
    old=$(dmsetup table "${d#/dev/mapper/}") || die "dmsetup table ${d#/dev/mapper/}"
    x lvextend -q -L +2M "csan/$1"
    fill "$d" 6
    reload "${d#/dev/mapper/}" "$old"
}
stale_extended vm-403-disk-0 403
thick vm-404-disk-0 4M 404 "$A"
fill /dev/mapper/csan-vm--404--disk--0 4
T404=$(dmsetup table csan-vm--404--disk--0) || die "dmsetup table csan-vm--404--disk--0"
x lvm pvmove -q -i 0 --config 'global { use_lvmpolld = 0 }' -n vm-404-disk-0 "$A" "$B"
case $(field seg_pe_ranges csan/vm-404-disk-0) in "$B":*) ;; *) die "pvmove left vm-404-disk-0 on $A";; esac
fill /dev/mapper/csan-vm--404--disk--0 4      # written after the move: on PV B only
reload csan-vm--404--disk--0 "$T404"          # the kernel maps PV A again, free in LVM
dmsetup --manglename none ls | grep -q pvmove && die "pvmove left its mirror behind"

# ---- 3. a thin LV re-created: its old table maps the thin id LVM then gave another guest ------
thin vm-407-disk-0 8M
thin vm-408-disk-0 8M
thin vm-405-disk-0 4M                  # the highest thin id: LVM gives it again after lvremove
fill /dev/mapper/cthin-vm--405--disk--0 4
T405=$(dmsetup table cthin-vm--405--disk--0) || die "dmsetup table cthin-vm--405--disk--0"
ID405=$(field thin_id cthin/vm-405-disk-0)
x lvremove -q -y cthin/vm-405-disk-0
thin vm-406-disk-0 4M
thin vm-405-disk-0 4M
[ "$(field thin_id cthin/vm-406-disk-0)" = "$ID405" ] || die "vm-406-disk-0 did not get vm-405's old thin id $ID405"
fill /dev/mapper/cthin-vm--406--disk--0 4
fill /dev/mapper/cthin-vm--405--disk--0 4
reload cthin-vm--405--disk--0 "$T405"

# ---- 4. partitions of a stopped guest's disk mapped on the host ------------------------------
fill /dev/mapper/cthin-vm--407--disk--0 8
KPARTX=0 SFDISK=0
if [ -n "$PT" ]; then
    mkdir -p /run/part
    for t in kpartx sfdisk; do
        printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/lib exec %s/sbin/%s "$@"\n' "$PT" "$PT" "$t" >"/run/part/$t"
        chmod 755 "/run/part/$t"
    done
    /run/part/sfdisk --version >/dev/null 2>&1 && SFDISK=1
    [ -x "$PT/sbin/kpartx" ] && /run/part/kpartx 2>&1 | grep -q '^Usage' && KPARTX=1
fi
log "kpartx: $KPARTX, sfdisk: $SFDISK"
# dos: 4 MiB, then the rest (3 MiB) as swap
if [ $SFDISK = 1 ]; then
    printf 'label: dos\nstart=2048, size=8192, type=83\nstart=10240, type=82\n' >/tmp/vm-407.sfdisk
    x /run/part/sfdisk -q --no-reread --no-tell-kernel /dev/mapper/cthin-vm--407--disk--0 </tmp/vm-407.sfdisk
else
    # (busybox fdisk exits 1 when the kernel cannot re-read a dm device's table: written anyway)
    printf 'o\nn\np\n1\n2048\n10239\nn\np\n2\n10240\n\nt\n2\n82\nw\n' |
        fdisk /dev/mapper/cthin-vm--407--disk--0 >/dev/null 2>&1
fi
SIG=$(dd if=/dev/mapper/cthin-vm--407--disk--0 bs=1 skip=510 count=2 2>/dev/null | od -An -tx1 | tr -d ' \n')
[ "$SIG" = 55aa ] || die "no partition table on vm-407-disk-0"
if [ $KPARTX = 1 ]; then
    x /run/part/kpartx -a -v /dev/mapper/cthin-vm--407--disk--0 >&2
else
    P=$(dmsetup info -c --noheadings -o major,minor,uuid --separator ' ' cthin-vm--407--disk--0) || exit 1
    # shellcheck disable=SC2086
    set -- $P
    x dmsetup create cthin-vm--407--disk--0p1 --uuid "part1-$3" --table "0 8192 linear $1:$2 2048"
    x dmsetup create cthin-vm--407--disk--0p2 --uuid "part2-$3" --table "0 6144 linear $1:$2 10240"
fi
for p in 1 2; do dmsetup info "cthin-vm--407--disk--0p$p" >/dev/null 2>&1 || die "no partition map p$p"; done

# ---- 5. the guest's own VG, made inside its disk and activated on the host ---------------------
# LVM skips LVs as PVs (scan_lvs = 0): only these steps see it
fill /dev/mapper/cthin-vm--408--disk--0 8
x pvcreate -q --config "$SCAN_LVS" /dev/cthin/vm-408-disk-0
x vgcreate -q -s 1M --config "$SCAN_LVS" vg-debian /dev/cthin/vm-408-disk-0
x lvcreate -q -Wy --yes --config "$SCAN_LVS" -L 3M -n root vg-debian
x lvcreate -q -Wy --yes --config "$SCAN_LVS" -L 2M -n swap vg-debian
fill /dev/mapper/vg--debian-root 3
fill /dev/mapper/vg--debian-swap 2
x vgchange -q --config "$SCAN_LVS" -an vg-debian
x vgchange -q --config "$SCAN_LVS" -ay vg-debian

# ---- stale too, but not pve-dm's to touch: a running VM's disk, a locked VM's disk; a bystander --
stale_extended vm-409-disk-0 409 "$B"
stale_extended vm-410-disk-0 410 "$B"
thick vm-411-disk-0 2M 411 "$B"
fill /dev/mapper/csan-vm--411--disk--0 2
stale_extended vm-412-disk-0 412 "$B"
sync

# ---- /etc/pve --------------------------------------------------------------------------------
cat >> /etc/pve/storage.cfg <<'EOF'
lvm: csan
	vgname csan
	content images,rootdir
	saferemove 0
	shared 1

lvmthin: cthin
	thinpool data
	vgname cthin
	content images,rootdir

EOF
conf() {  # conf VMID STORAGE SIZE [LINE]: a VM with one disk (and LINE)
    f=/etc/pve/nodes/pve1/qemu-server/$1.conf
    printf 'cores: 1\nmemory: 512\nname: cf%s\nscsi0: %s:vm-%s-disk-0,size=%s\nscsihw: virtio-scsi-single\n' \
        "$1" "$2" "$1" "$3" >"$f"
    [ -z "${4:-}" ] || echo "$4" >>"$f"
}
conf 401 csan 2M
conf 402 csan 2M
conf 403 csan 6M
conf 404 csan 4M
conf 405 cthin 4M
conf 406 cthin 4M
conf 407 cthin 8M
conf 408 cthin 8M
conf 409 csan 6M
conf 410 csan 6M 'lock: migrate'
conf 411 csan 2M
printf 'cores: 1\nmemory: 512\nname: cf412\nscsihw: virtio-scsi-single\nunused0: csan:vm-412-disk-0\n' \
    >/etc/pve/nodes/pve1/qemu-server/412.conf

# running VMs: QEMU as qemu-server starts it (fake-kvm.mjs through /usr/bin/kvm, kernel.guest.sh)
start_vm() {  # start_vm VMID [DISK]: VM VMID runs, holding DISK open
    /usr/bin/kvm "$ROOT/test/kernel/fake-kvm.mjs" -id "$1" -name "cf$1,debug-threads=on" \
        -pidfile "/var/run/qemu-server/$1.pid" -daemonize -smp 1 -m 512 \
        ${2:+-drive "file=$2,if=none,id=drive-scsi0,format=raw"} </dev/null >/dev/null 2>&1 &
    pid=$!
    i=0
    while ! [ -s "/run/qemu-server/$1.pid" ]; do
        i=$((i + 1)); [ $i -le 240 ] || die "the stand-in kvm (VM $1) did not start"
        kill -0 $pid 2>/dev/null || die "the stand-in kvm (VM $1) died"
        sleep 0.5
    done
}
start_vm 409 /dev/mapper/csan-vm--409--disk--0
start_vm 412

t1=$(cut -d' ' -f1 /proc/uptime)
log "built in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s:"
dmsetup --manglename none table | grep -E '^(csan|cthin-vm|vg--debian)' | sed 's/^/>>>   /' >&2
exit 0
