#!/usr/bin/env bash
# Builds the bench guest kit for `oxvirt bench` (docs/bench.md): the test guest kit (scripts/guest-kit.sh)
# plus Debian's fio and sysbench and the shared libraries they load, copied from this host's packages
# together with the dynamic loader. The guest boots to the guest kit's root shell, where both are on PATH.
#
# Output (default target/bench-kit/, or $OXVIRT_BENCH_KIT_DIR):
#   vmlinuz         the guest kit's kernel
#   initramfs.img   the guest kit's initramfs followed by a newc cpio of fio, sysbench and their libraries
#   version         the kernel version string
#
# Cached: rebuilt only when this script, the guest kit or the fio/sysbench packages change.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${OXVIRT_BENCH_KIT_DIR:-$repo/target/bench-kit}
guest_kit=${OXVIRT_GUEST_KIT_DIR:-$repo/target/guest-kit}

log() { printf 'bench-kit: %s\n' "$*" >&2; }

OXVIRT_GUEST_KIT_DIR=$guest_kit bash "$repo/scripts/guest-kit.sh"

for tool in fio sysbench; do
    command -v "$tool" >/dev/null || {
        log "installing fio and sysbench"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio sysbench >/dev/null
        break
    }
done

mkdir -p "$out"
# Tests build the kit from parallel threads: one builds, the others wait and find it cached.
exec 9>"$out/.lock"
flock 9

versions=$(dpkg-query -W -f='${Package} ${Version}\n' fio sysbench)
# The script's content, not its path: the same kit whether run as scripts/bench-kit.sh or by absolute path.
stamp=$( { sha256sum <"$0"; cat "$guest_kit/stamp"; echo "$versions"; } | sha256sum | cut -d' ' -f1)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] &&
    [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.img" ]; then
    exit 0
fi

log "building with $(echo "$versions" | tr '\n' ' ')"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/bin"

# Each binary, stripped, and every library ldd names (the loader included) at its own path.
for tool in fio sysbench; do
    bin=$(command -v "$tool")
    cp "$bin" "$root/bin/$tool"
    strip "$root/bin/$tool" 2>/dev/null || true
    for lib in $(ldd "$bin" | awk '/=> \// { print $3 } /^\t\// { print $1 }'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
done

# The guest kit's initramfs, then ours: Linux unpacks concatenated archives in order; the next one must start
# at a 4-byte aligned offset (zero padding is skipped).
cp "$guest_kit/initramfs.img" "$work/initramfs.img"
size=$(stat -c %s "$work/initramfs.img")
head -c $(( (4 - size % 4) % 4 )) /dev/zero >>"$work/initramfs.img"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >>"$work/initramfs.img"

cp "$guest_kit/vmlinuz" "$out/vmlinuz"
cp "$guest_kit/version" "$out/version"
cp "$work/initramfs.img" "$out/initramfs.img.new"
mv "$out/initramfs.img.new" "$out/initramfs.img"
echo "$stamp" >"$out/stamp"
log "ready in $out"
