#!/bin/sh
# What `npm test` needs beyond Node and npm, installed when missing (test/run.mjs runs this first):
# the cluster test speaks real SSH, between the real OpenSSH client pve-dm uses and a real sshd
# the test starts on 127.0.0.x. Debian's packages, with services kept from starting
# (policy-rc.d), as in a container build. Anything else is left alone.
set -eu
missing=
for file in /usr/sbin/sshd /usr/bin/ssh /usr/bin/ssh-keygen; do [ -x "$file" ] || missing=yes; done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "test prerequisites: OpenSSH is missing and cannot be installed here (needs root and apt-get):" \
        "install openssh-server and openssh-client" >&2
    exit 1
fi
echo "test prerequisites: installing openssh-server and openssh-client (apt-get)"
made_guard=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_guard=1
fi
trap '[ "$made_guard" = 0 ] || rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
