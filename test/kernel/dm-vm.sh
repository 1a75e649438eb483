#!/bin/bash
# dm-vm.sh - run a shell script inside a throw-away QEMU VM that boots Debian's
# stock kernel with a tiny busybox initramfs, so that device-mapper / LVM can be
# exercised against a REAL kernel even when the host kernel has no device-mapper
# (containers, CI). Works without KVM (TCG software emulation).
#
# Usage:
#   dm-vm.sh setup                     # install packages, fetch kernel, build initramfs
#                                      # (idempotent: a second call only checks)
#   dm-vm.sh run GUEST_SCRIPT [ARG..]  # boot, run GUEST_SCRIPT (sh) as root with ARGs,
#                                      # power off
#   dm-vm.sh rebuild                   # drop the cache and set up again
#
# Environment:
#   DMVM_CACHE    cache dir for kernel, modules, initramfs
#                 (default: ${XDG_CACHE_HOME:-/var/tmp}/pve-dm-kernel)
#   DMVM_SHARE    colon-separated host dirs, mounted read-write over 9p at the
#                 SAME path inside the guest (e.g. a project checkout)
#   DMVM_SHARE_LOOSE  the same, mounted with cache=loose: reads are 3x faster (node_modules),
#                 but only safe when nothing else changes those dirs during the run and
#                 nothing on the host needs the guest's writes to them
#   DMVM_HOSTROOT 1 (default): host / is mounted read-only at /host in the guest
#                 and `node` in the guest runs the host's node binary from there
#   DMVM_NO9P     1: do not use 9p at all; the script is appended to the
#                 initramfs as an extra cpio archive instead
#   DMVM_MEM      guest RAM in MiB (default 1024)
#   DMVM_SMP      guest vCPUs (default 1)
#   DMVM_TIMEOUT  seconds before qemu is killed (default 600)
#   DMVM_ACCEL    tcg (default) or kvm (only where /dev/kvm really works)
#   DMVM_TRACE    1: prefix each guest line with ms since qemu start
#
# Exit status of `run` = exit status of GUEST_SCRIPT (or 255 if the VM died or
# timed out).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin      # dmsetup, lvm, depmod live there

CACHE=${DMVM_CACHE:-${XDG_CACHE_HOME:-/var/tmp}/pve-dm-kernel}
KPKG=$CACHE/kpkg                    # unpacked kernel package (deleted after setup)
INITRD=$CACHE/initramfs.cpio        # uncompressed: unpacking zstd under TCG costs ~0.5 s
MODS="dm_mod dm_thin_pool dm_zero dm_snapshot dm_mirror loop crc32c_generic \
      virtio_pci 9pnet_virtio 9p"
# optional extras (kept only if the kernel package has them): real crypt and multipath
# targets, and the ciphers a LUKS2 default table (aes-xts-plain64) needs
MODS_OPT="dm_crypt dm_multipath dm_round_robin xts aesni_intel aes_generic"

log() { echo "[dm-vm] $*" >&2; }
die() { echo "[dm-vm] error: $*" >&2; exit 1; }

