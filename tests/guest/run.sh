#!/bin/bash
# Boots the sheepfs test guest once against a raw disk image, by hand.
#
# Usage: tests/guest/run.sh DISK MODE SEED [CACHE]
#   DISK   a raw image of at least 128 MiB (a file in a sheepfs mount, or a plain local file)
#   MODE   write | verify (see tests/guest/init)
#   CACHE  QEMU -drive cache= mode: none (default), writeback, writethrough, directsync
# Builds the kernel + initramfs into $SHEEP_GUEST_DIR (default: a temp dir), boots it under TCG
# with a 300 s limit and exits 0 only if the guest printed SHEEPTEST-OK.
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,9p' "$0" >&2
    exit 2
fi
disk=$1 mode=$2 seed=$3 cache=${4:-none}
here=$(cd "$(dirname "$0")" && pwd)
dir=${SHEEP_GUEST_DIR:-}
if [ -z "$dir" ]; then
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
fi
[ -f "$dir/initramfs.cpio.gz" ] || "$here/build-initramfs.sh" "$dir" >&2
log=$dir/console.log
start=$(date +%s)
set +e
timeout -k 5 300 qemu-system-x86_64 -accel tcg -machine q35 -m 256 -nographic -no-reboot \
    -nic none -kernel "$dir/vmlinuz" -initrd "$dir/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 no_timer_check loglevel=3 sheeptest=$mode:$seed" \
    -drive "file=$disk,format=raw,if=virtio,cache=$cache" </dev/null >"$log" 2>&1
rc=$?
set -e
echo "qemu exit $rc after $(($(date +%s) - start)) s" >&2
grep -a SHEEPTEST "$log" || { tail -n 30 "$log" >&2; exit 1; }
grep -aq SHEEPTEST-OK "$log"
