#!/usr/bin/env bash
# fresh-machine.sh: the README's two commands on a fresh Debian 12 where only Node.js and npm are installed
# (Debian's own: Node 18.20 and npm 9, the Proxmox VE 8 case). As root. A debootstrap root in a chroot gets
# `apt-get install --no-install-recommends nodejs npm` and a clean clone of the committed HEAD (no
# node_modules); there, as root with a minimal environment, it runs
#   1. npm ci && npx tsx pve-dm.ts --root samples/multi-pool --report-only   (Grade F, exit 2)
#   2. npm test                                                               (closing line: 0 failed)
# Every check prints `ok - ...` or `not ok - ...`; the last line is `N passed, N failed`.
# The base root is test/deb/deb-test.sh's cached tarball when there (debootstrap + man-db), else a plain
# debootstrap cached beside it as bookworm-plain.tar (never over deb-test's, which needs man-db).
# PVE_DM_TEST_KEEP=1 keeps the work folder (the root, the logs).
# The scripts passed to the chroot are meant for its shell, not this one:
# shellcheck disable=SC2016
set -euo pipefail
script=$(readlink -f "$0")
project=$(cd "$(dirname "$script")/../.." && pwd)
passed=0 failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
summary() { echo "$passed passed, $failed failed"; [ "$failed" = 0 ]; }
if [ "$(id -u)" != 0 ]; then not_ok "runs as root (debootstrap, chroot, mounts)"; summary; exit 1; fi
# A mount namespace of its own: whatever happens, the chroot's mounts die with it (the trap unmounts too).
if [ -z "${PVE_DM_FRESH_NAMESPACE:-}" ]; then
    export PVE_DM_FRESH_NAMESPACE=1
    exec unshare --mount --propagation private -- bash "$script" "$@"
fi

work=$(mktemp -d /var/tmp/pve-dm-fresh.XXXXXX)
root=$work/root
cleanup() {
    local target
    # Deepest first; -l so that a process left behind in the chroot cannot keep a mount alive.
    findmnt -rn -o TARGET | grep -F "$root/" | sort -r | while read -r target; do umount -l "$target" || true; done
    if findmnt -rn -o TARGET | grep -qF "$root/" || [ -n "${PVE_DM_TEST_KEEP:-}" ]; then echo "# kept $work" >&2
    else rm -rf "$work"; fi
}
trap cleanup EXIT
ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { local d=$(($(ms) - $1)); printf '%d.%d s' $((d / 1000)) $((d % 1000 / 100)); }
show() { sed 's/^/    | /' "$1" | tail -n "${2:-30}"; }
# A root shell on the fresh machine: nothing of this shell's environment (PATH, npm_config_*, NODE_*) goes in.
in_root() {
    chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@" </dev/null
}

