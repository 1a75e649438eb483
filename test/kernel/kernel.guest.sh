# kernel.guest.sh PROJECT [MODE] [THIN_TOOLS] [PART_TOOLS] - runs INSIDE the dm-vm.sh guest (busybox
# sh, real kernel, real dmsetup/lvm). Started by kernel-test.sh (npm run test:kernel); do not run it
# on a real host.
#
# Builds a Proxmox VE node "pve1" on loop devices: VG pve (root, swap, thin pool data), the
# shared thick VG ssd-ha01, and VG tank with three thin pools in trouble (data 92 % used, metadata
# past 90 % from linked clones, one left inactive) and an orphan thin LV; real LVs for the guests
# of /etc/pve (written here), stale and hand-made entries, a running VM and a running container
# (stand-ins: fake-guest.mjs), a stand-in pveversion; then runs kernel.test.mjs, which runs
# pve-dm against this live system.
# MODE: all (default), classify (classification only), cleanup, conflicts (the part of issue 19's
# conflicts, which builds them itself: kernel-conflicts.guest.sh) or faults (issue 20's).
ROOT=${1:?usage: kernel.guest.sh PROJECT [MODE] [THIN_TOOLS] [PART_TOOLS]}
MODE=${2:-all}
# the host's unpacked thin-provisioning-tools and kpartx/sfdisk (kernel-test.sh), seen through /host
THIN_TOOLS=${3:-}
PART_TOOLS=${4:-}

log() { echo ">>> $*" >&2; }
# x CMD...: a setup step; the whole run fails when it does
x() { "$@" || { echo "KERNEL-SETUP FAILED (rc=$?): $*" >&2; exit 1; }; }
die() { echo "KERNEL-SETUP FAILED: $*" >&2; exit 1; }

t0=$(cut -d' ' -f1 /proc/uptime)
x modprobe -a dm_mod dm_thin_pool dm_zero dm_snapshot loop
x hostname pve1

# ---- block devices and volume groups ---------------------------------------------------
cd /tmp || exit 1
mkloop() {  # mkloop N FILE SIZE (busybox losetup has no --show)
    [ -b "/dev/loop$1" ] || mknod "/dev/loop$1" b 7 "$1"
    truncate -s "$3" "/tmp/$2" && losetup "/dev/loop$1" "/tmp/$2"
}
x mkloop 0 pve.img 1G
x mkloop 1 ssd-ha01.img 256M
x mkloop 2 tank.img 2G

# VG pve as the Proxmox installer makes it: swap, root, thin pool data (storage local-lvm)
x pvcreate -q /dev/loop0
x vgcreate -q pve /dev/loop0
x lvcreate -q -L 32M -n swap pve
x lvcreate -q -L 64M -n root pve
x lvcreate -q -L 256M -T pve/data
# lvmthin alloc_image: lvcreate -aly -V SIZE --name NAME --thinpool VG/POOL; no autoactivation
thin() {
    x lvcreate -q -aly -V "$2" --name "$1" --thinpool pve/data
    x lvchange -q --setautoactivation n "pve/$1"
}
thin vm-100-disk-0 4G
thin vm-100-disk-1 1G
thin vm-100-cloudinit 4M
thin vm-100-disk-7 1G          # VM 100 exists, but no config references this disk
thin vm-200-disk-0 2G          # CT 200's rootfs
thin vm-888-disk-0 1G          # guest 888 exists on no node
# template 9000 (create_base: rename to base-, read-only, activation skip), kept active
thin vm-9000-disk-0 1G
x lvrename -q pve vm-9000-disk-0 base-9000-disk-0
x lvchange -q -pr -ky pve/base-9000-disk-0
x lvchange -q -ay -K pve/base-9000-disk-0
# VM 101: linked clone of the template (a thin snapshot of the base volume)
x lvcreate -q -n vm-101-disk-0 -prw -kn -s pve/base-9000-disk-0
x lvchange -q -ay -K pve/vm-101-disk-0
# VM 100's snapshot "before" (volume_snapshot: lvcreate -n snap_<vol>_<snap> -pr -s), activated
x lvcreate -q -n snap_vm-100-disk-0_before -pr -s pve/vm-100-disk-0
x lvchange -q -ay -K pve/snap_vm-100-disk-0_before

