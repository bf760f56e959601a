#!/bin/bash
# Builds the kernel + initramfs of the sheepfs QEMU guest test.
#
# Usage: tests/guest/build-initramfs.sh OUT_DIR
#
# Writes OUT_DIR/vmlinuz (a copy of the newest installed Debian kernel, package
# linux-image-amd64) and OUT_DIR/initramfs.cpio.gz: busybox-static, the virtio-blk modules of
# that kernel (with their modules.dep dependencies, decompressed) and tests/guest/init, which
# runs the command given by `sheeptest=MODE:SEED[:REGIONS]` on the kernel command line against
# /dev/vda and prints `SHEEPTEST-OK <md5>` or `SHEEPTEST-FAIL <reason>` on the console.
# See tests/guest/README.md and tests/tests/guest.rs.
#
# Env: SHEEP_GUEST_KVER picks a kernel version (default: the newest /boot/vmlinuz-* that has
# /lib/modules/VERSION). Needs: busybox-static, cpio, gzip, xz-utils/zstd for compressed modules.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi
out=$1
here=$(cd "$(dirname "$0")" && pwd)

pick_kernel() {
    if [ -n "${SHEEP_GUEST_KVER:-}" ]; then
        echo "$SHEEP_GUEST_KVER"
        return
    fi
    local k ver best=""
    for k in /boot/vmlinuz-*; do
        [ -e "$k" ] || continue
        ver=${k#/boot/vmlinuz-}
        [ -f "/lib/modules/$ver/modules.dep" ] && best="$best$ver"$'\n'
    done
    printf '%s' "$best" | sort -V | tail -n 1
}

kver=$(pick_kernel)
if [ -z "$kver" ] || [ ! -f "/boot/vmlinuz-$kver" ]; then
    echo "$0: no kernel in /boot with modules in /lib/modules;" \
        "install one: apt-get install -y linux-image-amd64" >&2
    exit 1
fi
busybox=/bin/busybox
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    echo "$0: $busybox missing or not static: apt-get install -y busybox-static" >&2
    exit 1
fi
command -v cpio >/dev/null || { echo "$0: cpio not found: apt-get install -y cpio" >&2; exit 1; }

moddir=/lib/modules/$kver
mkdir -p "$out"
root=$(mktemp -d "${TMPDIR:-/tmp}/sheep-initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp "$here/init" "$root/init"
chmod 0755 "$root/init" "$root/bin/busybox"
# The kernel opens /dev/console before running /init; init re-opens it after devtmpfs anyway.
mknod -m 0600 "$root/dev/console" c 5 1 2>/dev/null || true

# Copies one module, decompressed (busybox insmod does not read .ko.xz / .ko.zst everywhere).
copy_module() {
    local rel=$1 name dst
    name=$(basename "$rel")
    dst="$root/lib/modules/${name%%.ko*}.ko"
    case "$rel" in
        *.ko) cp "$moddir/$rel" "$dst" ;;
        *.ko.xz) xz -dc "$moddir/$rel" >"$dst" ;;
        *.ko.zst) zstd -qdc "$moddir/$rel" >"$dst" ;;
        *.ko.gz) gzip -dc "$moddir/$rel" >"$dst" ;;
        *) echo "$0: unknown module format: $rel" >&2; exit 1 ;;
    esac
    echo "${name%%.ko*}.ko" >>"$root/modules.order"
}

# Appends MODULE and its dependencies (modules.dep lists the full closure; the last entry must
# load first) to modules.order, each once. Built-in modules (modules.builtin) are skipped.
: >"$root/modules.order"
add_module() {
    local want=$1 line rel deps d i
    line=$(grep -E "/${want}\.ko(\.[a-z]+)?:" "$moddir/modules.dep" || true)
    if [ -z "$line" ]; then
        if grep -qE "/${want}\.ko$" "$moddir/modules.builtin" 2>/dev/null; then
            return
        fi
        echo "$0: module $want not found for kernel $kver" >&2
        exit 1
    fi
    rel=${line%%:*}
    read -r -a deps <<<"${line#*:}"
    for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
        d=${deps[$i]}
        grep -qx "$(basename "${d%%.ko*}").ko" "$root/modules.order" || copy_module "$d"
    done
    grep -qx "$want.ko" "$root/modules.order" || copy_module "$rel"
}
# virtio_pci finds the device on the pc/q35 PCI bus, virtio_blk makes /dev/vda.
for m in virtio_pci virtio_blk; do
    add_module "$m"
done

cp "/boot/vmlinuz-$kver" "$out/vmlinuz"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --quiet -o -0 -H newc -R 0:0) \
    | gzip -1 >"$out/initramfs.cpio.gz"
echo "kernel $kver: $out/vmlinuz $out/initramfs.cpio.gz" \
    "(modules: $(tr '\n' ' ' <"$root/modules.order"))"