# ─── A clean Debian 12 ───────────────────────────────────────────────────────────────────────────────────
cache=${PVE_DM_TEST_CACHE:-${XDG_CACHE_HOME:-/var/cache}/pve-dm-test}
t=$(ms)
mkdir -p "$root"
if [ -s "$cache/bookworm.tar" ]; then base=$cache/bookworm.tar; else base=$cache/bookworm-plain.tar; fi
if [ ! -s "$base" ]; then
    echo "# debootstrap bookworm (no cached root in $cache)"
    mkdir -p "$cache"
    command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    debootstrap bookworm "$work/base" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
        { show "$work/debootstrap.log"; not_ok "debootstrap bookworm"; summary; exit 1; }
    rm -f "$work"/base/var/cache/apt/archives/*.deb
    tar -C "$work/base" --numeric-owner -cpf "$base.tmp" . && mv "$base.tmp" "$base" && rm -rf "$work/base"
fi
tar -C "$root" --numeric-owner -xpf "$base"
# /proc, /sys, /dev and /dev/pts from the host (bound, not recursive: /dev/shm is not brought along).
for fs in proc sys dev dev/pts; do mount --bind "/$fs" "$root/$fs"; done
# Written as new files: through a link left in the root, a write would land on the host.
rm -f "$root/etc/resolv.conf" "$root/usr/sbin/policy-rc.d"
cat /etc/resolv.conf >"$root/etc/resolv.conf"
# No package may start a service, in the chroot or (through a shared /run or socket) on the host.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 755 "$root/usr/sbin/policy-rc.d"
ok "a clean Debian $(cat "$root/etc/debian_version") root from $(basename "$base") in $(secs "$t")"
# Not the project's need but this machine's: where its network intercepts TLS, the CAs its administrator
# added (/usr/local/share/ca-certificates) go into the root too, as they would on any machine there;
# ca-certificates' postinst (npm pulls it) or update-ca-certificates below takes them in.
cas=$(find /usr/local/share/ca-certificates -name '*.crt' 2>/dev/null | sort)
if [ -n "$cas" ]; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    for ca in $cas; do cp "$ca" "$root/usr/local/share/ca-certificates/"; done
    echo "# this machine's CAs copied into the root's trust store: $(echo "$cas" | xargs -n1 basename | xargs)"
fi

# ─── Only Node.js and npm: Debian's, with what their Depends pull ────────────────────────────────────────
t=$(ms)
in_root dpkg-query -W -f='${Package}\n' | sort >"$work/before.txt"
if in_root env DEBIAN_FRONTEND=noninteractive sh -c \
    'apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm' >"$work/apt.log" 2>&1; then
    ok "apt-get install --no-install-recommends nodejs npm in $(secs "$t")"
else not_ok "apt-get install --no-install-recommends nodejs npm"; show "$work/apt.log"; fi
in_root dpkg-query -W -f='${Package}\n' | sort | comm -13 "$work/before.txt" - >"$work/pulled.txt"
echo "# apt pulled in $(wc -l <"$work/pulled.txt") packages with nodejs and npm:"
grep -v '^node-' "$work/pulled.txt" | tr '\n' ' ' | fold -s -w 110 | sed 's/^/#   /'; echo
echo "#   and $(grep -c '^node-' "$work/pulled.txt") node-* packages (Debian's split npm)"
[ -z "$cas" ] || in_root update-ca-certificates >/dev/null 2>&1 || not_ok "update-ca-certificates in the root"
for tool in git ssh sshd python3 gcc make; do
    if in_root sh -c "command -v $tool" >/dev/null; then echo "#   $tool came in too (a Depends)"; fi
done
# The chroot's node is Debian's, not the host's Node $(node -v 2>/dev/null) leaking in through PATH or a mount.
node_path=$(in_root sh -c 'command -v node' || true)
node_version=$(in_root node --version 2>&1 || true)
npm_version=$(in_root npm --version 2>&1 || true)
owner=$(in_root dpkg-query -S "${node_path:-/usr/bin/node}" 2>/dev/null | cut -d: -f1 || true)
if [ "$node_path" = /usr/bin/node ] && [ "$owner" = nodejs ] && [[ $node_version =~ ^v18\. ]]; then
    ok "node is Debian's: $node_path ($owner) $node_version, npm $npm_version"
else not_ok "node is Debian's (got '$node_path' of '$owner', $node_version, npm $npm_version)"; fi

# ─── The project: a clean clone of the committed HEAD ────────────────────────────────────────────────────
# --no-hardlinks: the chroot gets copies, nothing it does can reach the project's own objects.
if git clone -q --no-hardlinks "$project" "$root/root/pve-dm" && [ ! -e "$root/root/pve-dm/node_modules" ]; then
    ok "git clone of $(git -C "$root/root/pve-dm" log -1 --format=%h) into /root/pve-dm, no node_modules"
else not_ok "git clone $project"; fi
# What the tests lean on: tempdirs in /tmp, sshd's /run/sshd, and /dev/shm (looked at, not needed).
for dir in /tmp /run /dev/shm; do
    if in_root sh -c "f=\$(mktemp -p $dir) && rm \$f" 2>/dev/null; then
        ok "$dir is writable in the chroot ($(in_root stat -f -c %T "$dir"), mode $(in_root stat -c %a "$dir"))"
    else not_ok "$dir is writable in the chroot"; fi
done

# ─── 1. npm ci && npx tsx pve-dm.ts --root samples/multi-pool --report-only ──────────────────────────────
in_pve_dm() { in_root sh -c 'cd /root/pve-dm && exec "$@"' sh "$@"; }
t=$(ms) installed=0
if in_pve_dm npm ci >"$work/ci.log" 2>&1; then
    installed=1
    ok "npm ci in $(secs "$t"): $(grep -E '^added ' "$work/ci.log" | head -1)"
    grep -o 'EBADENGINE.*package:.*' "$work/ci.log" | sed 's/^/# npm ci warns: /' || true
    t=$(ms) status=0
    in_pve_dm npx tsx pve-dm.ts --root samples/multi-pool --report-only >"$work/main.log" 2>&1 || status=$?
    took=$(secs "$t")
    if [ "$status" = 2 ] && grep -q 'Grade F' "$work/main.log"; then
        ok "npx tsx pve-dm.ts --root samples/multi-pool --report-only: Grade F, exit 2, in $took"
        grep -m1 'Grade F' "$work/main.log" | sed 's/^/#   /'
    else
        not_ok "pve-dm on samples/multi-pool (exit $status in $took, expected 2 and Grade F)"
        show "$work/main.log"
    fi
else not_ok "npm ci (after $(secs "$t"))"; show "$work/ci.log"; fi

# ─── 2. npm test ─────────────────────────────────────────────────────────────────────────────────────────
# Without node_modules every file dies on importing tsx: a failure of npm ci's, already counted.
[ "$installed" = 1 ] || { not_ok "npm test: not run, npm ci failed"; summary; exit 1; }
t=$(ms) status=0
in_pve_dm npm test >"$work/test.log" 2>&1 || status=$?
took=$(secs "$t")
closing=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$work/test.log" | tail -1 || true)
grep -E '^test prerequisites|^[0-9]+ files in' "$work/test.log" | sed 's/^/# npm test: /' || true
if [ "$status" = 0 ] && [[ $closing =~ \ 0\ failed$ ]]; then
    ok "npm test in $took, exit 0: $closing"
else
    not_ok "npm test in $took (exit $status): ${closing:-no closing line}"
    # The runner prints each failing file with its output under it (`     | `).
    if grep -q '^FAIL ' "$work/test.log"; then
        awk '/^FAIL /{p = 1} /^(ok  |[0-9]+ files in)/{p = 0} p' "$work/test.log" | head -n 150
    else show "$work/test.log" 60; fi
fi
summary
