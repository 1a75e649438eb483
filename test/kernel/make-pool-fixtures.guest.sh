# make-pool-fixtures.guest.sh OUTDIR [THINTOOLS] - runs INSIDE the dm-vm.sh guest (busybox
# sh, real kernel, real dmsetup/lvm). Builds thin pools and VGs in trouble on loop devices
# (data 80-90 %, metadata past 90 %, out of data space, inactive, needs_check, failed,
# repaired, unactivatable, a VG with a missing PV) and writes the real output of
# dmsetup/lvm into OUTDIR. THINTOOLS: an unpacked thin-provisioning-tools package with its
# libraries in lib/ (make-fixtures.sh pools prepares it); without it LVM runs no
# thin_check/thin_repair and the repair scenarios are skipped.
# Started by `make-fixtures.sh pools`; do not run it on a real host. No `set -e`: busybox
# sh, and failing commands are part of what is captured; x() aborts on setup failures.
OUT=${1:?usage: make-pool-fixtures.guest.sh OUTDIR [THINTOOLS]}
TT=${2:-}
mkdir -p "$OUT" || exit 1

log() { echo ">>> [$(cut -d' ' -f1 /proc/uptime)] $*" >&2; }
# x CMD...: a setup step; abort the whole run when it fails
x() { log "$*"; "$@" || { echo "FAILED (rc=$?): $*" >&2; exit 1; }; }
# try CMD...: an optional step; report but go on
try() { log "$*"; "$@" || { echo "(optional step failed, rc=$?): $*" >&2; return 1; }; }
# cap BASE CMD...: stdout -> OUT/BASE.txt, stderr -> OUT/BASE.stderr, rc -> OUT/BASE.rc
cap() { b=$1; shift; "$@" >"$OUT/$b.txt" 2>"$OUT/$b.stderr"; echo $? >"$OUT/$b.rc"; }
# pstat TPOOL: sets used/total (metadata blocks), mode (rw, ro, out_of_data_space) and
# check (needs_check or -) from the pool's status line
used=0 total=0 mode='' check=''
pstat() {
    eval "$(dmsetup status "$1" | awk '{split($5,m,"/");
        printf "used=%s total=%s mode=%s check=%s\n", m[1], m[2], $8, $11}')"
}
# w4k DEV BLOCK: one 4 KiB direct write, fsync'd (a flush makes the pool commit at once)
w4k() { [ -b "$1" ] && dd if=/dev/zero of="$1" bs=4k count=1 seek="$2" oflag=direct conv=notrunc,fsync 2>/dev/null; }
# thin VG POOL NAME SIZE: a thin LV the way Proxmox's lvmthin plugin makes one
thin() { x lvcreate -q -aly -V "$4" --name "$3" --thinpool "$1/$2"; }
mkloop() {  # mkloop N PATH SIZE -> /dev/loopN (busybox losetup has no --show)
    [ -b "/dev/loop$1" ] || mknod "/dev/loop$1" b 7 "$1"
    truncate -s "$3" "$2" && losetup "/dev/loop$1" "$2" && echo "/dev/loop$1"
}

x modprobe -a dm_mod dm_thin_pool loop
# out of data space: the pool queues writes for no_space_timeout (60 s) before failing them
echo 2 >/sys/module/dm_thin_pool/parameters/no_space_timeout || exit 1

# thin_check / thin_repair / thin_dump from the host's package (the initramfs has none, and
# its lvm.conf sets them to ""): wrappers, since pdata_tools needs libraries from THINTOOLS/lib
THIN=0
if [ -n "$TT" ] && LD_LIBRARY_PATH=$TT/lib "$TT/usr/sbin/pdata_tools" thin_check -V >/dev/null 2>&1; then
    mkdir -p /run/thin
    for t in thin_check thin_repair thin_dump; do
        printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/lib exec %s/usr/sbin/pdata_tools %s "$@"\n' "$TT" "$TT" "$t" >"/run/thin/$t"
        chmod 755 "/run/thin/$t"
    done
    sed -i -e 's|thin_check_executable = ""|thin_check_executable = "/run/thin/thin_check"|' \
        -e 's|thin_repair_executable = ""|thin_repair_executable = "/run/thin/thin_repair"\n    thin_dump_executable = "/run/thin/thin_dump"|' \
        /etc/lvm/lvm.conf
    THIN=1
else
    log "no thin-provisioning-tools: no thin_check, no lvconvert --repair"
fi

