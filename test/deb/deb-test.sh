#!/usr/bin/env bash
# npm run test:deb: the Debian package's proof tier (as root). It builds the package (npm run deb),
# runs lintian on it, then installs it on a clean Debian 12 made by debootstrap from
# deb.debian.org, in a chroot: Debian's own nodejs, lvm2 and dmsetup come with it; pve-dm runs
# there on the packaged sample; its guard hookscript runs as Proxmox runs it, on a node of stand-ins
# made from that sample; the units verify; the timer is not enabled; an edited
# configuration, an administrator's plugin and the journal survive a reinstall, an upgrade and
# a remove; purge leaves nothing of pve-dm. Every check prints `ok - ...` or `not ok - ...`, and the
# last line is `N passed, N failed` (.ci/run adds it up).
#
# The debootstrap root is kept as a tarball (PVE_DM_TEST_CACHE, default
# ${XDG_CACHE_HOME:-/var/cache}/pve-dm-test/bookworm.tar; PVE_DM_TEST_REFRESH=1 makes it again):
# the first run takes a few minutes more, and works from nothing. PVE_DM_TEST_KEEP=1 keeps the
# work folder (the root, the file lists, lintian's output) for a look afterwards.
#
# Everything runs in a mount namespace of its own (unshare): the chroot's /proc, /sys and /dev
# mounts vanish with it whatever happens, and are unmounted on exit before anything is removed.
#
# dpkg-query's ${Status} and the scripts run in the chroot are meant for them, not for this shell:
# shellcheck disable=SC2016
set -euo pipefail
script=$(readlink -f "$0")
cd "$(dirname "$script")/../.."
project=$PWD

passed=0
failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
summary() { echo "$passed passed, $failed failed"; }

if [ "$(id -u)" != 0 ]; then
    not_ok "the Debian package tier runs as root (debootstrap, chroot, mounts): sudo npm run test:deb"
    summary
    exit 1
fi
if [ -z "${PVE_DM_DEB_TEST_NAMESPACE:-}" ]; then
    export PVE_DM_DEB_TEST_NAMESPACE=1
    exec unshare --mount --propagation private -- bash "$script" "$@"
fi