# VG ssd-ha01: shared thick LVM (PVE 9 alloc_image: -aly -Wy --setautoactivation n --addtag)
x pvcreate -q /dev/loop1
x vgcreate -q ssd-ha01 /dev/loop1
thick() {  # thick NAME SIZE VMID
    x lvcreate -q -aly -Wy --yes --size "$2" --name "$1" --setautoactivation n --addtag "pve-vm-$3" ssd-ha01
}
thick vm-119-disk-0 32M 119    # VM 119 on pve1
thick vm-300-disk-0 16M 300    # VM 300 lives on pve2 (left active here after a migration)
thick vm-777-disk-0 16M 777    # guest 777 exists nowhere; held open below

# hand-made entries: a duplicate of VM 119's disk (same table), a stale zero mapping
T119=$(dmsetup table ssd--ha01-vm--119--disk--0) || exit 1
x dmsetup create ssd--ha01-vm--119--disk--0-dup --table "$T119"
x dmsetup create ssd--ha01-vm--889--disk--0 --table '0 2048 zero'
# two copies of that mapping's name holding a space: one the kernel holds raw (as a tool without
# libdm makes it), one mangled (dmsetup's default mode): names dmsetup's default mode shows alike
x dmsetup --manglename none create 'ssd--ha01-vm--889--disk--0-a b' --table '0 2048 zero'
x dmsetup create 'ssd--ha01-vm--889--disk--0-a b' --table '0 4096 zero'
# an LV LVM knows but calls inactive, and a stale mapping of its name under another LVM uuid (as
# after the LV was re-created behind it): `lvchange -an` would do nothing to that mapping
x lvcreate -q -an -Zn --yes --size 16M --name vm-778-disk-0 --setautoactivation n --addtag pve-vm-778 ssd-ha01
VGUUID=$(vgs --noheadings -o vg_uuid ssd-ha01 | tr -d ' -') || exit 1
x dmsetup create ssd--ha01-vm--778--disk--0 --uuid "LVM-${VGUUID}stalestalestalestalestalestale12" --table '0 32768 zero'

# VG tank: three lvmthin storages in trouble (the techniques of make-pool-fixtures.guest.sh). 1 MiB
# extents, so that a metadata LV can be 2 MiB.
x pvcreate -q /dev/loop2
x vgcreate -q -s 1M tank /dev/loop2
tthin() {  # tthin POOL NAME SIZE: as the lvmthin plugin allocates a disk (lvcreate refuses --setautoactivation for thin LVs)
    x lvcreate -q -aly -V "$3" --name "$2" --thinpool "tank/$1"
}
# tank/full: 64 MiB, 59 MiB of VM 160's disk written: data 92 % used. Guest 950 exists nowhere:
# its disk, deactivated, is an orphan LV with no dm entry.
x lvcreate -q -L 64M --chunksize 64K -T tank/full
tthin full vm-160-disk-0 1G
tthin full vm-950-disk-0 1G
x lvchange -q -an tank/vm-950-disk-0
dd if=/dev/zero of=/dev/tank/vm-160-disk-0 bs=1M count=59 oflag=direct 2>/dev/null || die "dd vm-160-disk-0"
# tank/cold: left inactive (its thin LV first, then the pool) with CT 170's rootfs on it
x lvcreate -q -L 32M --chunksize 64K -T tank/cold
tthin cold vm-170-disk-0 1G
dd if=/dev/zero of=/dev/tank/vm-170-disk-0 bs=1M count=4 oflag=direct 2>/dev/null || die "dd vm-170-disk-0"
x lvchange -q -an tank/vm-170-disk-0
x lvchange -q -an tank/cold
# ... and repaired while inactive (lvconvert --repair keeps the old metadata as tank/cold_meta0),
# with the thin-provisioning-tools kernel-test.sh unpacked on the host
TT=/host$THIN_TOOLS
LD_LIBRARY_PATH=$TT/lib "$TT/usr/sbin/pdata_tools" thin_repair -V >/dev/null 2>&1 ||
    die "no thin-provisioning-tools at $TT (kernel-test.sh fetches them)"
