#!/bin/bash
# node18-test.sh - pve-dm under Debian 12's own Node.js (npm run test:node18).
#
# Proxmox VE 8 runs on Debian 12, whose `apt install nodejs` gives Node.js 18.20 (Debian's build,
# not a third-party repository's). This tier fetches that exact package and what it loads
# (apt-get download, dpkg -x into a temporary folder: the system's node stays as it is) and runs,
# in a private mount namespace (unshare) where Debian's /usr/share/nodejs built-ins are bound in:
#   1. the whole unit suite (test/run.mjs: the bundle, the notifiers over undici, cleanup against
#      a model node, cluster runs over a real sshd, the interactive cleanup);
#   2. a live run: pve-dm without --root, its dmsetup, lvs and pveversion stand-ins on PATH
#      printing the multi-pool sample, that sample's /etc/pve bound over /etc/pve and its node
#      name as the hostname (a UTS namespace); under tsx and as the bundle, then a --yes --dry-run
#      cleanup whose locks go to a private /run/lock;
#   3. an old Node (a stand-in that says 16.20.2): one line, exit 3.
# Needs root, apt-get and the network to Debian's repository. Ends with "N passed, N failed".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "node18-test: needs root (unshare, mount)" >&2; exit 2; }
[ -d "$root/node_modules/tsx" ] || { echo "node18-test: run npm ci first" >&2; exit 2; }
t0=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/pve-dm-node18.XXXX")
made=()
cleanup() {
    for dir in "${made[@]}"; do rmdir "$dir" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# ── Debian 12's nodejs and what it loads, unpacked ───────────────────────────────────────────
[ -n "$(find /var/lib/apt/lists -name '*debian*Packages*' -print -quit 2>/dev/null)" ] || apt-get update -qq
version=$(apt-cache madison nodejs | awk -F'|' '$3 ~ /debian\.org\/debian bookworm/ { gsub(/ /, "", $2); print $2; exit }')
[ -n "$version" ] || { echo "node18-test: no nodejs in Debian's bookworm repository (apt-cache madison nodejs)" >&2; exit 2; }
libnode=$(apt-cache depends "nodejs=$version" | grep -o 'libnode[0-9]*' | head -1)
(cd "$work" && apt-get download -qq "nodejs=$version" "$libnode" node-acorn node-cjs-module-lexer node-undici \
    node-busboy node-xtend libuv1 libc-ares2 libbrotli1 libicu72 libnghttp2-14 libssl3 2>/dev/null)
for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/root"; done
node="$work/root/usr/bin/node"
export LD_LIBRARY_PATH="$work/root/usr/lib/x86_64-linux-gnu"
# Mount points bound over in the namespace only; made here when missing, removed at the end.
for dir in /usr/share/nodejs /etc/pve; do
    if [ ! -d "$dir" ]; then mkdir -p "$dir"; made+=("$dir"); fi
done
t1=$(date +%s)

passed=0
failed=0
check() { # check NAME COMMAND...: one line, ok or not ok
    local name=$1
    shift
    if "$@"; then echo "ok - $name"; passed=$((passed + 1)); else echo "not ok - $name"; failed=$((failed + 1)); fi
}
# Runs a command with Debian's node first on PATH, its /usr/share/nodejs bound in.
debian_node() {
    unshare -m -- bash -c 'mount --make-rprivate / && mount --bind "$0/usr/share/nodejs" /usr/share/nodejs && exec "$@"' \
        "$work/root" env PATH="$work/root/usr/bin:$PATH" "$@"
}

got=$(debian_node node --version)
echo "Debian's nodejs $version: node $got ($node)"
check "Debian 12's node is 18.19 or newer and older than 19 ($got)" bash -c '[[ $0 =~ ^v18\.(19|[2-9][0-9])\. ]]' "$got"

# ── 1. the unit suite ───────────────────────────────────────────────────────────────────────
log="$work/unit.log"
(cd "$root" && debian_node node test/run.mjs) | tee "$log" || true
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1 || true)
if [ -n "$summary" ]; then
    read -r unit_passed _ unit_failed _ <<< "$summary"
    passed=$((passed + unit_passed))
    failed=$((failed + unit_failed))
else
    echo "not ok - the unit suite printed no totals"
    failed=$((failed + 1))
fi
t2=$(date +%s)

# ── 2. a live run against stand-in commands ─────────────────────────────────────────────────
sample="$root/samples/multi-pool"
stubs="$work/stubs"
mkdir -p "$stubs" "$work/dist"
# The stand-ins print what the sample recorded; the arguments are pve-dm's own (DM_INFO_ARGS...).
cat > "$stubs/dmsetup" <<STUB
#!/bin/sh
case " \$* " in
    *" info "*) exec cat "$sample/dmsetup.txt" ;;
    *" table "*) exec cat "$sample/dmsetup-table.txt" ;;
