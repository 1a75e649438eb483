# make-fixtures.guest.sh OUTDIR - runs INSIDE the dm-vm.sh guest (busybox sh, real kernel,
# real dmsetup/lvm). Builds on loop devices what a Proxmox VE node has (LVM-thin `pve`,
# shared thick LVM, multipath, LUKS, Ceph OSD, stale and odd dm entries) and writes the
# real output of dmsetup/lvm into OUTDIR/empty and OUTDIR/full.
# Started by make-fixtures.sh; do not run it on a real host.
#
# Fixture files hold exactly the command's stdout (*.txt), stderr (*.stderr) and exit
# code (*.rc); the progress log goes to the console only.
OUT=${1:?usage: make-fixtures.guest.sh OUTDIR}
E=$OUT/empty F=$OUT/full
mkdir -p "$E" "$F" || exit 1

log() { echo ">>> $*" >&2; }
# x CMD...: a setup step; abort the whole run when it fails
x() { log "$*"; "$@" || { echo "FAILED (rc=$?): $*" >&2; exit 1; }; }
# try CMD...: an optional setup step; report but go on
try() { log "$*"; "$@" || { echo "(optional step failed, rc=$?): $*" >&2; return 1; }; }
# cap DIR BASE CMD...: stdout -> DIR/BASE.txt, stderr -> DIR/BASE.stderr, rc -> DIR/BASE.rc
cap() { d=$1 b=$2; shift 2; "$@" >"$d/$b.txt" 2>"$d/$b.stderr"; echo $? >"$d/$b.rc"; }
devno() { dmsetup info -c --noheadings --separator : -o major,minor "$1"; }
sectors() { blockdev --getsz "/dev/mapper/$1"; }

# pve-dm's own commands (DM_INFO_ARGS, DM_TABLE_ARGS, LVS_ARGS): kernel names as the kernel holds them.
INFO="dmsetup --manglename none info -c --noheadings --separator | -o name,major,minor,open,attr,uuid"
TABLE="dmsetup --manglename none table"
LVS="lvs -a --noheadings --separator | --units b --nosuffix -o vg_name,lv_name,lv_attr,lv_tags,lv_uuid,vg_uuid,pool_lv,lv_size"
# dmsetup's default (auto) mode, which shows names unmangled
INFO_DEFAULT="dmsetup info -c --noheadings --separator | -o name,major,minor,open,attr,uuid"

x modprobe -a dm_mod dm_thin_pool dm_zero dm_snapshot dm_mirror loop
CRYPT=1; try modprobe -a dm_crypt xts || CRYPT=0
MPATH=1; try modprobe -a dm_multipath dm_round_robin || MPATH=0

# ---- 1. nothing exists yet (dm_mod loaded, as on any node) ------------------------------
# shellcheck disable=SC2086
cap "$E" dmsetup $INFO
# shellcheck disable=SC2086
cap "$E" dmsetup-table $TABLE
# shellcheck disable=SC2086
cap "$E" lvs $LVS
cap "$E" dmsetup-ls dmsetup ls

# ---- 2. build --------------------------------------------------------------------------
cd /tmp || exit 1
mkloop() {  # mkloop N FILE SIZE -> /dev/loopN (busybox losetup has no --show)
    [ -b "/dev/loop$1" ] || mknod "/dev/loop$1" b 7 "$1"
    truncate -s "$3" "/tmp/$2" && losetup "/dev/loop$1" "/tmp/$2" && echo "/dev/loop$1"
}
L_PVE=$(mkloop 0 pve.img 3G) || exit 1
L_SSD=$(mkloop 1 ssd-ha01.img 1G) || exit 1
L_PRD=$(mkloop 2 prd.img 128M) || exit 1
L_CEPH=$(mkloop 3 ceph.img 128M) || exit 1
L_MP=$(mkloop 4 mpath.img 64M) || exit 1
L_LUKS=$(mkloop 5 luks.img 64M) || exit 1
log "loops: pve=$L_PVE ssd=$L_SSD prd=$L_PRD ceph=$L_CEPH mpath=$L_MP luks=$L_LUKS"