mkdir -p /run/thin
for t in thin_repair thin_dump; do
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/lib exec %s/usr/sbin/pdata_tools %s "$@"\n' "$TT" "$TT" "$t" >"/run/thin/$t"
    chmod 755 "/run/thin/$t"
done
x lvconvert -q --repair --config 'global { thin_repair_executable = "/run/thin/thin_repair" thin_dump_executable = "/run/thin/thin_dump" }' tank/cold
# tank/clones: metadata past 90 % the way linked clones fill it. 2 MiB metadata; template 9100
# (320 MiB written: about 23 btree leaves of mappings), 20 linked clones (VMs 210-229, created as
# qm clone does, in one lvm process: twice as fast under TCG); then 4 KiB written into every
# leaf of one clone after the other (each write copies a shared leaf: about one metadata block)
# until the kernel counts 91 % of the metadata blocks used. At 100 % the pool turns read-only.
x lvcreate -q -L 1G --poolmetadatasize 2M --chunksize 64K -T tank/clones
tthin clones vm-9100-disk-0 2G
dd if=/dev/zero of=/dev/tank/vm-9100-disk-0 bs=1M count=320 oflag=direct 2>/dev/null || die "dd vm-9100-disk-0"
x lvrename -q tank vm-9100-disk-0 base-9100-disk-0
x lvchange -q -an tank/base-9100-disk-0
x lvchange -q -pr -ky tank/base-9100-disk-0
c=210
while [ $c -lt 230 ]; do echo "lvcreate -q -n vm-$c-disk-0 -prw -kn -s tank/base-9100-disk-0"; c=$((c + 1)); done |
    lvm >/tmp/clones.log 2>&1
meta() {  # "full" once tank/clones has 91 % of its metadata blocks used, else used/total
    dmsetup status tank-clones-tpool | awk '{ split($5, m, "/"); print (m[1] * 100 >= 91 * m[2]) ? "full" : $5 }'
}
c=210
while [ "$(meta)" != full ]; do
    [ $c -lt 230 ] || die "tank/clones metadata at $(meta) after all clones"
    [ -b /dev/tank/vm-$c-disk-0 ] || { cat /tmp/clones.log >&2; die "clone vm-$c-disk-0 missing"; }
    i=0
    while [ $i -lt 5120 ]; do
        dd if=/dev/zero of=/dev/tank/vm-$c-disk-0 bs=4k count=1 seek=$((i * 16)) oflag=direct conv=notrunc 2>/dev/null ||
            die "write into vm-$c-disk-0"
        i=$((i + 224))
    done
    c=$((c + 1))
done
sync
log "tank: $(dmsetup --manglename none status --target thin-pool | grep '^tank' | tr '\n' ';')"

# ---- /etc/pve ------------------------------------------------------------------------------
P=/etc/pve/nodes
x mkdir -p $P/pve1/qemu-server $P/pve1/lxc $P/pve2/qemu-server $P/pve2/lxc
cat > /etc/pve/storage.cfg <<'EOF'
dir: local
	path /var/lib/vz
	content iso,vztmpl,backup

lvmthin: local-lvm
	thinpool data
	vgname pve
	content rootdir,images

lvm: ssd-ha01
	vgname ssd-ha01
	content images,rootdir
	saferemove 0
	shared 1

lvmthin: tank-full
	thinpool full
	vgname tank
	content images,rootdir

