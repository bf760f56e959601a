#!/bin/bash
# Installs the Debian 12 packages that sheepfs's tests need (as root). `.ci/run` calls it; run it
# once on a new development machine too.
#
# Usage: scripts/install-deps.sh [--bench]
#   --bench  also installs what bench/fio.sh's options use (bindfs).
#
# qemu-utils 10 on these machines comes from bookworm-backports, so qemu-system-x86 comes from
# there too (the bookworm one would pull qemu-utils 7.2 back in); the suite is added to apt's
# sources if it is missing. linux-image-amd64 is the guest kernel of tests/guest/ (its /boot and
# /lib/modules are only read, never booted on the host). iproute2, util-linux (nsenter), nftables
# and iputils-ping serve the multi-host harness (tests/src/netns.rs: namespaces, bridges, cuts);
# gdb prints a hung daemon's stacks in a failing test's message.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

extra=()
for arg in "$@"; do
    case "$arg" in
        --bench) extra+=(bindfs) ;;
        *) echo "usage: $0 [--bench]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "$0: run as root" >&2; exit 1; }

if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # shellcheck source=/dev/null
    . /etc/os-release
    if [ "${VERSION_CODENAME:-}" = bookworm ]; then
        echo "adding bookworm-backports to apt's sources"
        cat >/etc/apt/sources.list.d/sheepfs-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
fi

t0=$(date +%s)
apt-get update -q
t1=$(date +%s)
apt-get install -y -q --no-install-recommends \
    fuse3 fio e2fsprogs xfsprogs dbench jq util-linux shellcheck \
    iproute2 nftables iputils-ping gdb \
    busybox-static cpio kmod xz-utils zstd gzip linux-image-amd64 "${extra[@]}"
t2=$(date +%s)
apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils
t3=$(date +%s)
echo "apt: update $((t1 - t0)) s, packages $((t2 - t1)) s, qemu $((t3 - t2)) s"
qemu-system-x86_64 --version | head -n 1
qemu-img --version | head -n 1
ls /boot/vmlinuz-*
