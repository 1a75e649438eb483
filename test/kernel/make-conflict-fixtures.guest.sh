# make-conflict-fixtures.guest.sh OUTDIR [PARTTOOLS] - runs INSIDE the dm-vm.sh guest
# (busybox sh, real kernel, real dmsetup/lvm). Builds on loop devices a VG `pve` (thin pool
# `data`, thin and thick LVs) and a shared-LVM stand-in `san01` on two PVs (multi-segment,
# striped, COW snapshot), captures that consistent state, then makes the mappings that corrupt
# data silently: kernel tables that differ from LVM's metadata (an extended LV with its old
# table, an LV moved by pvmove with its old table, an LV reduced behind the kernel whose freed
# extents went to a new LV, a re-created thin LV mapping its old thin id, which LVM gave to
# another LV) and maps stacked on guest volumes (kpartx partitions of a guest disk, a VG made
# inside a guest disk and activated here). Writes the real output of dmsetup/lvm/pvs and the
# sysfs device numbers for each state into OUTDIR/{consistent,conflicting,remedies}, the last
# after lvchange --refresh, kpartx -d and vgchange -an; `lvs/pvs -o help` and versions.txt into
# OUTDIR. PARTTOOLS: Debian's kpartx and sfdisk
# unpacked with their libraries in lib/ (make-fixtures.sh conflicts prepares it); without it the
# partitions are written with busybox fdisk and mapped with dmsetup the way kpartx names them.
# Started by `make-fixtures.sh conflicts`; do not run it on a real host. No `set -e`: busybox
# sh, and failing commands are part of what is captured; x() aborts on setup failures.
OUT=${1:?usage: make-conflict-fixtures.guest.sh OUTDIR [PARTTOOLS]}
PT=${2:-}
C=$OUT/consistent K=$OUT/conflicting R=$OUT/remedies
mkdir -p "$C" "$K" "$R" || exit 1

log() { echo ">>> [$(cut -d' ' -f1 /proc/uptime)] $*" >&2; }
# x CMD...: a setup step; abort the whole run when it fails
x() { log "$*"; "$@" || { echo "FAILED (rc=$?): $*" >&2; exit 1; }; }
# try CMD...: an optional step; report but go on
try() { log "$*"; "$@" || { echo "(optional step failed, rc=$?): $*" >&2; return 1; }; }
# cap DIR BASE CMD...: stdout -> DIR/BASE.txt, stderr -> DIR/BASE.stderr, rc -> DIR/BASE.rc
cap() { d=$1 b=$2; shift 2; "$@" >"$d/$b.txt" 2>"$d/$b.stderr"; echo $? >"$d/$b.rc"; }
mkloop() {  # mkloop N PATH SIZE -> /dev/loopN (busybox losetup has no --show)
    [ -b "/dev/loop$1" ] || mknod "/dev/loop$1" b 7 "$1"
    truncate -s "$3" "$2" && losetup "/dev/loop$1" "$2" && echo "/dev/loop$1"
}
# dmname VG LV: the dm name LVM gives an LV (hyphens doubled)
dmname() { echo "$(echo "$1" | sed 's/-/--/g')-$(echo "$2" | sed 's/-/--/g')"; }
# reload DMNAME TABLE: put TABLE under the live device, as LVM does (load, suspend, resume)
reload() {
    x dmsetup load "$1" --table "$2"
    x dmsetup suspend "$1"
    x dmsetup resume "$1"
}
# thin NAME SIZE: a thin LV the way Proxmox's lvmthin plugin makes one
thin() { x lvcreate -q -aly -V "$2" --name "$1" --thinpool pve/data; }
# thick VG NAME SIZE VMID [PV..]: as Proxmox VE 9's lvm plugin makes one
thick() {
    v=$1 n=$2 s=$3 id=$4; shift 4
    x lvcreate -q -aly -Wy --yes --size "$s" --name "$n" --setautoactivation n --addtag "pve-vm-$id" "$v" "$@"
}

