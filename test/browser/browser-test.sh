#!/bin/bash
# browser-test.sh - the HTML reports in a real browser (npm run test:browser; issue 18).
#
# Renders the report of every sample and of the clusters (samples/cluster-migrated* as three
# --root, samples/cluster-stale* as two) and opens each from file:// in Debian's headless
# Chromium (/usr/bin/chromium), driven by playwright-core, which never downloads a browser of its
# own (test/browser/report.browser.ts). At 1280 and 400 px wide: a full-page screenshot into
# test/browser/screenshots/ (CI keeps them as artefacts), no element past the right edge and no
# sideways scroll, the headline, the grade and every remedy visible and whole, names and remedies
# wrapped only at a space, axe-core with no serious or critical violation; and no request but for
# the report's own file (each other one is blocked and counted).
# Installs what is missing with apt-get (root): chromium, and fonts-liberation, whose Liberation
# Sans has Arial's metrics, so that widths measured here are the widths of the report's
# Arial,Helvetica,sans-serif (Debian's chromium depends on no font). Ends with "N passed, N failed".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
for module in tsx uvu playwright-core axe-core; do
    [ -d "$root/node_modules/$module" ] || { echo "browser-test: no node_modules/$module: run npm ci" >&2; exit 2; }
done
t0=$(date +%s)

# ── Debian's Chromium and a font with Arial's metrics, installed when missing ──────────────────
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -e /usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf ] || missing+=(fonts-liberation)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "browser-test: ${missing[*]} missing and cannot be installed here (needs root and apt-get)" >&2
        exit 2
    fi
    echo "browser-test: installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
t1=$(date +%s)

# ── the tests, and their totals as test/run.mjs counts them ────────────────────────────────────
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# Each test has its own time limit (test/harness.ts); this one is for a browser that hangs the file.
(cd "$root" && NO_COLOR=1 FORCE_COLOR=0 timeout --kill-after=10 600 node --import tsx test/browser/report.browser.ts) \
    2>&1 | tee "$log"
code=${PIPESTATUS[0]}
set -e
number() { sed -n -E "s/^ *$1: +([0-9]+).*/\1/p" "$log" | tail -1; }
total=$(number Total)
passed=$(number Passed)
skipped=$(number Skipped)
failed=$((${total:-0} - ${passed:-0} - ${skipped:-0}))
# Like run.mjs: no totals (died on import), no test run, a skipped test or a non-zero exit is a failure.
if [ -z "$total" ] || [ "$total" = 0 ] || [ "${skipped:-0}" != 0 ] || [ "$code" != 0 ]; then
    [ "$failed" -gt 0 ] || failed=1
fi
t2=$(date +%s)
echo
echo "browser-test: install $((t1 - t0)) s, tests $((t2 - t1)) s; screenshots in test/browser/screenshots/"
echo "${passed:-0} passed, $failed failed"
[ "$failed" = 0 ]