started=$(date +%s%N)
# Seconds since the start, for the timings each phase prints.
elapsed() { echo "$(( ($(date +%s%N) - started) / 100000000 ))" | sed -E 's/^([0-9]*)([0-9])$/\1.\2/; s/^\./0./'; }
phase() { echo "# [$(elapsed) s] $*"; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/pve-dm-deb-test.XXXXXX")
root=$work/root
log=$work/log
cleanup() {
    local target
    # Deepest first; -l: a process left in the chroot must not keep a mount (and the files under it) alive.
    findmnt -rn -o TARGET | grep -F "$root/" | sort -r | while read -r target; do umount -l "$target" || true; done
    if findmnt -rn -o TARGET | grep -qF "$root/"; then
        echo "# $work kept: something is still mounted under it" >&2
    elif [ -n "${PVE_DM_TEST_KEEP:-}" ]; then
        echo "# $work kept (PVE_DM_TEST_KEEP)" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# Runs a check; its output is shown only when it fails.
check() {
    local what=$1
    shift
    if "$@" >"$log" 2>&1; then ok "$what"; else not_ok "$what"; sed 's/^/    | /' "$log" | tail -n 30; fi
}
# A command in the chroot, with a clean environment as a root shell on the node would have it.
in_root() {
    chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

# ─── The host's tools ───────────────────────────────────────────────────────────────────────────

host_tools() {
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v lintian >/dev/null || missing+=(lintian)
    [ ${#missing[@]} -eq 0 ] && return 0
    phase "apt-get install ${missing[*]}"
    # Services kept from starting (policy-rc.d), as in a container build; a guard already there is not ours.
    local made_guard=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_guard=1
    fi
    local status=0
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1 || status=$?
    [ "$made_guard" = 0 ] || rm -f /usr/sbin/policy-rc.d
    if [ "$status" != 0 ]; then sed 's/^/    | /' "$log" | tail -n 20; return 1; fi
}

# ─── Build and lint ─────────────────────────────────────────────────────────────────────────────

version=$(node -p "require('./package.json').version")
deb=$project/dist/pve-dm_${version}_all.deb
upgrade_version=$version+upgrade1
upgrade_deb=$work/upgrade/pve-dm_${upgrade_version}_all.deb

build() {
    phase "npm run deb"
    check "npm run deb builds dist/pve-dm_${version}_all.deb" npm run --silent deb
    [ -f "$deb" ] || return 1
    echo "# $(basename "$deb"): $(stat -c %s "$deb") bytes"
    # Built again from the same commit: the same bytes (SOURCE_DATE_EPOCH, sorted members, gzip -n).
    check "a second build is the same, byte for byte" sh -c \
        "npm run --silent deb -- '$work/again' && cmp '$deb' '$work/again/$(basename "$deb")'"
    check "an upgrade to ${upgrade_version} is built (PVE_DM_DEB_VERSION)" env PVE_DM_DEB_VERSION="$upgrade_version" \
        npm run --silent deb -- "$work/upgrade"
    check "dpkg orders ${upgrade_version} after ${version}" dpkg --compare-versions "$upgrade_version" gt "$version"
}

lint() {
    phase "lintian"
    local status=0
    # Errors and warnings fail; informational, pedantic and experimental tags and the overrides (O:,
    # each with its reason: test/deb/package/lintian-overrides) are shown.
    lintian --fail-on error,warning --pedantic --display-experimental --show-overrides "$deb" 2>&1 |
        grep -v 'running with root privileges' >"$work/lintian.txt" || true
    lintian --fail-on error,warning "$deb" >/dev/null 2>&1 || status=$?
    sed 's/^/# lintian: /' "$work/lintian.txt"
    if [ "$status" = 0 ]; then ok "lintian: no error and no warning"; else not_ok "lintian: errors or warnings"; fi
}

# ─── A clean Debian 12 ──────────────────────────────────────────────────────────────────────────

cache=${PVE_DM_TEST_CACHE:-${XDG_CACHE_HOME:-/var/cache}/pve-dm-test}
base=$cache/bookworm.tar

# debootstrap's default set (required and important: systemd among them) and man-db, so that
# `man -w` and systemd-analyze's check of Documentation=man:pve-dm(8) can run.
make_base() {
    phase "debootstrap bookworm (no cache at $base)"
    mkdir -p "$cache" "$work/base"
    if ! debootstrap --include=man-db bookworm "$work/base" http://deb.debian.org/debian >"$log" 2>&1; then
        sed 's/^/    | /' "$log" | tail -n 30
        return 1
    fi
    rm -f "$work"/base/var/cache/apt/archives/*.deb
    tar -C "$work/base" --numeric-owner -cpf "$base.tmp" . && mv "$base.tmp" "$base"
    rm -rf "$work/base"
    echo "# cached $base ($(( $(stat -c %s "$base") / 1048576 )) MiB)"
}

setup_root() {
    if [ ! -s "$base" ] || [ -n "${PVE_DM_TEST_REFRESH:-}" ]; then make_base || return 1; fi
    phase "unpack the bookworm root"
    mkdir -p "$root"
    tar -C "$root" --numeric-owner -xpf "$base"
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys" 2>/dev/null || mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    mount --make-rslave "$root/dev"
    # Written as new files: through a link left in the root, a write would land on the host.
    rm -f "$root/etc/resolv.conf" "$root/usr/sbin/policy-rc.d"
    cat /etc/resolv.conf >"$root/etc/resolv.conf"
    # Nothing the packages install may start a service, in the chroot or on the host.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    phase "apt-get update in the root"
    # bash-completion, as on a Proxmox VE node: the check below loads pve-dm's completion through it.
    { in_root apt-get update -qq && in_root apt-get install -y -qq bash-completion; } >"$log" 2>&1 ||
        { sed 's/^/    | /' "$log" | tail -n 20; return 1; }
    mkdir -p "$root/tmp/debs"
    cp "$deb" "$upgrade_deb" "$root/tmp/debs/"
}

# ─── In the root ────────────────────────────────────────────────────────────────────────────────

# Passes when the command exits with `code` and its output (stdout and stderr) matches `pattern`.
expect() {
    local what=$1 code=$2 pattern=$3 status=0
    shift 3
    "$@" >"$log" 2>&1 || status=$?
    if [ "$status" = "$code" ] && grep -Eq -- "$pattern" "$log"; then
        ok "$what"
    else
        not_ok "$what (exit $status, expected $code and /$pattern/)"
        sed 's/^/    | /' "$log" | tail -n 30
    fi
}
absent() { [ ! -e "$root$1" ] && [ ! -L "$root$1" ]; }
mode_of() { stat -c '%a %U:%G' "$root$1"; }

# Every path of the root but the volatile places (apt's and dpkg's own, caches, logs), with a
# link's target: what purge must leave as it was.
file_list() {
    (cd "$root" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./run -o -path ./tmp \
        -o -path ./root -o -path ./var/cache -o -path ./var/log -o -path ./var/lib/apt -o -path ./var/lib/dpkg \
        -o -path ./var/lib/man-db -o -path ./etc/ld.so.cache \) -prune -o -printf '/%P -> %l\n') |
        sed 's/ -> $//' | sort
}
# The files dpkg knows a package for, /bin and the other merged folders seen under /usr.
owned_files() {
    in_root sh -c "dpkg-query -W -f='\${Package}\n' | xargs dpkg-query -L" |
        sed -E 's#^/(bin|sbin|lib|lib32|lib64|libx32)(/|$)#/usr/\1\2#' | sort -u
}

install_and_run() {
    phase "apt-get install ./pve-dm_${version}_all.deb"
    file_list >"$work/before.txt"
    check "apt-get install ./pve-dm_${version}_all.deb, with its dependencies from deb.debian.org" \
        in_root apt-get install -y "/tmp/debs/pve-dm_${version}_all.deb"
    local package
    for package in pve-dm nodejs lvm2 dmsetup; do
        expect "$package is installed" 0 '^install ok installed$' in_root dpkg-query -W -f='${Status}\n' "$package"
    done
    expect "nodejs is Debian 12's (bookworm main)" 0 'deb\.debian\.org/debian bookworm/main' \
        in_root apt-cache policy nodejs
    expect "node --version is Debian's 18.x" 0 '^v18\.(19|[2-9][0-9])\.' in_root node --version
    phase "pve-dm in the root"
    local sample=/usr/share/doc/pve-dm/samples/multi-pool
    expect "pve-dm --root $sample --report-only: grade F, exit 2 (duplicates)" 2 'Grade F' \
        in_root pve-dm --root "$sample" --report-only --no-color
    check "the console run wrote its HTML report to /var/lib/pve-dm/reports" \
        sh -c "ls '$root'/var/lib/pve-dm/reports/*.html"
    expect "pve-dm --version" 0 "^pve-dm ${version}\$" in_root pve-dm --version
    expect "pve-dm --help names it pve-dm" 0 '^Usage: pve-dm ' in_root pve-dm --help
    expect "pve-dm --help: the settings file is /etc/pve-dm/pve-dm.conf" 0 '/etc/pve-dm/pve-dm\.conf' \
        in_root pve-dm --help
    expect "pve-dm plugins: the shipped notifiers, from /usr/lib/pve-dm/plugins" 0 'sendmail' in_root pve-dm plugins
    # bash-completion finds it by the command's name and runs it, with its own _filedir
    # (_completion_loader returns 124 when it loaded one: bash's "try again").
    expect "bash-completion loads pve-dm's completion: --format offers json" 0 '^json$' in_root bash -c '
        source /usr/share/bash-completion/bash_completion && { _completion_loader pve-dm; complete -p pve-dm; } &&
        COMP_WORDS=(pve-dm --format j) COMP_CWORD=2 && _pve_dm && printf "%s\n" "${COMPREPLY[@]}"'
    expect "bash-completion: --root completes folders" 0 '^/usr/share/doc/pve-dm/samples/$' in_root bash -c '
        source /usr/share/bash-completion/bash_completion && { _completion_loader pve-dm; complete -p pve-dm; } &&
        COMP_WORDS=(pve-dm --root /usr/share/doc/pve-dm/sa) COMP_CWORD=2 && _pve_dm && printf "%s/\n" "${COMPREPLY[@]}"'
    expect "man -w pve-dm" 0 '^/usr/share/man/man8/pve-dm\.8\.gz$' in_root man -w pve-dm
    expect "man pve-dm renders, with its EXIT STATUS" 0 'EXIT STATUS' in_root env MANPAGER=cat man pve-dm
    # groff's warnings, as lintian asks for them (a line too long to break, an unknown request...).
    check "man --warnings: groff has nothing to say about it" sh -c \
        "chroot '$root' man --warnings -E UTF-8 -l -Tutf8 -Z /usr/share/man/man8/pve-dm.8.gz 2>&1 >/dev/null |
            (! grep .)"
}

# ─── The guard hookscript ───────────────────────────────────────────────────────────────────────

hook=/var/lib/vz/snippets/pve-dm-guard
sample=/usr/share/doc/pve-dm/samples/multi-pool
guard_node=$(cat "$project/samples/multi-pool/hostname")

# A command in the chroot as Proxmox runs a hookscript, on the host name of the sample's node (a UTS
# namespace of its own). Its PATH has the stand-ins of /tmp/guard/bin and no sbin folder: whatever
# pve-dm asks for, the host's own dmsetup and LVM are never found, and never look at its devices.
as_hook() {
    unshare --uts -- sh -c 'hostname "$0" && exec "$@"' "$guard_node" chroot "$root" /usr/bin/env -i \
        HOME=/root LANG=C.UTF-8 PATH=/tmp/guard/bin:/usr/bin:/bin "$@"
}

# Runs the hookscript as Proxmox does (the file itself, given the VMID and the phase), then
# `pve-dm guard` with the same two: each must exit `code`, print what matches `pattern` (an empty
# pattern: nothing at all), and both the same.
hook_run() {
    local what=$1 code=$2 pattern=$3 vmid=$4 phase=$5 status=0 direct=0
    as_hook "$hook" "$vmid" "$phase" >"$work/hook.out" 2>&1 || status=$?
    as_hook /usr/sbin/pve-dm guard "$vmid" "$phase" >"$work/guard.out" 2>&1 || direct=$?
    if [ "$status" = "$code" ] && [ "$direct" = "$code" ] && cmp -s "$work/hook.out" "$work/guard.out" &&
        if [ -z "$pattern" ]; then [ ! -s "$work/hook.out" ]; else grep -Eq -- "$pattern" "$work/hook.out"; fi; then
        ok "$what"
    else
        not_ok "$what (hookscript: exit $status, pve-dm guard: exit $direct; expected $code and /$pattern/)"
        sed 's/^/    | hookscript: /' "$work/hook.out" | tail -n 10
        sed 's/^/    | pve-dm guard: /' "$work/guard.out" | tail -n 10
    fi
}

# The stand-ins print what the packaged sample recorded (the arguments are pve-dm's own: DM_INFO_ARGS...);
# asked anything else, they fail and say so. qm and pct only record what they were asked.
guard_stand_ins() {
    mkdir -p "$root/tmp/guard/bin"
    cat >"$root/tmp/guard/bin/dmsetup" <<STUB
#!/bin/sh
case " \$* " in
    *" info "*) exec cat $sample/dmsetup.txt ;;
    *" table "*) exec cat $sample/dmsetup-table.txt ;;
    *" status "*) exit 0 ;;
esac
echo "dmsetup stand-in: \$*: not a command the guard may give" | tee -a /tmp/guard/refused >&2
exit 1
STUB
    cat >"$root/tmp/guard/bin/lvs" <<STUB
#!/bin/sh
case " \$* " in *" --segments "*) exit 0 ;; esac
exec cat $sample/lvs.txt
STUB
    printf '#!/bin/sh\nexit 0\n' >"$root/tmp/guard/bin/pvs"
    printf '#!/bin/sh\necho "pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-9-pve)"\n' \
        >"$root/tmp/guard/bin/pveversion"
    local tool
    for tool in qm pct; do
        printf '#!/bin/sh\necho "%s $*" >>/tmp/guard/calls\n' "$tool" >"$root/tmp/guard/bin/$tool"
    done
    chmod 755 "$root"/tmp/guard/bin/*
}

# The README's loop that gives every guest of this node the guard (the ```sh block that has it).
readme_loop() {
    awk '/^```sh$/ { block = ""; inside = 1; next }
        /^```$/ && inside { if (block ~ /for conf in \/etc\/pve\/local\//) printf "%s", block; inside = 0; next }
        inside { block = block $0 "\n" }' "$project/README.md"
}

guard_hookscript() {
    phase "the guard hookscript"
    expect "$hook is 0755 root:root" 0 '^755 root:root$' mode_of "$hook"
    check "$hook is test/deb/package/pve-dm-guard, byte for byte" cmp "$root$hook" test/deb/package/pve-dm-guard
    check "and so is /usr/share/doc/pve-dm/examples/pve-dm-guard" \
        cmp "$root/usr/share/doc/pve-dm/examples/pve-dm-guard" test/deb/package/pve-dm-guard
    check "its code is one line: exec /usr/sbin/pve-dm guard \"\$1\" \"\$2\"" sh -c "
        [ \"\$(grep -v -e '^#' -e '^\$' '$root$hook')\" = 'exec /usr/sbin/pve-dm guard \"\$1\" \"\$2\"' ] &&
        [ \"\$(head -n 1 '$root$hook')\" = '#!/bin/sh' ]"
    expect "dpkg -L pve-dm lists $hook" 0 "^${hook}\$" in_root dpkg -L pve-dm
    expect "dpkg -S $hook: pve-dm's" 0 "^pve-dm: ${hook}\$" in_root dpkg -S "$hook"
    # dpkg replaces it on upgrade (test/tools/deb.ts says why); its one conffile is the settings file.
    check "it is not a conffile: dpkg's only one is /etc/pve-dm/pve-dm.conf" sh -c "
        [ \"\$(chroot '$root' dpkg-query -W -f='\${Conffiles}' pve-dm | awk 'NF { print \$1 }')\" = \
            /etc/pve-dm/pve-dm.conf ]"
    check "dpkg --verify pve-dm: every file as packaged" sh -c "chroot '$root' dpkg --verify pve-dm | (! grep .)"
    guard_stand_ins
    # Proxmox calls it at every phase: all but pre-start pass without looking.
    hook_run "$hook 100 post-start: exit 0, nothing printed" 0 '' 100 post-start
    hook_run "$hook 100 post-stop: exit 0, nothing printed" 0 '' 100 post-stop
    # This root is no Proxmox VE node (no /etc/pve): the guard cannot check, and lets the guest start.
    hook_run "$hook 100 pre-start, on a root that is no node: exit 0, it may start, as pve-dm guard" 0 \
        '^pve-dm guard: could not check VMID 100 \(/etc/pve/storage\.cfg is missing.*\); it may start$' 100 pre-start
    # The sample's node: its /etc/pve, its name, its dmsetup and lvs output from the stand-ins.
    cp -a "$root$sample/etc/pve" "$root/etc/pve"
    hook_run "$hook 171 pre-start on the sample's node: exit 1, refused, as pve-dm guard" 1 \
        '^pve-dm guard: VM 171 must not start: rescue171 \(duplicate-table\); dmsetup remove rescue171 ' 171 pre-start
    hook_run "$hook 169 pre-start: exit 1, refused (a duplicate)" 1 \
        '^pve-dm guard: VM 169 must not start: ssd--ha01-vm--169--disk--0-dup \(duplicate-name\)' 169 pre-start
    hook_run "$hook 119 pre-start: a clean guest starts (exit 0, nothing printed)" 0 '' 119 pre-start
    hook_run "$hook 171 post-start: exit 0 (only pre-start refuses)" 0 '' 171 post-start
    check "the guard asked the stand-ins for nothing else" absent /tmp/guard/refused
    # The README's loop for every guest of the node: a guest with another hookscript keeps it and
    # is named, one with the guard already is left alone, a snapshot's hookscript is not the guest's.
    ln -s nodes/"$guard_node" "$root/etc/pve/local"
    local guests=$root/etc/pve/nodes/$guard_node
    echo 'hookscript: local:snippets/other-hook' >>"$guests/qemu-server/113.conf"
    echo 'hookscript: local:snippets/pve-dm-guard' >>"$guests/qemu-server/119.conf"
    printf '\n[before-upgrade]\nhookscript: local:snippets/old-hook\n' >>"$guests/qemu-server/170.conf"
    mkdir "$guests/lxc"
    printf 'arch: amd64\nhostname: ct300\nrootfs: local-lvm:vm-300-disk-0,size=8G\n' >"$guests/lxc/300.conf"
    readme_loop >"$root/tmp/guard/loop.sh"
    check "the README has the loop for every guest ($(wc -l <"$root/tmp/guard/loop.sh") lines)" \
        grep -q 'hookscript' "$root/tmp/guard/loop.sh"
    expect "the README's loop names the guest that keeps another hookscript" 0 \
        '113.*local:snippets/other-hook' as_hook sh -eu /tmp/guard/loop.sh
    check "and sets the guard on the others, VMs with qm, containers with pct" diff -u - "$root/tmp/guard/calls" <<CALLS
qm set 169 --hookscript local:snippets/pve-dm-guard
qm set 170 --hookscript local:snippets/pve-dm-guard
qm set 171 --hookscript local:snippets/pve-dm-guard
pct set 300 --hookscript local:snippets/pve-dm-guard
CALLS
    rm -rf "$root/etc/pve" "$root/tmp/guard"
}

units() {
    phase "systemd units"
    # Offline, as in an image build: systemd-analyze loads the units with a manager of its own (no
    # PID 1 needed), checks ExecStart's program and the man page of Documentation=.
    check "systemd-analyze verify pve-dm.service pve-dm.timer" sh -c "
        chroot '$root' systemd-analyze verify /usr/lib/systemd/system/pve-dm.service \
            /usr/lib/systemd/system/pve-dm.timer 2>&1 | tee /dev/stderr | grep -v '^$' | (! grep .)"
    expect "the timer is not enabled" 1 '^disabled$' in_root systemctl is-enabled pve-dm.timer
    check "no link enables it" absent /etc/systemd/system/timers.target.wants/pve-dm.timer
    expect "/etc/pve-dm/pve-dm.conf is 0600 root:root" 0 '^600 root:root$' mode_of /etc/pve-dm/pve-dm.conf
    expect "/etc/pve-dm/plugins is 0755 root:root" 0 '^755 root:root$' mode_of /etc/pve-dm/plugins
    expect "/var/lib/pve-dm/reports is root's" 0 '^755 root:root$' mode_of /var/lib/pve-dm/reports
}

# What the administrator made: an edited configuration, a plugin, the journal, an enabled timer.
administrator() {
    phase "the administrator's files"
    printf '# edited by the deb tier\nPVE_DM_HTTP_TIMEOUT_MS=5000\n' >>"$root/etc/pve-dm/pve-dm.conf"
    cat >"$root/etc/pve-dm/plugins/50-tier.mjs" <<'PLUGIN'
export default { name: 'tier', stages: { grade(classification, next) { return next(classification); } } };
PLUGIN
    chmod 644 "$root/etc/pve-dm/plugins/50-tier.mjs"
    echo '{"tier":"a journal line"}' >"$root/var/lib/pve-dm/journal.jsonl"
    expect "pve-dm plugins: the administrator's, from /etc/pve-dm/plugins" 0 'tier' in_root pve-dm plugins
    check "systemctl enable pve-dm.timer (offline)" in_root systemctl enable pve-dm.timer
    (cd "$root" && sha256sum etc/pve-dm/pve-dm.conf etc/pve-dm/plugins/50-tier.mjs var/lib/pve-dm/journal.jsonl) \
        >"$work/kept.sha256"
}
kept() {
    check "$1: the edited configuration, the plugin and the journal are kept" \
        sh -c "cd '$root' && sha256sum --quiet -c '$work/kept.sha256'"
    check "$1: no .dpkg-new, .dpkg-dist or .dpkg-old beside them" \
        sh -c "! find '$root/etc/pve-dm' -name '*.dpkg-*' | grep ."
}

reinstall_upgrade_remove() {
    phase "reinstall"
    check "apt-get install --reinstall ./pve-dm_${version}_all.deb" \
        in_root apt-get install -y --reinstall "/tmp/debs/pve-dm_${version}_all.deb"
    kept "reinstall"
    expect "reinstall: the configuration is still 0600" 0 '^600 root:root$' mode_of /etc/pve-dm/pve-dm.conf
    phase "upgrade"
    check "apt-get install ./pve-dm_${upgrade_version}_all.deb (an upgrade)" \
        in_root apt-get install -y "/tmp/debs/pve-dm_${upgrade_version}_all.deb"
    expect "pve-dm ${upgrade_version} is installed" 0 "^${upgrade_version//+/\\+}\$" \
        in_root dpkg-query -W -f='${Version}\n' pve-dm
    kept "upgrade"
    expect "upgrade: the hookscript is the new package's, 0755 root:root" 0 '^755 root:root$' mode_of "$hook"
    expect "upgrade: the timer the administrator enabled stays enabled" 0 '^enabled$' \
        in_root systemctl is-enabled pve-dm.timer
    expect "upgrade: pve-dm still runs the sample" 2 'Grade F' \
        in_root pve-dm --root /usr/share/doc/pve-dm/samples/multi-pool --report-only --no-color
    phase "remove"
    check "apt-get remove pve-dm" in_root apt-get remove -y pve-dm
    check "remove: /usr/sbin/pve-dm, /usr/lib/pve-dm and the hookscript are gone" sh -c "
        [ ! -e '$root/usr/sbin/pve-dm' ] && [ ! -e '$root/usr/lib/pve-dm' ] && [ ! -e '$root$hook' ]"
    kept "remove"
    expect "remove: dpkg keeps pve-dm's configuration files" 0 '^deinstall ok config-files$' \
        in_root dpkg-query -W -f='${Status}\n' pve-dm
}

purge() {
    phase "purge"
    check "apt-get purge pve-dm" in_root apt-get purge -y pve-dm
    expect "purge: dpkg no longer knows pve-dm" 1 'no packages found' in_root dpkg-query -W pve-dm
    local place
    for place in /etc/pve-dm /var/lib/pve-dm /usr/lib/pve-dm /usr/sbin/pve-dm /usr/share/doc/pve-dm \
        /usr/lib/systemd/system/pve-dm.service /usr/lib/systemd/system/pve-dm.timer \
        /etc/systemd/system/timers.target.wants/pve-dm.timer \
        /var/lib/systemd/deb-systemd-helper-enabled/pve-dm.timer.dsh-also "$hook" /var/lib/vz; do
        check "purge: $place is gone" absent "$place"
    done
    file_list >"$work/after.txt"
    owned_files >"$work/owned.txt"
    # What is new since before the installation and belongs to no package: what a dependency's
    # scripts made (shown), and anything of pve-dm's (a failure).
    comm -13 "$work/before.txt" "$work/after.txt" | awk -F' -> ' 'NR == FNR { owned[$0] = 1; next } !($1 in owned)' \
        "$work/owned.txt" - >"$work/left.txt"
    comm -23 "$work/before.txt" "$work/after.txt" >"$work/gone.txt"
    echo "# left by the dependencies' scripts (no package owns them; not pve-dm's): $(grep -vc pve-dm "$work/left.txt")"
    grep -v -e pve-dm -e '^/etc/ssl/certs/' "$work/left.txt" | sed 's/^/#   /' || true
    check "purge leaves nothing of pve-dm (files that no package owns, compared with before the installation)" \
        sh -c "! grep pve-dm '$work/left.txt'"
    check "and removed nothing that was there before" sh -c "! grep . '$work/gone.txt'"
}

host_tools || not_ok "apt-get install debootstrap lintian"
if build; then
    lint
    if setup_root; then
        ok "a clean Debian 12 root ($(cat "$root/etc/debian_version"))"
        install_and_run
        guard_hookscript
        units
        administrator
        reinstall_upgrade_remove
        purge
    else
        not_ok "a clean Debian 12 root (debootstrap bookworm)"
    fi
fi
phase "done"
summary
[ "$failed" = 0 ]