cd /tmp || exit 1
L_PVE=$(mkloop 0 /tmp/pve.img 2G) || exit 1
L_NVME=$(mkloop 1 /tmp/nvme.img 3G) || exit 1
L_HDD=$(mkloop 2 /tmp/hdd.img 1G) || exit 1
# the needs_check pool's metadata PV lives on a 4 MiB tmpfs that can be filled (below)
mkdir -p /tmp/small && x mount -t tmpfs -o size=4M tmpfs /tmp/small
L_HDDM=$(mkloop 3 /tmp/small/hdd-meta.img 4M) || exit 1
L_SATA=$(mkloop 4 /tmp/sata.img 1G) || exit 1
L_SSDA=$(mkloop 5 /tmp/ssd-a.img 128M) || exit 1
L_SSDB=$(mkloop 6 /tmp/ssd-b.img 128M) || exit 1

# ---- ssd: thick VG that loses a PV -------------------------------------------------------
# shared thick LVM as PVE 9 makes its LVs; vm-401 on the PV that stays, vm-400 on both
x pvcreate -q "$L_SSDA" "$L_SSDB"
x vgcreate -q ssd "$L_SSDA" "$L_SSDB"
thick() {  # thick VG NAME SIZE VMID [PV]
    x lvcreate -q -aly -Wy --yes --size "$3" --name "$2" --setautoactivation n --addtag "pve-vm-$4" "$1" ${5:+"$5"}
}
thick ssd vm-401-disk-0 16M 401 "$L_SSDA"
thick ssd vm-400-disk-0 200M 400
x vgchange -q -an ssd
x losetup -d "$L_SSDB"       # the disk is gone; LVM only finds ssd-a
log "ssd: $L_SSDB detached"
try vgscan
# activation: vm-401 (intact) comes up, vm-400 (partial) is refused
cap vgchange-ay-partial vgchange -ay ssd
log "vgchange -ay ssd: rc=$(cat "$OUT/vgchange-ay-partial.rc")"