# pve-dm's own commands (DM_INFO_ARGS, DM_TABLE_ARGS, LVS_ARGS in pve-dm.ts)
INFO="dmsetup --manglename none info -c --noheadings --separator | -o name,major,minor,open,attr,uuid"
TABLE="dmsetup --manglename none table"
LVS="lvs -a --noheadings --separator | --units b --nosuffix -o vg_name,lv_name,lv_attr,lv_tags,lv_uuid,vg_uuid,pool_lv,lv_size,data_percent,metadata_percent,lv_metadata_size,vg_attr,vg_free"
# the two proposed for the conflict check: every segment of every LV in sectors, and every PV
SEGS="lvs -a --segments --noheadings --separator | --units s --nosuffix -o vg_name,lv_name,lv_uuid,vg_uuid,lv_attr,vg_extent_size,seg_start,seg_size,segtype,stripes,stripe_size,chunk_size,seg_pe_ranges,thin_id,pool_lv,origin,lv_kernel_major,lv_kernel_minor"
PVS="pvs --noheadings --separator | --units s --nosuffix -o pv_name,pv_uuid,vg_name,vg_uuid,pe_start,pv_major,pv_minor"
SCAN_LVS='devices { scan_lvs = 1 }'

# state DIR: the capture files of one state
state() {
    log "capture $1"
    # shellcheck disable=SC2086
    cap "$1" dmsetup $INFO
    # shellcheck disable=SC2086
    cap "$1" dmsetup-table $TABLE
    cap "$1" dmsetup-deps dmsetup --manglename none deps -o devname
    # shellcheck disable=SC2086
    cap "$1" lvs $LVS
    # shellcheck disable=SC2086
    cap "$1" lvs-segments $SEGS
    # shellcheck disable=SC2086
    cap "$1" pvs $PVS
    # NAME MAJOR:MINOR of every block device (/sys/class/block/NAME/dev), a reference listing
    for f in /sys/class/block/*; do echo "${f##*/} $(cat "$f/dev")"; done >"$1/sysfs-dev.txt"
}

x modprobe -a dm_mod dm_thin_pool dm_snapshot dm_mirror loop

# kpartx and sfdisk from the host's packages (the initramfs has neither): wrappers, since they
# need libraries from PARTTOOLS/lib
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

cd /tmp || exit 1
L_PVE=$(mkloop 0 /tmp/pve.img 1G) || exit 1
L_SA=$(mkloop 1 /tmp/san01-a.img 256M) || exit 1
L_SB=$(mkloop 2 /tmp/san01-b.img 256M) || exit 1

# reference: the fields this LVM has
cap "$OUT" lvs-help lvs -o help
cap "$OUT" pvs-help pvs -o help
{
    uname -r; dmsetup version; lvm version
    dmsetup targets | grep -E '^(linear|striped|thin|thin-pool|snapshot|snapshot-origin|mirror) '
    [ $KPARTX = 1 ] && /run/part/kpartx 2>&1 | head -1
    [ $SFDISK = 1 ] && /run/part/sfdisk --version
} >"$OUT/versions.txt" 2>&1

# ---- pve: as the installer makes it (swap, root, thin pool data), thin and thick guest disks --
x pvcreate -q "$L_PVE"
x vgcreate -q pve "$L_PVE"
x lvcreate -q -L 32M -n swap pve
x lvcreate -q -L 64M -n root pve
x lvcreate -q -L 256M --chunksize 64K -T pve/data
thin vm-100-disk-0 1G
thin vm-101-disk-0 64M
thin vm-102-disk-0 64M
thin vm-106-disk-0 32M
thin vm-105-disk-0 32M        # the highest thin id: LVM gives it again after lvremove (c)
thick pve vm-104-disk-0 16M 104
# vm-101: a guest's disk with a partition table (dos: 32 MiB, then the rest as swap)
if [ $SFDISK = 1 ]; then
    printf 'label: dos\nstart=2048, size=65536, type=83\nstart=67584, type=82\n' >/tmp/vm-101.sfdisk
    x /run/part/sfdisk -q --no-reread --no-tell-kernel /dev/pve/vm-101-disk-0 </tmp/vm-101.sfdisk
else
    printf 'o\nn\np\n1\n2048\n67583\nn\np\n2\n67584\n\nt\n2\n82\nw\n' >/tmp/vm-101.fdisk
    # (busybox fdisk exits 1 when the kernel cannot re-read a dm device's table: written anyway)
    try fdisk /dev/pve/vm-101-disk-0 </tmp/vm-101.fdisk
    SIG=$(dd if=/dev/pve/vm-101-disk-0 bs=1 skip=510 count=2 2>/dev/null | od -An -tx1 | tr -d ' \n')
    x [ "$SIG" = 55aa ]
