# The nested lab's L1 initramfs, assembled (sourced, not run): by scripts/bench-kit.sh for `oxvirt bench`'s
# nested target and by the benchmark scripts (benches/lib.sh). L1 boots the guest kit (scripts/guest-kit.sh),
# whose init runs /lab/run.sh when the initramfs has one; these functions add /lab to it. The caller runs
# with `set -euo pipefail`.

# install_binary ROOT BINARY DEST: copies BINARY (stripped: debug info only makes the initramfs bigger and
# slower to unpack) to ROOT/DEST and the shared libraries ldd lists, the dynamic loader included, at their
# own paths.
install_binary() {
    local root=$1 bin=$2 dest=$1/$3 lib
    mkdir -p "$(dirname "$dest")"
    cp "$bin" "$dest"
    strip "$dest" 2> /dev/null || true
    for lib in $(ldd "$bin" | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^\s*\(\/[^ ]*\) (.*/\1/p'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}

# append_cpio BASE DIR OUT [gzip]: OUT = BASE followed by a newc cpio of DIR, gzip'd with the fourth argument
# (Linux unpacks concatenated archives in order; the next archive must start 4-byte aligned, zero padding
# is skipped).
append_cpio() {
    local pad
    cp "$1" "$3.new"
    pad=$(((4 - $(stat -c %s "$3.new") % 4) % 4))
    head -c "$pad" /dev/zero >> "$3.new"
    if [ "${4:-}" = gzip ]; then
        (cd "$2" && find . | cpio -o -H newc --quiet | gzip -1) >> "$3.new"
    else
        (cd "$2" && find . | cpio -o -H newc --quiet) >> "$3.new"
    fi
    mv "$3.new" "$3"
}

# lab_l1_root ROOT L1_SCRIPT VMM L2_KERNEL L2_INITRAMFS: the files every lab's L1 holds: L1_SCRIPT as
# /lab/run.sh and what it sources, scripts/nested/l1-common.sh, as /lab/common.sh; the VMM binary as
# /lab/bin/oxvirt-vmm, and its control client oxvirt-vmm-api (built beside it by `cargo build -p oxvirt-vmm`)
# when it is there, for the L1 scripts' diagnostics; L2's kernel and initramfs in /lab/l2.
lab_l1_root() {
    local here
    here=$(dirname "${BASH_SOURCE[0]}")
    mkdir -p "$1/lab/l2"
    install -m 755 "$2" "$1/lab/run.sh"
    install -m 644 "$here/l1-common.sh" "$1/lab/common.sh"
    install_binary "$1" "$3" lab/bin/oxvirt-vmm
    if [ -x "$3-api" ]; then
        install_binary "$1" "$3-api" lab/bin/oxvirt-vmm-api
    fi
    cp "$4" "$1/lab/l2/vmlinuz"
    cp "$5" "$1/lab/l2/initramfs.img"
}