# VG pve, as the Proxmox installer makes it: root, swap, thin pool data
x pvcreate -q "$L_PVE"
x vgcreate -q pve "$L_PVE"
x lvcreate -q -L 96M -n swap pve
x lvcreate -q -L 128M -n root pve
x lvcreate -q -L 512M -T pve/data
# lvmthin alloc_image: lvcreate -aly -V .. --name .. --thinpool vg/pool; lvchange --setautoactivation n
thin() {  # thin NAME SIZE
    x lvcreate -q -aly -V "$2" --name "$1" --thinpool pve/data
    x lvchange -q --setautoactivation n "pve/$1"
}
thin vm-100-disk-0 32G
thin vm-100-disk-1 8G
thin vm-100-cloudinit 4M
thin vm-100-state-before-upgrade 2G
thin vm-200-disk-0 16G
# template (create_base): rename vm- -> base-, read-only, activation skip; kept active here
thin vm-9000-disk-0 8G
x lvrename -q pve vm-9000-disk-0 base-9000-disk-0
x lvchange -q -pr -ky pve/base-9000-disk-0
x lvchange -q -ay -K pve/base-9000-disk-0
# linked clone of the template
x lvcreate -q -n vm-101-disk-0 -prw -kn -s pve/base-9000-disk-0
x lvchange -q -ay -K pve/vm-101-disk-0
# thin snapshots (volume_snapshot: lvcreate -n snap_<vol>_<snap> -pr -s), activated
x lvcreate -q -n snap_vm-100-disk-0_before-upgrade -pr -s pve/vm-100-disk-0
x lvchange -q -ay -K pve/snap_vm-100-disk-0_before-upgrade
x lvcreate -q -n snap_vm-200-disk-0_vzdump -pr -s pve/vm-200-disk-0
x lvchange -q -ay -K pve/snap_vm-200-disk-0_vzdump
# a second thin pool nobody uses
x lvcreate -q -L 64M -T pve/data2

# VG ssd-ha01: shared thick LVM storage (PVE 9 lvcreate: -aly -Wy --setautoactivation n --addtag)
x pvcreate -q "$L_SSD"
x vgcreate -q ssd-ha01 "$L_SSD"
thick() {  # thick VG NAME SIZE VMID
    x lvcreate -q -aly -Wy --yes --size "$3" --name "$2" --setautoactivation n --addtag "pve-vm-$4" "$1"
}
thick ssd-ha01 vm-119-disk-0 64M 119
thick ssd-ha01 vm-300-disk-0 32M 300
# PVE 9 snapshot-as-volume-chain names (qcow2 inside a thick LV)
thick ssd-ha01 vm-120-disk-0.qcow2 32M 120
thick ssd-ha01 snap_vm-120-disk-0_snap1.qcow2 32M 120
# classic (COW) snapshot: origin gets -real, the snapshot -cow
x lvcreate -q -s -L 8M -n vm-119-snaptest ssd-ha01/vm-119-disk-0
# saferemove: lvrename vg <name> del-<name> before zeroing and lvremove
thick ssd-ha01 vm-121-disk-0 16M 121
x lvrename -q ssd-ha01 vm-121-disk-0 del-vm-121-disk-0
# an LV LVM knows but calls inactive, and a stale mapping of its name with another uuid
# (re-created behind it): `lvchange -an` would do nothing to that mapping
x lvcreate -q -an -Zn --yes --size 16M --name vm-778-disk-0 --setautoactivation n --addtag pve-vm-778 ssd-ha01
VGUUID=$(vgs --noheadings -o vg_uuid ssd-ha01 | tr -d ' -') || exit 1
x dmsetup create ssd--ha01-vm--778--disk--0 --uuid "LVM-${VGUUID}stalestalestalestalestalestale12" --table '0 32768 zero'
# bug 4997: LV removed from the metadata (as by another node), its dm entry stays here
thick ssd-ha01 vm-301-disk-0 16M 301
cap "$F" lvremove-driverloaded-n lvremove -y --driverloaded n ssd-ha01/vm-301-disk-0
log "lvremove --driverloaded n: rc=$(cat "$F/lvremove-driverloaded-n.rc")"

# VG with hyphens inside its name
x pvcreate -q "$L_PRD"
x vgcreate -q prd-network-01-lun01-vg01 "$L_PRD"
thick prd-network-01-lun01-vg01 vm-113-disk-0 32M 113
# a grown disk: two segments, so `dmsetup table` prints two lines for one name
thick prd-network-01-lun01-vg01 vm-113-disk-1 8M 113
x lvextend -q -L +16M prd-network-01-lun01-vg01/vm-113-disk-0

