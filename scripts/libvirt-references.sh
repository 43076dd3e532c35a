#!/usr/bin/env bash
# Regenerates libvirt's references for oxvirt's own domain XML cases, crates/domain/tests/data/cases/.
#
# The cases (NAME.xml) are written for this project. For each one, this script asks Debian 12's libvirt (9.0,
# with Debian's QEMU 7.2 for its capabilities) what it makes of it, and writes beside the input:
#   NAME.libvirt.xml   `virsh dumpxml --security-info` after `virsh define`: libvirt's normalized form
#   NAME.libvirt.err   libvirt's error message, when `virsh define` refused the input
# and removes the other of the two. crates/domain/tests/cases.rs compares oxvirt against these files; the
# README.md in the data folder says how.
#
# Usage (as root, on Debian 12): scripts/libvirt-references.sh [NAME...]   (no NAME: every case)
#
# How it runs libvirt: embedded in virsh (`qemu:///embed?root=DIR`), with a private root DIR made for this run
# and removed at exit. So it starts no daemon (no libvirtd, virtlogd, virtlockd), never starts or defines a
# libvirt network, and reads or writes nothing under /etc/libvirt, /var/lib/libvirt or /run/libvirt: the
# private root plays the part of a private domain name on a shared libvirtd. Each case is defined, dumped and
# undefined again before the next one (cases cannot see each other). The only lasting change is the one the
# benchmarks make too: the Debian packages below are installed when missing (libvirt-daemon-system creates
# the libvirt-qemu user the QEMU driver runs as). On this project's machines (no systemd, and Debian's
# policy-rc.d refuses service starts) that starts nothing; on a machine with systemd, installing
# libvirt-daemon-system starts libvirtd and its default network, so install the packages beforehand there.
# As in the benchmarks (benches/lib.sh), /dev/kvm is given to group kvm for the run and its mode restored at
# exit: otherwise libvirt finds its cached QEMU capabilities outdated ("KVM was enabled when probing, but it
# is not available now") and probes QEMU again, a minute under load, for every virsh call.
# The first call in the new root probes QEMU's capabilities once.
#
# Domain type 'kvm' cases need /dev/kvm (any KVM, even kvm_pvm, is enough for libvirt to define them); the
# script refuses to run without it rather than record "kvm not supported" errors.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cases=$repo/crates/domain/tests/data/cases
log() { printf 'libvirt-references: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}
say() { log "$@"; }
# shellcheck source=../benches/lib.sh
source "$repo/benches/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (libvirt's QEMU driver in a privileged embedded root needs it)"
[ -c /dev/kvm ] || die "/dev/kvm is missing: the type='kvm' cases cannot be defined without it"

install_missing libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-system-x86
libvirt_version=$(dpkg-query -W -f='${Version}' libvirt-daemon-driver-qemu)
qemu_version=$(dpkg-query -W -f='${Version}' qemu-system-x86)

root=$(mktemp -d /tmp/oxvirt-libvirt-references.XXXXXX)
trap 'restore_kvm_mode; rm -rf "$root"' EXIT
give_kvm_to_libvirt
virsh=(virsh -q -c "qemu:///embed?root=$root")
# libvirt's own log lines (it logs errors to stderr too) would end up in the .err files.
export LIBVIRT_LOG_OUTPUTS="1:file:$root/libvirt.log"

if [ $# -gt 0 ]; then
    names=("$@")
else
    names=()
    for f in "$cases"/*.xml; do
        case $f in *.libvirt.xml) continue ;; esac
        names+=("$(basename "$f" .xml)")
    done
fi
[ ${#names[@]} -gt 0 ] || die "no cases in $cases"

log "libvirt $libvirt_version, QEMU $qemu_version; private root $root"
cd "$cases"
accepted=0
refused=0
for name in "${names[@]}"; do
    [ -f "$name.xml" ] || die "no case $cases/$name.xml"
    domain=$(sed -n 's|.*<name>\(.*\)</name>.*|\1|p' "$name.xml" | head -n 1)
    [ -n "$domain" ] || die "$name.xml has no <name> on one line"
    rm -f "$name.libvirt.xml" "$name.libvirt.err"
    if "${virsh[@]}" define "$name.xml" > /dev/null 2> "$root/define.err"; then
        "${virsh[@]}" dumpxml --security-info "$domain" > "$name.libvirt.xml"
        "${virsh[@]}" undefine --nvram "$domain" > /dev/null
        accepted=$((accepted + 1))
    else
        # "error: Failed to define domain from NAME.xml" then "error: <libvirt's message>".
        grep -v '^error: Failed to define domain from' "$root/define.err" | sed 's/^error: //' > "$name.libvirt.err"
        [ -s "$name.libvirt.err" ] || die "$name: virsh define failed without a message"
        refused=$((refused + 1))
    fi
    if "${virsh[@]}" dominfo "$domain" > /dev/null 2>&1; then
        die "$name: '$domain' is still defined in the private root after the case"
    fi
done
log "${#names[@]} cases: libvirt defined $accepted, refused $refused (references in $cases)"