fi

# ---- san01: shared thick LVM stand-in on two PVs (4 MiB extents) ----------------------------
x pvcreate -q "$L_SA" "$L_SB"
x vgcreate -q san01 "$L_SA" "$L_SB"
thick san01 vm-200-disk-0 16M 200 "$L_SA"                 # A 0-3
thick san01 vm-201-disk-0 16M 201 "$L_SA"                 # A 4-7
x lvextend -q -L +16M san01/vm-200-disk-0 "$L_SB"        # B 0-3
x lvextend -q -L +8M san01/vm-200-disk-0 "$L_SA"         # A 8-9: three segments on two PVs
x lvcreate -q -aly -Wy --yes -i 2 -I 64k --size 32M --name vm-202-disk-0 --setautoactivation n \
    --addtag pve-vm-202 san01 "$L_SA" "$L_SB"            # striped: A 10-13, B 4-7
thick san01 vm-203-disk-0 16M 203 "$L_SA"                 # A 14-17
# classic (COW) snapshot, its exception store on the other PV
x lvcreate -q -s -L 8M -n snap_vm-203-disk-0_before san01/vm-203-disk-0 "$L_SB"
thick san01 vm-204-disk-0 32M 204 "$L_SA"                 # A 18-25

# ---- a. consistent: every LV as LVM made it ---------------------------------------------
state "$C"
# reference: the other range fields LVM has (seg_pe_ranges is marked deprecated)
cap "$C" lvs-segments-ranges lvs -a --segments --noheadings --separator '|' -o \
    vg_name,lv_name,segtype,seg_start_pe,seg_size_pe,seg_pe_ranges,seg_le_ranges,devices,metadata_devices,data_lv,metadata_lv

# ---- b. stale thick LVs -----------------------------------------------------------------
# pve/vm-104-disk-0: extended (16 -> 32 MiB), then its old table loaded back: the kernel maps
# the old size, LVM says the new
T104=$(dmsetup table pve-vm--104--disk--0) || exit 1
x lvextend -q -L +16M pve/vm-104-disk-0
reload pve-vm--104--disk--0 "$T104"
# san01/vm-204-disk-0 (A 18-25): reduced 32 -> 16 MiB in the metadata only (--driverloaded n:
# no dm interaction, as on another node of a shared VG), then a new LV gets the freed extents
# A 22-25: two active maps on the same extents
cap "$K" lvreduce-driverloaded-n lvreduce -f -L 16M --driverloaded n san01/vm-204-disk-0
log "lvreduce --driverloaded n: rc=$(cat "$K/lvreduce-driverloaded-n.rc")"
thick san01 vm-205-disk-0 16M 205 "$L_SA"
R205=$(lvs --noheadings -o seg_pe_ranges san01/vm-205-disk-0 | tr -d ' ')
try [ "$R205" = "$L_SA:22-25" ]   # the freed extents (else the fixture shows no overlap)
# san01/vm-201-disk-0 (A 4-7): moved to PV B by pvmove (as another node of a shared VG may
# do), then its old table loaded back: the kernel maps A 4-7, which LVM counts as free
T201=$(dmsetup table san01-vm--201--disk--0) || exit 1
x lvm pvmove -q -i 0 --config 'global { use_lvmpolld = 0 }' -n vm-201-disk-0 "$L_SA" "$L_SB"
reload san01-vm--201--disk--0 "$T201"

# ---- c. a thin LV re-created: its old table maps a thin id LVM has given to another LV -------
T105=$(dmsetup table pve-vm--105--disk--0) || exit 1
ID105=$(lvs --noheadings -o thin_id pve/vm-105-disk-0 | tr -d ' ')
x lvremove -q -y pve/vm-105-disk-0
# the kernel refuses a table for a thin id the pool does not have
cap "$K" dmsetup-create-deleted-thin-id dmsetup create probe-deleted-thin-id --table "$T105"
thin vm-107-disk-0 32M
thin vm-105-disk-0 32M
ID107=$(lvs --noheadings -o thin_id pve/vm-107-disk-0 | tr -d ' ')
log "vm-105 was thin id $ID105; now vm-107: $ID107, vm-105: $(lvs --noheadings -o thin_id pve/vm-105-disk-0)"
try [ "$ID107" = "$ID105" ]       # LVM gives the next id after the highest in use
reload pve-vm--105--disk--0 "$T105"

