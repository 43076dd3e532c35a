#!/usr/bin/env bash
# Builds the bench guest kit for `oxvirt bench` (docs/bench.md): the test guest kit (scripts/guest-kit.sh)
# plus Debian's fio and sysbench and the shared libraries they load, copied from this host's packages
# together with the dynamic loader. The guest boots to the guest kit's root shell, where both are on PATH.
#
# Output (default target/bench-kit/, or $OXVIRT_BENCH_KIT_DIR):
#   vmlinuz         the guest kit's kernel
#   initramfs.img   the guest kit's initramfs followed by a newc cpio of fio, sysbench and their libraries
#   version         the kernel version string
# and with --nested, what the nested target's L1 guest boots (with vmlinuz):
#   l1-initramfs.img  the guest kit's initramfs followed by the nested lab's /lab (scripts/nested/lab.sh):
#                     scripts/nested/bench-l1.sh as /lab/run.sh, oxvirt-vmm ($OXVIRT_VMM, default the release
#                     build, built when missing), and vmlinuz and initramfs.img above as L2's kernel and initramfs
#
# Cached: rebuilt only when this script, the guest kit or the fio/sysbench packages change (and for
# l1-initramfs.img, the nested lab's scripts or the oxvirt-vmm binary).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${OXVIRT_BENCH_KIT_DIR:-$repo/target/bench-kit}
guest_kit=${OXVIRT_GUEST_KIT_DIR:-$repo/target/guest-kit}

log() { printf 'bench-kit: %s\n' "$*" >&2; }
# shellcheck source=scripts/nested/lab.sh
. "$repo/scripts/nested/lab.sh"

nested=0
case ${1:-} in
    "") ;;
    --nested) nested=1 ;;
    *) log "unknown option '$1' (known: --nested)"; exit 1 ;;
esac

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
stamp=$( { cat "$0" "$repo/scripts/nested/lab.sh" | sha256sum; cat "$guest_kit/stamp"; echo "$versions"; } | sha256sum | cut -d' ' -f1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] &&
    [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.img" ]; then
    :
else
    log "building with $(echo "$versions" | tr '\n' ' ')"
    root=$work/root
    mkdir -p "$root/bin"
    for tool in fio sysbench; do
        install_binary "$root" "$(command -v "$tool")" "bin/$tool"
    done
    # gzip'd: the nested target carries this file inside L1's initramfs.
    append_cpio "$guest_kit/initramfs.img" "$root" "$work/initramfs.img" gzip
    cp "$guest_kit/vmlinuz" "$out/vmlinuz"
    cp "$guest_kit/version" "$out/version"
    cp "$work/initramfs.img" "$out/initramfs.img.new"
    mv "$out/initramfs.img.new" "$out/initramfs.img"
    echo "$stamp" >"$out/stamp"
    rm -f "$out/l1-stamp"
    log "ready in $out"
fi
[ "$nested" = 1 ] || exit 0

vmm=${OXVIRT_VMM:-}
if [ -z "$vmm" ]; then
    vmm=${CARGO_TARGET_DIR:-$repo/target}/release/oxvirt-vmm
    if [ ! -x "$vmm" ]; then
        log "building oxvirt-vmm (release)"
        (cd "$repo" && cargo build --release -q -p oxvirt-vmm)
    fi
fi
[ -x "$vmm" ] || { log "no oxvirt-vmm at $vmm"; exit 1; }
l1_stamp=$( { echo "$stamp"; sha256sum <"$vmm"; if [ -x "$vmm-api" ]; then sha256sum <"$vmm-api"; fi; cat "$repo/scripts/nested/"*.sh; } | sha256sum | cut -d' ' -f1)
if [ -f "$out/l1-stamp" ] && [ "$(cat "$out/l1-stamp")" = "$l1_stamp" ] && [ -f "$out/l1-initramfs.img" ]; then
    exit 0
fi
log "building the nested target's L1 initramfs with $vmm"
lab_l1_root "$work/l1" "$repo/scripts/nested/bench-l1.sh" "$vmm" "$out/vmlinuz" "$out/initramfs.img"
append_cpio "$guest_kit/initramfs.img" "$work/l1" "$work/l1-initramfs.img"
mv "$work/l1-initramfs.img" "$out/l1-initramfs.img"
echo "$l1_stamp" >"$out/l1-stamp"
log "nested L1 ready in $out/l1-initramfs.img"