lvmthin: tank-cold
	thinpool cold
	vgname tank
	content images,rootdir

lvmthin: tank-clones
	thinpool clones
	vgname tank
	content images,rootdir

EOF
cat > $P/pve1/qemu-server/100.conf <<'EOF'
boot: order=scsi0;ide2
cores: 2
ide2: local-lvm:vm-100-cloudinit,media=cdrom
memory: 2048
meta: creation-qemu=9.2.0,ctime=1763000000
name: web01
net0: virtio=BC:24:11:00:01:00,bridge=vmbr0
ostype: l26
parent: before
scsi0: local-lvm:vm-100-disk-0,iothread=1,size=4G
scsi1: local-lvm:vm-100-disk-1,iothread=1,size=1G
scsihw: virtio-scsi-single
smbios1: uuid=0b8e8c2e-4f5e-4d7a-9a51-6a0f0c1d0100
vmgenid: 6f1c2d3e-0000-4000-8000-000000000100

[before]
boot: order=scsi0;ide2
cores: 2
ide2: local-lvm:vm-100-cloudinit,media=cdrom
memory: 2048
name: web01
scsi0: local-lvm:vm-100-disk-0,iothread=1,size=4G
scsi1: local-lvm:vm-100-disk-1,iothread=1,size=1G
scsihw: virtio-scsi-single
snaptime: 1763100000
EOF
cat > $P/pve1/qemu-server/101.conf <<'EOF'
cores: 1
memory: 1024
name: clone101
net0: virtio=BC:24:11:00:01:01,bridge=vmbr0
scsi0: local-lvm:base-9000-disk-0/vm-101-disk-0,size=1G
scsihw: virtio-scsi-single
EOF
cat > $P/pve1/qemu-server/119.conf <<'EOF'
cores: 2
memory: 4096
name: fs119
scsi0: ssd-ha01:vm-119-disk-0,size=32M
scsihw: virtio-scsi-single
EOF
cat > $P/pve1/qemu-server/9000.conf <<'EOF'
cores: 1
memory: 1024
name: tmpl-debian
scsi0: local-lvm:base-9000-disk-0,size=1G
scsihw: virtio-scsi-single
template: 1
EOF
cat > $P/pve1/lxc/200.conf <<'EOF'
arch: amd64
cores: 1
hostname: ct200
memory: 512
ostype: debian
rootfs: local-lvm:vm-200-disk-0,size=2G
swap: 512
EOF
cat > $P/pve1/qemu-server/160.conf <<'EOF'
cores: 2
memory: 2048
name: db160
scsi0: tank-full:vm-160-disk-0,size=1G
scsihw: virtio-scsi-single
EOF
cat > $P/pve1/lxc/170.conf <<'EOF'
arch: amd64
cores: 1
hostname: ct170
memory: 512
ostype: debian
rootfs: tank-cold:vm-170-disk-0,size=1G
EOF
cat > $P/pve1/qemu-server/9100.conf <<'EOF'
cores: 1
memory: 1024
name: tmpl-clones
scsi0: tank-clones:base-9100-disk-0,size=2G
scsihw: virtio-scsi-single
template: 1
EOF
c=210
while [ $c -lt 230 ]; do
    printf 'cores: 1\nmemory: 1024\nname: clone%s\nscsi0: tank-clones:base-9100-disk-0/vm-%s-disk-0,size=2G\nscsihw: virtio-scsi-single\n' \
        $c $c > $P/pve1/qemu-server/$c.conf
    c=$((c + 1))
done
cat > $P/pve2/qemu-server/300.conf <<'EOF'
cores: 1
memory: 1024
name: app300
scsi0: ssd-ha01:vm-300-disk-0,size=16M
EOF

# ---- the rest of a node ------------------------------------------------------------------
cat > /usr/bin/pveversion <<'EOF'
#!/bin/sh
echo 'pve-manager/9.1.2/0123456789abcdef (running kernel: 6.14.11-4-pve)'
EOF
chmod 755 /usr/bin/pveversion
x mkdir -p /run/qemu-server /run/lock/qemu-server /run/lock/lxc /var/lib/pve-dm