need_pkgs() {
    local missing=()
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    { [ -x /bin/busybox ] && /bin/busybox --list | grep -qx modprobe; } || missing+=(busybox-static)
    command -v lvm >/dev/null || [ -x /usr/sbin/lvm ] || missing+=(lvm2)
    command -v dmsetup >/dev/null || [ -x /usr/sbin/dmsetup ] || missing+=(dmsetup)
    command -v depmod >/dev/null || [ -x /usr/sbin/depmod ] || missing+=(kmod)
    command -v flock >/dev/null || missing+=(util-linux)
    command -v cpio >/dev/null || missing+=(cpio)
    command -v xz >/dev/null || missing+=(xz-utils)
    command -v readelf >/dev/null || missing+=(binutils)
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || die "missing ${missing[*]} and not root: install them with apt-get"
        log "apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

kernel_pkg() {  # linux-image-amd64 is a metapackage: resolve it to the real image package
    apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'
}

fetch_kernel() {
    local pkg
    pkg=$(kernel_pkg)
    [ -n "$pkg" ] || { apt-get update -qq; pkg=$(kernel_pkg); }
    [ -n "$pkg" ] || die "apt-cache does not know linux-image-amd64"
    log "downloading $pkg (apt-get download; /boot is not touched)"
    rm -rf "$CACHE/dl"; mkdir -p "$CACHE/dl"
    if ! (cd "$CACHE/dl" && apt-get -o APT::Sandbox::User=root download -qq "$pkg"); then
        apt-get update -qq; pkg=$(kernel_pkg)      # stale package lists: refresh once
        (cd "$CACHE/dl" && apt-get -o APT::Sandbox::User=root download -qq "$pkg") || die "apt-get download $pkg failed"
    fi
    rm -rf "$KPKG"; mkdir -p "$KPKG"
    dpkg -x "$CACHE"/dl/"$pkg"_*.deb "$KPKG"
    rm -rf "$CACHE/dl"
    echo "${pkg#linux-image-}" > "$CACHE/kver.tmp"
    mv "$CACHE/kver.tmp" "$CACHE/kver"
}

extract_vmlinux() {
    # Under TCG the kernel's own xz self-decompression costs ~4-5 s per boot.
    # Decompress once on the host; QEMU boots the ELF vmlinux via its PVH entry.
    local K vz off
    K=$(cat "$CACHE/kver"); vz=$KPKG/boot/vmlinuz-$K
    [ -f "$vz" ] || die "$vz missing from the kernel package"
    off=$(grep -abo $'\xfd7zXZ\x00' "$vz" | head -1 | cut -d: -f1 || true)
    # (xz exits non-zero because of the data trailing the stream; the ELF check below decides)
    rm -f "$CACHE/vmlinux.tmp"
    [ -n "$off" ] && { tail -c +$((off + 1)) "$vz" | xz -dc > "$CACHE/vmlinux.tmp" 2>/dev/null || true; }
    if [ -s "$CACHE/vmlinux.tmp" ] &&
       readelf -n "$CACHE/vmlinux.tmp" 2>/dev/null | grep -q 'note type: (0x00000012)'; then
        mv "$CACHE/vmlinux.tmp" "$CACHE/vmlinux"
    else
        log "could not extract a PVH-bootable vmlinux; using the compressed bzImage"
        rm -f "$CACHE/vmlinux.tmp"; cp "$vz" "$CACHE/vmlinux"
    fi
}

extract_modules() {
    # Keep only the dependency closure of $MODS (a few MB), so that the initramfs can be
    # rebuilt later (new node, new dmsetup) without downloading the kernel again.
    local K moddir dst m
    K=$(cat "$CACHE/kver"); moddir=$KPKG/lib/modules/$K
    dst=$CACHE/modules.tmp
    rm -rf "$dst"; mkdir -p "$dst/lib/modules/$K"
    [ -f "$moddir/modules.dep" ] || depmod -b "$KPKG" "$K"
    local want=$MODS
    for m in $MODS_OPT; do
        modprobe -d "$KPKG" -S "$K" --show-depends "$m" >/dev/null 2>&1 && want+=" $m"
    done
    # shellcheck disable=SC2086
    for m in $(modprobe -d "$KPKG" -S "$K" --show-depends -a $want | awk '$1=="insmod"{print $2}' | sort -u); do
        install -D -m 644 "$m" "$dst/lib/modules/$K/${m#"$moddir"/}"
    done
    cp "$moddir"/modules.{order,builtin,builtin.modinfo} "$dst/lib/modules/$K/"
    depmod -b "$dst" "$K"
    echo "$MODS $MODS_OPT" > "$dst/mods.list"
    rm -rf "$CACHE/modules"; mv "$dst" "$CACHE/modules"
}

copy_bin() {  # copy an executable plus its shared libraries into $root
    local root=$1 bin=$2 dst=${3:-$2}
    install -D -m 755 "$(readlink -f "$bin")" "$root$dst"
    { ldd "$bin" 2>/dev/null || true; } | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | while read -r lib; do
        [ -e "$root$lib" ] || install -D -m 755 "$(readlink -f "$lib")" "$root$lib"
    done
}

initramfs_stamp() {
    # Everything the initramfs is made of: when any of it changes, setup rebuilds it.
    local node
    node=$(command -v node || true)
    {
        declare -f build_initramfs copy_bin
        echo "$MODS $MODS_OPT"; cat "$CACHE/kver"
        if [ -n "$node" ]; then readlink -f "$node"; ldd "$node" | sed "s/ *(0x[0-9a-f]*)//"; fi
        md5sum /bin/busybox "$(command -v dmsetup)" "$(command -v lvm)" "$(command -v flock)"
    } 2>/dev/null | md5sum | cut -d' ' -f1
}

build_initramfs() {
    local K root a d
    K=$(cat "$CACHE/kver")
    root=$(mktemp -d "$CACHE/root.XXXX")
    mkdir -p "$root"/usr/{bin,sbin,lib,lib64} "$root"/{dev,proc,sys,run,tmp,mnt/dmvm,host,etc/lvm,root,var/lib}
    ln -s usr/bin "$root/bin"; ln -s usr/sbin "$root/sbin"
    ln -s usr/lib "$root/lib"; ln -s usr/lib64 "$root/lib64"
    ln -s /run/lock "$root/var/lock"; ln -s /run "$root/var/run"
    # busybox + applet links
    copy_bin "$root" /bin/busybox /usr/bin/busybox
    # applets at their canonical places (/sbin/modprobe matters: the kernel's
    # request_module() and lvm both exec /sbin/modprobe)
    for a in $(/bin/busybox --list-full); do
        case $a in sbin/*|usr/sbin/*) d=usr/sbin;; *) d=usr/bin;; esac
        [ -e "$root/$d/${a##*/}" ] || ln -s /usr/bin/busybox "$root/$d/${a##*/}"
    done
    # real dmsetup / lvm (+ libs); lvm applet names as symlinks
    rm -f "$root/usr/sbin/dmsetup" "$root/usr/bin/dmsetup"
    copy_bin "$root" "$(command -v dmsetup)" /usr/sbin/dmsetup
    copy_bin "$root" "$(command -v lvm)" /usr/sbin/lvm
    for a in pvcreate pvs pvremove pvscan vgcreate vgs vgremove vgchange vgscan \
             lvcreate lvs lvremove lvchange lvscan lvdisplay vgdisplay pvdisplay \
             lvrename vgrename lvextend lvresize lvreduce lvconvert pvchange vgextend vgreduce \
             vgcfgbackup vgcfgrestore vgimport vgexport vgmknodes; do
        ln -sf lvm "$root/usr/sbin/$a"
    done
    # util-linux flock, as on a Proxmox node (busybox has none; Proxmox locks with flock -w)
    copy_bin "$root" "$(command -v flock)" /usr/bin/flock
    # libraries of the host's node so /host/<node> runs inside the guest
    if command -v node >/dev/null; then
        ldd "$(command -v node)" | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | while read -r lib; do
            [ -e "$root$lib" ] || install -D -m 755 "$(readlink -f "$lib")" "$root$lib"
        done
        printf '#!/bin/sh\nexec /host%s "$@"\n' "$(readlink -f "$(command -v node)")" > "$root/usr/bin/node"
        chmod 755 "$root/usr/bin/node"
    fi
    # kernel modules: the closure kept by extract_modules, with its own modules.dep
    mkdir -p "$root/usr/lib/modules"
    cp -a "$CACHE/modules/lib/modules/$K" "$root/usr/lib/modules/"
    # LVM without udev / dmeventd / thin-provisioning-tools
    cat > "$root/etc/lvm/lvm.conf" <<'EOF'
devices {
    obtain_device_list_from_udev = 0
    external_device_info_source = "none"
    use_devicesfile = 0
}
activation {
    udev_sync = 0
    udev_rules = 0
    monitoring = 0
}
global {
    thin_check_executable = ""
    thin_repair_executable = ""
}
EOF
    : > "$root/etc/fstab"
    echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
    printf 'root:x:0:\ndisk:x:6:\n' > "$root/etc/group"
    cat > "$root/init" <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DM_DISABLE_UDEV=1 LVM_SUPPRESS_FD_WARNINGS=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run/lock/lvm /run/lvm
mount -t tmpfs -o size=80% tmpfs /tmp
echo /sbin/modprobe > /proc/sys/kernel/modprobe
NO9P=0; for a in $(cat /proc/cmdline); do case $a in
    dmvm.no9p=1) NO9P=1;; dmvm.hostroot=1) HOSTROOT=1;;
    dmvm.share=*) SHARES=${a#dmvm.share=};; dmvm.shareloose=*) LOOSE=${a#dmvm.shareloose=};; esac; done
if [ $NO9P = 0 ]; then
    modprobe -a virtio_pci 9pnet_virtio 9p
    O=trans=virtio,version=9p2000.L,msize=512000
    mount -t 9p -o $O dmvm /mnt/dmvm || echo "DMVM: 9p mount failed"
    [ "${HOSTROOT:-0}" = 1 ] && mount -t 9p -o $O,ro,cache=loose hostroot /host
    i=0; for d in $(echo "${SHARES:-}" | tr ':' ' '); do
        mkdir -p "$d" && mount -t 9p -o $O share$i "$d"; i=$((i+1)); done
    for d in $(echo "${LOOSE:-}" | tr ':' ' '); do
        mkdir -p "$d" && mount -t 9p -o $O,cache=loose share$i "$d"; i=$((i+1)); done
fi
cd /root
echo; echo "DMVM: command starts at guest uptime $(cut -d' ' -f1 /proc/uptime)s"
sh /mnt/dmvm/cmd.sh < /dev/null
echo "DMVM_EXIT=$?"
echo "DMVM: command ends at guest uptime $(cut -d' ' -f1 /proc/uptime)s"
sync
poweroff -f
EOF
    chmod 755 "$root/init"
    (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) > "$INITRD.tmp"
    mv "$INITRD.tmp" "$INITRD"
    rm -rf "$root"
    log "initramfs: $INITRD ($(du -h "$INITRD" | cut -f1))"
}

