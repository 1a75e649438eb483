# thin-tools.sh - sourced by make-fixtures.sh and kernel-test.sh (bash): thin_tools prints the
# folder of Debian's thin-provisioning-tools (thin_check, thin_repair, thin_dump as pdata_tools),
# unpacked (never installed) into dm-vm.sh's cache with the libraries pdata_tools needs (the
# guest's initramfs has no libexpat); nothing when apt-get cannot fetch them.
_thin_fetch() { (cd "$1" && apt-get -o APT::Sandbox::User=root download -qq thin-provisioning-tools) >&2; }

thin_tools() {
    local dir=${DMVM_CACHE:-${XDG_CACHE_HOME:-/var/tmp}/pve-dm-kernel}/thin-tools t lib
    if ! [ -x "$dir/usr/sbin/pdata_tools" ]; then
        t=$(mktemp -d)
        # stale package lists (dm-vm.sh setup found everything installed): refresh once
        if { _thin_fetch "$t" || { apt-get update -qq >&2 && _thin_fetch "$t"; }; } &&
           dpkg -x "$t"/thin-provisioning-tools_*.deb "$t/x"; then
            mkdir -p "$t/x/lib"
            for lib in $(ldd "$t/x/usr/sbin/pdata_tools" | awk '/=> \//{print $3}'); do
                cp -L "$lib" "$t/x/lib/"
            done
            rm -rf "$dir"; mv "$t/x" "$dir"
        fi
        rm -rf "$t"
    fi
    [ -x "$dir/usr/sbin/pdata_tools" ] && echo "$dir"
    return 0
}