# a stale LV held open (by "someone"): cleanup must refuse it
sh -c 'exec 3</dev/mapper/ssd--ha01-vm--777--disk--0; exec sleep 100000' &
echo $! > /run/holder-777.pid

# running VM 101: QEMU as qemu-server starts it, from a node binary linked as /usr/bin/kvm
NODE=$(sed -n 's/^exec \(\/host\/[^ ]*\) .*/\1/p' /usr/bin/node)
[ -x "$NODE" ] || { echo "KERNEL-SETUP FAILED: no node at /host (is DMVM_HOSTROOT=0?)" >&2; exit 1; }
x ln -s "$NODE" /usr/bin/kvm
/usr/bin/kvm "$ROOT/test/kernel/fake-kvm.mjs" -id 101 -name clone101,debug-threads=on \
    -chardev socket,id=qmp,path=/var/run/qemu-server/101.qmp,server=on,wait=off \
    -pidfile /var/run/qemu-server/101.pid -daemonize -smp 1 -m 1024 \
    -drive file=/dev/mapper/pve-vm--101--disk--0,if=none,id=drive-scsi0,format=raw &
KVM_PID=$!
# running CT 200: LXC's command socket @/var/lib/lxc/200/command bound, as pve-container looks for
# it in /proc/net/unix, and its rootfs held open. The host's perl (perl-base is essential on
# Debian) binds it with the name's exact length, as LXC does; node cannot (it pads the abstract
# name with NULs to 108 bytes, so /proc/net/unix shows "@/var/lib/lxc/200/command@@@...").
PERL5LIB=/host/usr/lib/x86_64-linux-gnu/perl-base /lib64/ld-linux-x86-64.so.2 \
    --library-path /host/lib/x86_64-linux-gnu:/host/usr/lib/x86_64-linux-gnu /host/usr/bin/perl -e '
    use Socket;
    my ($vmid, $rootfs, $ready) = @ARGV;
    open(my $disk, "<", $rootfs) or die "$rootfs: $!\n";
    socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!\n";
    bind($s, pack_sockaddr_un("\0/var/lib/lxc/$vmid/command")) or die "bind: $!\n";
    listen($s, 5) or die "listen: $!\n";
    open(my $r, ">", $ready) or die; print $r "$$\n"; close $r;
    sleep 3600 while 1;' 200 /dev/mapper/pve-vm--200--disk--0 /run/fake-lxc-200.ready &
LXC_PID=$!
i=0
while ! { [ -s /run/qemu-server/101.pid ] && [ -s /run/fake-lxc-200.ready ]; }; do
    i=$((i + 1)); [ $i -le 600 ] || { echo "KERNEL-SETUP FAILED: fake guests did not start" >&2; exit 1; }
    kill -0 $KVM_PID 2>/dev/null || { echo "KERNEL-SETUP FAILED: the stand-in kvm (VM 101) died" >&2; exit 1; }
    kill -0 $LXC_PID 2>/dev/null || { echo "KERNEL-SETUP FAILED: the stand-in container (CT 200, host perl) died" >&2; exit 1; }
    sleep 0.5
done

t1=$(cut -d' ' -f1 /proc/uptime)
log "node pve1 built in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s: $(dmsetup --manglename none ls | wc -l) dm entries"

# ---- the tests -----------------------------------------------------------------------------
cd "$ROOT" || exit 1
KERNEL_PART_TOOLS=${PART_TOOLS:+/host$PART_TOOLS} node test/kernel/kernel.test.mjs "$MODE"
rc=$?
t2=$(cut -d' ' -f1 /proc/uptime)
log "tests took $(awk -v a="$t1" -v b="$t2" 'BEGIN{printf "%.1f", b-a}')s (guest clock)"
exit $rc