setup() {
    local stamp
    mkdir -p "$CACHE"
    # one setup at a time (a bar and CI may start together); runs only read the cache
    exec 9>"$CACHE/.lock"
    flock -w 1800 9 2>/dev/null || true
    need_pkgs
    # (a cache made by an older copy of this script with fewer modules is refetched)
    if ! { [ -s "$CACHE/kver" ] && [ -s "$CACHE/vmlinux" ] && [ -d "$CACHE/modules" ] &&
           [ "$(cat "$CACHE/modules/mods.list" 2>/dev/null)" = "$MODS $MODS_OPT" ]; }; then
        fetch_kernel
        extract_vmlinux
        extract_modules
        # the unpacked package is ~450 MB (mostly modules); vmlinux + the closure are kept
        rm -rf "$KPKG"
    fi
    stamp=$(initramfs_stamp)
    if ! [ -s "$INITRD" ] || [ "$(cat "$CACHE/initramfs.stamp" 2>/dev/null)" != "$stamp" ]; then
        build_initramfs
        echo "$stamp" > "$CACHE/initramfs.stamp"
    fi
    exec 9>&-
}

run_vm() {
    local script=$1 K rundir accel smp rc=255 t0 tready="" line initrd append a
    shift
    setup
    K=$(cat "$CACHE/kver")
    rundir=$(mktemp -d "${TMPDIR:-/tmp}/dmvm-run.XXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$rundir'" RETURN
    # cmd.sh = the ARGs as positional parameters, then the script itself
    {
        printf 'set --'
        for a in "$@"; do printf " '%s'" "${a//\'/\'\\\'\'}"; done
        printf '\n'
        cat "$script"
    } > "$rundir/cmd.sh"
    chmod 755 "$rundir/cmd.sh"
    # TCG unless asked: on the machines this was made on /dev/kvm exists but is unusable
    # (nested: "failed to set MSR 0x10a" with -cpu max/host, a silent hang without it)
    accel=${DMVM_ACCEL:-tcg}
    smp=${DMVM_SMP:-1}   # 1 vCPU boots ~0.7 s faster under TCG than 2
    append="console=ttyS0 quiet loglevel=3 panic=-1"
    local args=(-nodefaults -no-user-config -nographic -no-reboot
        -machine "${DMVM_MACHINE:-q35},accel=$accel" -cpu max -smp "$smp" -m "${DMVM_MEM:-1024}"
        -serial stdio -kernel "${DMVM_KERNEL:-$CACHE/vmlinux}")
    initrd=$INITRD
    if [ "${DMVM_NO9P:-0}" = 1 ]; then
        # append a second cpio archive with the script (kernel unpacks concatenated archives)
        mkdir -p "$rundir/x/mnt/dmvm"; cp "$rundir/cmd.sh" "$rundir/x/mnt/dmvm/cmd.sh"
        cat "$INITRD" > "$rundir/initrd"
        (cd "$rundir/x" && find . | cpio -o -H newc --quiet -R 0:0) >> "$rundir/initrd"
        initrd=$rundir/initrd; append+=" dmvm.no9p=1"
    else
        args+=(-virtfs "local,path=$rundir,mount_tag=dmvm,security_model=none")
        if [ "${DMVM_HOSTROOT:-1}" = 1 ]; then
            args+=(-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on")
            append+=" dmvm.hostroot=1"
        fi
        # share<i> tags: DMVM_SHARE first, then DMVM_SHARE_LOOSE (the init counts the same way)
        local i=0 d list var shares
        for var in DMVM_SHARE DMVM_SHARE_LOOSE; do
            shares=""
            IFS=: read -ra list <<< "${!var:-}"
            for d in "${list[@]}"; do
                [ -n "$d" ] || continue
                d=$(readlink -f "$d")
                [ -d "$d" ] || die "$var: $d is not a directory"
                case $d in *[[:space:],]*) die "$var: $d has a space or comma in its path";; esac
                args+=(-virtfs "local,path=$d,mount_tag=share$i,security_model=none")
                shares+="${shares:+:}$d"; i=$((i+1))
            done
            [ -z "$shares" ] || case $var in
                DMVM_SHARE) append+=" dmvm.share=$shares" ;;
                *) append+=" dmvm.shareloose=$shares" ;;
            esac
        done
    fi
    args+=(-initrd "$initrd" -append "$append")
    log "accel=$accel smp=$smp mem=${DMVM_MEM:-1024}M kernel=$K timeout=${DMVM_TIMEOUT:-600}s"
    t0=$EPOCHREALTIME
    while IFS= read -r line; do
        line=${line%$'\r'}
        case $line in
            *"DMVM: command starts"*) tready=$EPOCHREALTIME;;
            *DMVM_EXIT=*) rc=${line##*DMVM_EXIT=};;
        esac
        if [ "${DMVM_TRACE:-0}" = 1 ]; then
            local now=$EPOCHREALTIME
            printf '%6d| %s\n' "$(( (${now/./} - ${t0/./}) / 1000 ))" "$line"   # ms since qemu start
        else
            printf '%s\n' "$line"
        fi
    done < <(timeout -k 10 "${DMVM_TIMEOUT:-600}" qemu-system-x86_64 "${args[@]}" 2>&1 </dev/null |
             sed -u 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g')
    local tend=$EPOCHREALTIME
    [ -n "$tready" ] && log "host: qemu start -> command start: $(awk -v a="$t0" -v b="$tready" 'BEGIN{printf "%.2f", b-a}')s"
    log "host: total wall time: $(awk -v a="$t0" -v b="$tend" 'BEGIN{printf "%.2f", b-a}')s, guest exit=$rc"
    case $rc in ''|*[!0-9]*) rc=255;; esac
    return "$rc"
}

case ${1:-} in
    setup) setup ;;
    rebuild) rm -rf "$INITRD" "$CACHE/initramfs.stamp" "$CACHE/vmlinux" "$CACHE/modules" "$KPKG" "$CACHE/kver"; setup ;;
    run) [ -f "${2:-}" ] || { echo "usage: $0 run GUEST_SCRIPT [ARG...]" >&2; exit 2; }; shift; run_vm "$@" ;;
    *) echo "usage: $0 setup|rebuild|run GUEST_SCRIPT [ARG...]" >&2; exit 2 ;;
esac