esac
echo "dmsetup stand-in: \$*: not a command a report-only or dry run may give" >&2
exit 1
STUB
# lvs --segments and pvs: what the sample recorded, or nothing (an older capture: tables not checked).
cat > "$stubs/lvs" <<STUB
#!/bin/sh
case " \$* " in
    *" --segments "*) [ ! -f "$sample/lvs-segments.txt" ] || exec cat "$sample/lvs-segments.txt"; exit 0 ;;
esac
exec cat "$sample/lvs.txt"
STUB
printf '#!/bin/sh\n[ ! -f "%s/pvs.txt" ] || exec cat "%s/pvs.txt"\n' "$sample" "$sample" > "$stubs/pvs"
printf '#!/bin/sh\necho "pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-9-pve)"\n' > "$stubs/pveversion"
chmod 755 "$stubs"/*
(cd "$root" && debian_node node --import tsx test/tools/build.ts "$work/dist")
node_name=$(cat "$sample/hostname")
# A node of its own: the sample's /etc/pve, its name, stand-ins first on PATH, locks in a private /run/lock.
live() {
    unshare -m -u -- bash -c 'mount --make-rprivate / && mount --bind "$0/usr/share/nodejs" /usr/share/nodejs &&
        mount --bind "$1/etc/pve" /etc/pve && mount -t tmpfs tmpfs /run/lock && hostname "$2" && shift 2 && exec "$@"' \
        "$work/root" "$sample" "$node_name" env PATH="$stubs:$work/root/usr/bin:$PATH" "$@"
}
same_verdicts() { # the live JSON's entries, as the sample's expected.json has them
    node -e '
        const [live, expected] = [JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")), require(process.argv[2])];
        const got = Object.fromEntries(live.entries.map((e) => [e.name, { status: e.status, reason: e.reason }]));
        const ok = live.node === expected.node && live.grade === expected.grade &&
            JSON.stringify(got) === JSON.stringify(Object.fromEntries(Object.keys(got).map((n) => [n, expected.entries[n]])));
        if (!ok) console.error(JSON.stringify({ node: live.node, grade: live.grade, got }, null, 1));
        process.exit(ok ? 0 : 1);' "$1" "$sample/expected.json"
}
set +e
live node --import tsx "$root/pve-dm.ts" --report-only --json > "$work/live.json" 2> "$work/live.err"
code=$?
live node "$work/dist/pve-dm.mjs" --report-only --json > "$work/bundle.json" 2> "$work/bundle.err"
bundle_code=$?
live node "$work/dist/pve-dm.mjs" --yes --dry-run --journal "$work/journal.jsonl" --html "$work/r.html" \
    > "$work/dry.out" 2> "$work/dry.err"
dry_code=$?
set -e
live_ok() { [ "$1" = 2 ] && same_verdicts "$2"; }
check "live run under tsx: exit 2, the sample's verdicts from the stand-ins $(head -c 300 "$work/live.err")" \
    live_ok "$code" "$work/live.json"
check "live run of the bundle: exit 2, the same verdicts $(head -c 300 "$work/bundle.err")" \
    live_ok "$bundle_code" "$work/bundle.json"
check "dry-run cleanup: exit 2, no change run, nothing journalled" \
    bash -c '[ "$0" = 2 ] && grep -q "Cleanup, dry run (nothing was changed):" "$1" && [ ! -s "$2" ]' \
    "$dry_code" "$work/dry.out" "$work/journal.jsonl"
check "dry-run cleanup: the stand-ins were asked nothing that changes the system" \
    bash -c '! grep -q "not a command a report-only or dry run may give" "$0"' "$work/dry.err"

# ── 3. an older Node gets one line ──────────────────────────────────────────────────────────
old="$work/old-node.mjs"
echo "Object.defineProperty(process, 'versions', { value: { ...process.versions, node: '16.20.2' } });" > "$old"
set +e
too_old=$(debian_node node --import "$old" "$work/dist/pve-dm.mjs" --version 2>&1)
too_old_code=$?
set -e
check "a Node older than 18.19: exit 3 and one line ($too_old)" \
    bash -c '[ "$0" = 3 ] && [ "$1" = "pve-dm: needs Node.js 18.19 or newer; this is 16.20.2 (apt install nodejs)" ]' \
    "$too_old_code" "$too_old"

t3=$(date +%s)
echo
echo "node18-test: download $((t1 - t0)) s, unit suite $((t2 - t1)) s, live runs $((t3 - t2)) s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