# ---- d. partitions of a guest disk mapped on the host -------------------------------------
if [ $KPARTX = 1 ]; then
    cap "$K" kpartx-a /run/part/kpartx -a -v /dev/mapper/pve-vm--101--disk--0
    log "kpartx -a: rc=$(cat "$K/kpartx-a.rc") $(cat "$K/kpartx-a.txt")"
else
    # what kpartx makes: <name>p<N>, uuid part<N>-<parent uuid>, linear onto the parent
    P=$(dmsetup info -c --noheadings -o major,minor,uuid --separator ' ' pve-vm--101--disk--0) || exit 1
    # shellcheck disable=SC2086
    set -- $P
    x dmsetup create pve-vm--101--disk--0p1 --uuid "part1-$3" --table "0 65536 linear $1:$2 2048"
    x dmsetup create pve-vm--101--disk--0p2 --uuid "part2-$3" --table "0 63488 linear $1:$2 67584"
fi

# ---- e. a VG made inside a guest disk, activated on the host ---------------------------------
# LVM skips LVs as PVs (scan_lvs = 0): only these steps see it
x pvcreate -q --config "$SCAN_LVS" /dev/pve/vm-102-disk-0
x vgcreate -q --config "$SCAN_LVS" vg-archlinux /dev/pve/vm-102-disk-0
x lvcreate -q --config "$SCAN_LVS" -L 32M -n root vg-archlinux
x lvcreate -q --config "$SCAN_LVS" -L 16M -n swap vg-archlinux
x vgchange -q --config "$SCAN_LVS" -an vg-archlinux
x vgchange -q --config "$SCAN_LVS" -ay vg-archlinux

# ---- capture every conflict at once ------------------------------------------------------
state "$K"
# what LVM reports when it does look inside LVs (reference)
# shellcheck disable=SC2086
cap "$K" lvs-segments-scan-lvs $SEGS --config "$SCAN_LVS"
# shellcheck disable=SC2086
cap "$K" pvs-scan-lvs $PVS --config "$SCAN_LVS"

# ---- remedies ------------------------------------------------------------------------------
# does plain activation reload a stale table? then lvchange --refresh of each stale LV
cap "$R" lvchange-ay-vm-104 lvchange -ay pve/vm-104-disk-0
# shellcheck disable=SC2086
cap "$R" table-after-ay-vm-104 $TABLE pve-vm--104--disk--0
cap "$R" vgchange-ay-san01 vgchange -ay san01
# shellcheck disable=SC2086
cap "$R" table-after-ay-san01 $TABLE
for lv in pve/vm-104-disk-0 san01/vm-201-disk-0 san01/vm-204-disk-0 pve/vm-105-disk-0; do
    n=${lv#*/}; n=${n#vm-}; n=vm-${n%-disk-0}
    cap "$R" "lvchange-refresh-$n" lvchange --refresh "$lv"
    log "lvchange --refresh $lv: rc=$(cat "$R/lvchange-refresh-$n.rc")"
    # shellcheck disable=SC2086
    cap "$R" "table-after-refresh-$n" $TABLE "$(dmname "${lv%%/*}" "${lv#*/}")"
done
if [ $KPARTX = 1 ]; then
    cap "$R" kpartx-d /run/part/kpartx -d -v /dev/mapper/pve-vm--101--disk--0
else
    cap "$R" kpartx-d dmsetup remove pve-vm--101--disk--0p1 pve-vm--101--disk--0p2
fi
cap "$R" vgchange-an-guest-vg vgchange -an vg-archlinux
cap "$R" vgchange-an-guest-vg-scan-lvs vgchange -an --config "$SCAN_LVS" vg-archlinux
state "$R"

dmesg | grep -E 'device-mapper|thin|loop' | grep -v WRITE_ZEROES | tail -20 >&2   # console only
log "done"
exit 0
