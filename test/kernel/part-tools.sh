# part-tools.sh - sourced by make-fixtures.sh and kernel-test.sh (bash): part_tools prints the
# folder of Debian's kpartx and sfdisk (packages kpartx, fdisk), unpacked (never installed) into
# dm-vm.sh's cache with the libraries they need in lib/ (the guest's initramfs has neither);
# nothing when apt-get cannot fetch them.
_part_fetch() { (cd "$1" && apt-get -o APT::Sandbox::User=root download -qq kpartx fdisk) >&2; }

part_tools() {
    local dir=${DMVM_CACHE:-${XDG_CACHE_HOME:-/var/tmp}/pve-dm-kernel}/part-tools t lib
    if ! [ -x "$dir/sbin/kpartx" ] || ! [ -x "$dir/sbin/sfdisk" ]; then
        t=$(mktemp -d)
        # stale package lists (dm-vm.sh setup found everything installed): refresh once
        if { _part_fetch "$t" || { apt-get update -qq >&2 && _part_fetch "$t"; }; } &&
           dpkg -x "$t"/kpartx_*.deb "$t/x" && dpkg -x "$t"/fdisk_*.deb "$t/x"; then
            mkdir -p "$t/x/lib"
            for lib in $(ldd "$t/x/sbin/kpartx" "$t/x/sbin/sfdisk" | awk '/=> \//{print $3}' | sort -u); do
                cp -L "$lib" "$t/x/lib/"
            done
            rm -rf "$dir"; mv "$t/x" "$dir"
        fi
        rm -rf "$t"
    fi
    [ -x "$dir/sbin/kpartx" ] && [ -x "$dir/sbin/sfdisk" ] && echo "$dir"
    return 0
}