# ---- sata: a repaired pool (lvconvert --repair) and one whose metadata is destroyed ------
x pvcreate -q "$L_SATA"
x vgcreate -q sata "$L_SATA"
x lvcreate -q -L 128M --chunksize 64K -T sata/data
thin sata data vm-500-disk-0 4G
x dd if=/dev/zero of=/dev/sata/vm-500-disk-0 bs=1M count=16 oflag=direct
x lvcreate -q -L 128M --chunksize 64K -T sata/data2
thin sata data2 vm-501-disk-0 4G
x dd if=/dev/zero of=/dev/sata/vm-501-disk-0 bs=1M count=16 oflag=direct
x lvchange -q -an sata/vm-500-disk-0 sata/vm-501-disk-0
x lvchange -q -an sata/data sata/data2
if [ $THIN = 1 ]; then
    # repair of an inactive pool: new metadata from the spare, the old one kept as data_meta0
    cap lvconvert-repair lvconvert --repair sata/data
    log "lvconvert --repair sata/data: rc=$(cat "$OUT/lvconvert-repair.rc")"
    try lvchange -q -ay sata/data sata/vm-500-disk-0
    # data2: overwrite the superblock of its metadata on the PV (pool inactive) with junk,
    # so that the thin_check LVM runs before activation fails. (Zeros would not do: the
    # kernel formats an all-zero superblock as a new, empty pool, and LVM activates it.)
    R=$(lvs -a --noheadings -o seg_pe_ranges sata/data2_tmeta | tr -d ' ')   # /dev/loop4:N-M
    PE=${R#*:}; PE=${PE%%-*}
    PESTART=$(pvs --noheadings --units b --nosuffix -o pe_start "$L_SATA" | tr -d ' ')
    EXT=$(vgs --noheadings --units b --nosuffix -o vg_extent_size sata | tr -d ' ')
    log "sata/data2_tmeta at $R: 4 KiB of 'y\\n' at byte $((PESTART + PE * EXT))"
    yes | head -c 4096 | dd of="$L_SATA" bs=4096 count=1 iflag=fullblock seek=$(((PESTART + PE * EXT) / 4096)) conv=notrunc,fsync || exit 1
    cap lvchange-ay-broken lvchange -ay sata/data2
    log "lvchange -ay sata/data2: rc=$(cat "$OUT/lvchange-ay-broken.rc")"
fi

# ---- pve: data 80-90 % full, an inactive pool, (later) a pool out of data space ----------
x pvcreate -q "$L_PVE"
x vgcreate -q pve "$L_PVE"
x lvcreate -q -L 256M --chunksize 64K -T pve/data
thin pve data vm-100-disk-0 32G
thin pve data vm-101-disk-0 8G
x dd if=/dev/zero of=/dev/pve/vm-100-disk-0 bs=1M count=160 oflag=direct
x dd if=/dev/zero of=/dev/pve/vm-101-disk-0 bs=1M count=60 oflag=direct
x lvcreate -q -L 64M --chunksize 64K -T pve/data2
thin pve data2 vm-102-disk-0 1G
x lvcreate -q -L 128M --chunksize 64K -T pve/data3
thin pve data3 vm-103-disk-0 4G
thin pve data3 vm-103-disk-1 4G
x dd if=/dev/zero of=/dev/pve/vm-103-disk-0 bs=1M count=16 oflag=direct
# inactive pool with thin LVs on it: the thin LVs first, then the pool
x lvchange -q -an pve/vm-103-disk-0 pve/vm-103-disk-1
x lvchange -q -an pve/data3

# ---- nvme: metadata past 90 % (VG with 1 MiB extents, so the metadata LV can be 2 MiB) ---
# Metadata fills the Proxmox way: a template with many linked clones, each clone then
# written all over. A clone shares the template's mapping btree; its first write into a
# leaf copies that leaf (4 KiB of metadata for one 64 KiB chunk). The used count in the
# pool's status includes the kernel's metadata reserve (10 % of a small metadata device):
# at total/total the pool goes out-of-metadata-space (read-only). LVM refuses new thin
# LVs/clones once metadata is >= 75 % on a small metadata LV, so all clones come first.
x pvcreate -q "$L_NVME"
x vgcreate -q -s 1M nvme "$L_NVME"
# meta_pool POOL TEMPLATE_ID FIRST_CLONE_ID: pool, template (320 MiB written = 5120 chunks),
# 20 linked clones (lvcreate as qm clone does for a linked clone)
meta_pool() {
    x lvcreate -q -L 1G --poolmetadatasize 2M --chunksize 64K -T "nvme/$1"
    thin nvme "$1" "vm-$2-disk-0" 2G
    x dd if=/dev/zero of="/dev/nvme/vm-$2-disk-0" bs=1M count=320 oflag=direct
    x lvrename -q nvme "vm-$2-disk-0" "base-$2-disk-0"
    x lvchange -q -an "nvme/base-$2-disk-0"
    x lvchange -q -pr -ky "nvme/base-$2-disk-0"
    c=$3
    while [ "$c" -lt $(($3 + 20)) ]; do
        x lvcreate -q -n "vm-$c-disk-0" -prw -kn -s "nvme/base-$2-disk-0"
        c=$((c + 1))
    done
}
# fill_meta TPOOL PCT FIRST_CLONE_ID: write 4 KiB into every 224th chunk (about one per
# btree leaf) of each clone in turn, until the status shows PCT % metadata used (each write
# is fsync'd: the count read is the committed one) or, PCT=100, the pool is no longer rw.
# The status is read only every few writes while PCT is far (a write costs a few blocks).
fill_meta() {
    c=$3 n=0 next=0
    while [ "$c" -lt $(($3 + 20)) ]; do
        i=0
        while [ $i -lt 5120 ]; do
            if [ $n -ge $next ]; then
                pstat "$1"
                [ "$mode" = rw ] || { log "$1: mode $mode after $n writes, $used/$total"; return 0; }
                if [ "$2" -lt 100 ] && [ $((used * 100)) -ge $(($2 * total)) ]; then
                    log "$1: $used/$total metadata blocks used after $n writes"; return 0
                fi
                next=$((n + ($2 * total / 100 - used) / 8))
            fi
            w4k "/dev/nvme/vm-$c-disk-0" $((i * 16)) || next=0
            i=$((i + 224)) n=$((n + 1))
        done
        c=$((c + 1))
    done
    log "$1: all clones written ($n writes), $used/$total metadata blocks"
}
meta_pool data 9000 201
meta_pool data2 9001 221
fill_meta nvme-data-tpool 93 201
# a further clone at >= 75 % metadata: what LVM says
cap lvcreate-clone-metadata-full lvcreate -n vm-299-disk-0 -prw -kn -s nvme/base-9000-disk-0
fill_meta nvme-data2-tpool 100 221
sleep 2

# ---- hdd: needs_check, and a failed pool -------------------------------------------------
# data: its metadata LV alone on a PV whose backing file sits on a 4 MiB tmpfs. The metadata
# LV is punched out of the file (blkdiscard: it still reads as the zeros LVM wiped it to,
# but takes no space) before the pool's first activation, so the file holds only blocks the
# kernel has written. Fill the tmpfs, then provision: as soon as a commit needs a metadata
# block never written before, its write fails (ENOSPC), the kernel aborts the transaction,
# sets needs_check and switches the pool to read-only.
x pvcreate -q "$L_HDD" "$L_HDDM"
x vgcreate -q -s 1M hdd "$L_HDD" "$L_HDDM"
x lvcreate -q -an -Zn -L 256M -n data hdd "$L_HDD"
x lvcreate -q -an -Zn -L 2M -n data_meta hdd "$L_HDDM"
x lvconvert -q -y --type thin-pool --poolmetadata hdd/data_meta --chunksize 64K hdd/data
R=$(lvs -a --noheadings -o seg_pe_ranges hdd/data_tmeta | tr -d ' ')   # /dev/loop3:0-1
PESTART=$(pvs --noheadings --units b --nosuffix -o pe_start "$L_HDDM" | tr -d ' ')
log "hdd/data_tmeta at $R; tmpfs: $(df -k /tmp/small | tail -1)"
[ "$R" = "$L_HDDM:0-1" ] || { echo "hdd/data_tmeta is not at $L_HDDM:0-1" >&2; exit 1; }
x blkdiscard -o "$PESTART" -l 2097152 "$L_HDDM"
log "after blkdiscard: $(df -k /tmp/small | tail -1)"
x lvchange -q -ay hdd/data
thin hdd data vm-300-disk-0 4G
x dd if=/dev/zero of=/dev/hdd/vm-300-disk-0 bs=1M count=32 oflag=direct conv=fsync
dd if=/dev/zero of=/tmp/small/filler bs=4k 2>/dev/null
log "tmpfs filled: $(df -k /tmp/small | tail -1)"
k=0
while [ $k -lt 12 ]; do   # 16 MiB at a time, until the pool is no longer rw
    pstat hdd-data-tpool
    log "hdd/data: $used/$total $mode $check"
    [ "$mode" = rw ] || break
    try timeout 60 dd if=/dev/zero of=/dev/hdd/vm-300-disk-0 bs=1M count=16 seek=$((64 + k * 16)) oflag=direct conv=fsync
    k=$((k + 1))
done
rm -f /tmp/small/filler   # LVM must be able to write VG metadata to that PV again
# data2: its metadata device's table swapped for `error` while active, then put back; the
# aborted transaction cannot re-read the metadata: the pool fails ("Fail")
x lvcreate -q -L 64M --chunksize 64K -T hdd/data2
thin hdd data2 vm-301-disk-0 1G
x dd if=/dev/zero of=/dev/hdd/vm-301-disk-0 bs=1M count=8 oflag=direct
M=hdd-data2_tmeta
MT=$(dmsetup table $M) || exit 1
x dmsetup load $M --table "0 $(blockdev --getsz /dev/mapper/$M) error"
x dmsetup suspend $M
x dmsetup resume $M
try timeout 60 dd if=/dev/zero of=/dev/hdd/vm-301-disk-0 bs=1M count=8 seek=16 oflag=direct
sleep 2
x dmsetup load $M --table "$MT"
x dmsetup suspend $M
x dmsetup resume $M

# ---- pve/data2: out of data space (last: LVM is done with VG pve) ------------------------
try timeout 60 dd if=/dev/zero of=/dev/pve/vm-102-disk-0 bs=1M count=80 oflag=direct
sleep 3   # past no_space_timeout

for p in pve-data-tpool pve-data2-tpool nvme-data-tpool nvme-data2-tpool hdd-data-tpool hdd-data2-tpool sata-data-tpool; do
    log "$p: $(dmsetup status $p 2>&1)"
done

# ---- dump ----------------------------------------------------------------------------------
cap lvs lvs -a --noheadings --separator '|' --units b --nosuffix -o vg_name,lv_name,lv_attr,lv_tags,lv_uuid,vg_uuid,pool_lv,lv_size,data_percent,metadata_percent,lv_metadata_size,vg_attr,vg_free
cap dmsetup-status-thin-pool dmsetup --manglename none status --target thin-pool
cap dmsetup-status dmsetup --manglename none status
cap dmsetup dmsetup --manglename none info -c --noheadings --separator '|' -o name,major,minor,open,attr,uuid
cap dmsetup-table dmsetup --manglename none table
cap lvs-default lvs -a
cap vgs vgs
cap pvs pvs
cap lvs-health lvs -a -o vg_name,lv_name,lv_attr,lv_health_status,data_percent,metadata_percent
{
    uname -r; dmsetup version; lvm version
    dmsetup targets | grep -E '^(thin|thin-pool|linear|error) '
    [ $THIN = 1 ] && echo "thin_check (thin-provisioning-tools) $(/run/thin/thin_check -V)"
} >"$OUT/versions.txt" 2>&1
dmesg | grep -E 'thin|device-mapper|loop' | grep -v WRITE_ZEROES | tail -40 >&2   # console only
log "done"
exit 0