# Ceph OSD (pveceph / ceph-volume: VG ceph-<uuid>, LV osd-block-<uuid>, ceph.* tags)
CEPHVG=ceph-6a1f0a5c-7d2e-4f4b-9c39-2e1d5b0c9a11
OSDLV=osd-block-0b8a1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d
x pvcreate -q "$L_CEPH"
x vgcreate -q "$CEPHVG" "$L_CEPH"
x lvcreate -q -l 100%FREE -n "$OSDLV" --addtag ceph.osd_id=0 --addtag ceph.type=block \
    --addtag "ceph.block_device=/dev/$CEPHVG/$OSDLV" "$CEPHVG"

# ---- hand-made dm entries --------------------------------------------------------------
# duplicate of an LV's mapping under another name (taken after the COW snapshot, so it is
# the snapshot-origin table the LV has at dump time)
T119=$(dmsetup table ssd--ha01-vm--119--disk--0) || exit 1
x dmsetup create ssd--ha01-vm--119--disk--0-dup --table "$T119"
# stale entry, no LV behind it
x dmsetup create ssd--ha01-vm--888--disk--0 --table '0 2048 zero'
# kpartx-style partition of a thin LV
U100=$(dmsetup info -c --noheadings -o uuid pve-vm--100--disk--0) || exit 1
S100=$(sectors pve-vm--100--disk--0)
x dmsetup create pve-vm--100--disk--0p1 --uuid "part1-$U100" \
    --table "0 $((S100 - 2048 - 34)) linear $(devno pve-vm--100--disk--0) 2048"
# multipath map (user_friendly_names) and its kpartx partition (kpartx -p -part)
MPUUID=mpath-3600140512345678901234567890abcde
SMP=$(blockdev --getsz "$L_MP")
LMP=$(basename "$L_MP"); LMPDEV=$(cat "/sys/block/$LMP/dev")
if [ $MPATH = 1 ]; then
    x dmsetup create mpatha --uuid "$MPUUID" \
        --table "0 $SMP multipath 1 queue_if_no_path 0 1 1 round-robin 0 1 1 $LMPDEV 1"
else
    x dmsetup create mpatha --uuid "$MPUUID" --table "0 $SMP linear $LMPDEV 0"
fi
x dmsetup create mpatha-part1 --uuid "part1-$MPUUID" \
    --table "0 $((SMP - 2048 - 34)) linear $(devno mpatha) 2048"
# LUKS2 mapping as cryptsetup open makes it (uuid CRYPT-LUKS2-<uuid hex>-<name>, 16 MiB header)
SLUKS=$(blockdev --getsz "$L_LUKS")
LLUKS=$(basename "$L_LUKS"); LLUKSDEV=$(cat "/sys/block/$LLUKS/dev")
KEY=$(printf '%s' 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f \
    202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f)
LUKSUUID=CRYPT-LUKS2-0123456789abcdef0123456789abcdef-luks-data
if [ $CRYPT = 1 ] && try dmsetup create luks-data --uuid "$LUKSUUID" \
        --table "0 $((SLUKS - 32768)) crypt aes-xts-plain64 $KEY 0 $LLUKSDEV 32768"; then :
else
    x dmsetup create luks-data --uuid "$LUKSUUID" --table "0 $((SLUKS - 32768)) linear $LLUKSDEV 32768"
fi
# names that need mangling
x dmsetup create 'odd name$x' --table '0 8 zero'
try dmsetup create "$(printf 'caf\303\251')" --table '0 8 zero'
# a name holding the separator the tool asks dmsetup for
try dmsetup create 'pipe|name' --table '0 8 zero'
# a name the kernel holds raw, as a tool without libdm makes it: beside 'odd name$x' (held
# mangled), two kernel names dmsetup's default mode shows alike
x dmsetup --manglename none create 'odd name$x' --table '0 16 zero'

# ---- hold devices open -----------------------------------------------------------------
# a running VM's disk (the p1 partition map opens it as well)
sh -c 'exec 3</dev/mapper/pve-vm--100--disk--0; exec sleep 600' &
HOLD1=$!
# a running VM on the shared storage: open only by this process
sh -c 'exec 3</dev/mapper/ssd--ha01-vm--300--disk--0; exec sleep 600' &
HOLD2=$!
sleep 1

