#!/bin/sh
# /usr/sbin/pve-dm: runs pve-dm's bundle with the system's Node.js.
#
# The version is checked here, before node reads the bundle: an older node would stop on the
# first syntax or API it lacks, with a stack trace that names neither pve-dm nor versions.
# `node --version` is answered before node starts its engine (a few ms), and it is found on PATH
# as the exec below finds it, so the check is about the very node that runs pve-dm (and a test
# can put a stand-in first on PATH).
bundle=/usr/lib/pve-dm/pve-dm.mjs

found=$(node --version 2>/dev/null) || found=
# Its first line only: the message below is one line whatever a stranger `node` prints.
found=${found%%
*}
version=${found#v}
major=${version%%.*}
minor=${version#*.}
minor=${minor%%.*}
case "$found" in
    v[0-9]*.[0-9]*)
        # Digits only, so that the arithmetic below cannot be fed anything else.
        case "$major$minor" in
            *[!0-9]*) ;;
            *)
                if [ "$major" -gt 18 ] || { [ "$major" -eq 18 ] && [ "$minor" -ge 19 ]; }; then
                    exec node "$bundle" "$@"
                fi
                ;;
        esac
        ;;
esac
# One line, in pve-dm's own form for "could not run" (exit 3, the Nagios UNKNOWN state).
echo "pve-dm: needs Node.js 18.19 or newer (found ${found:-none}): apt install nodejs" >&2
exit 3