# ---- 3. dump ---------------------------------------------------------------------------
# shellcheck disable=SC2086
cap "$F" dmsetup $INFO
# shellcheck disable=SC2086
cap "$F" dmsetup-table $TABLE
# shellcheck disable=SC2086
cap "$F" dmsetup-default-mangling $INFO_DEFAULT
cap "$F" dmsetup-table-default-mangling dmsetup table
# shellcheck disable=SC2086
cap "$F" lvs $LVS
cap "$F" dmsetup-ls dmsetup ls
cap "$F" dmsetup-ls-tree dmsetup ls --tree
cap "$F" dmsetup-info-c-default dmsetup info -c
cap "$F" dmsetup-status dmsetup status
cap "$F" dmsetup-info-long dmsetup info pve-vm--100--disk--0
cap "$F" dmsetup-info-long-odd dmsetup info 'odd name$x'
# names as dmsetup mangles / unmangles them, and as the kernel stores them
cap "$F" dmsetup-info-mangling dmsetup info -c --noheadings --separator '|' -o name,mangled_name,unmangled_name,uuid
# shellcheck disable=SC2086
cap "$F" dmsetup-manglename-hex dmsetup --manglename hex info -c --noheadings --separator '|' -o name,major,minor,open,attr,uuid
for b in /sys/block/dm-*; do printf '%s|%s|%s\n' "${b##*/}" "$(cat "$b/dm/name")" "$(cat "$b/dm/uuid")"; done >"$F/sysfs-dm-names.txt"
# splitname: one line per name, "<name><TAB><vg|lv|layer as dmsetup prints it>"
for n in pve-vm--100--disk--0 pve-data-tpool pve-data_tdata pve-data_tmeta pve-data \
         ssd--ha01-vm--119--disk--0-real ssd--ha01-vm--119--snaptest-cow \
         prd--network--01--lun01--vg01-vm--113--disk--0 pve-vm--100--disk--0p1 mpatha-part1 \
         ssd--ha01-vm--119--disk--0-dup; do
    printf '%s\t%s\n' "$n" "$(dmsetup splitname --noheadings --separator '|' "$n" 2>&1)"
done >"$F/dmsetup-splitname.txt"
cap "$F" dmsetup-splitname-default dmsetup splitname ssd--ha01-vm--119--disk--0-real
cap "$F" lvs-uuids lvs -a -o vg_name,lv_name,lv_attr,lv_tags,lv_uuid,vg_uuid
cap "$F" lvs-default lvs -a
cap "$F" lvs-full-uuids lvs -a --noheadings --separator '|' -o vg_name,lv_name,lv_attr,pool_lv,origin,lv_uuid,vg_uuid
cap "$F" vgs vgs
cap "$F" pvs pvs
ls -l /dev/mapper/ /dev/ssd-ha01/ >"$F/dev-listing.txt" 2>&1
# removing: an open device (EBUSY), a name that does not exist
cap "$F" dmsetup-remove-busy dmsetup remove pve-vm--100--disk--0
cap "$F" dmsetup-remove-missing dmsetup remove pve-vm--999--disk--0
# what LVM says when it creates an LV whose dm name is taken (bug 4997 aftermath)
cap "$F" lvcreate-name-taken lvcreate -aly -Wy --yes --size 16M --name vm-301-disk-0 --setautoactivation n --addtag pve-vm-301 ssd-ha01
# shellcheck disable=SC2086
cap "$F" dmsetup-after-lvcreate-name-taken $INFO
# shellcheck disable=SC2086
cap "$F" lvs-after-lvcreate-name-taken $LVS
{ dmsetup version; lvm version; uname -r; } >"$F/versions.txt" 2>&1

# ---- 4. attr / state variants (after every lvs: LVM scanning a suspended device blocks) --
x dmsetup create notable-entry --notable
x dmsetup create readonly-entry --readonly --table '0 8 zero'
x dmsetup load ssd--ha01-vm--888--disk--0 --table '0 4096 zero'
x dmsetup suspend 'odd name$x'
cap "$F" dmsetup-remove-deferred dmsetup remove --deferred pve-vm--100--disk--0
# shellcheck disable=SC2086
cap "$F" dmsetup-variants $INFO
# shellcheck disable=SC2086
cap "$F" dmsetup-variants-table $TABLE
cap "$F" dmsetup-variants-table-inactive dmsetup table --inactive
cap "$F" dmsetup-variants-info-long dmsetup info notable-entry readonly-entry \
    ssd--ha01-vm--888--disk--0 'odd name$x' pve-vm--100--disk--0
x dmsetup resume 'odd name$x'

kill $HOLD1 $HOLD2 2>/dev/null
wait 2>/dev/null
log "done"
exit 0
