#!/usr/bin/env bash
# Makes the `virt-install-*` domain XML cases of crates/domain/tests/data/cases/ from what Debian 12's
# virt-install (package virtinst 4.1) writes, then their libvirt references (scripts/libvirt-references.sh).
#
# Each case is one virt-install command line, run with `--print-xml` against libvirt's QEMU driver embedded in
# the Python process (`qemu:///embed?root=DIR`, a private root made for this run and removed at exit, as
# libvirt-references.sh does): no daemon is started, nothing is defined, no storage or network is created.
# What oxvirt must take is exactly what virt-install would define, so the output is stored as it is, except:
#   - the temporary directory holding the files virt-install looks at (a dummy ISO and disk images, made here
#     because virt-install checks that paths exist) is cut out of the paths, so the cases name stable paths
#     (/var/lib/oxvirt/images/vm1.qcow2, /tmp/debian.iso);
#   - the random <uuid> and interface <mac> are replaced by fixed ones derived from the case name, so the
#     references do not change at every run (the cases README asks cases for both);
#   - the random part of the names of the kernel and initrd a --location install copies out of the tree
#     (/var/lib/libvirt/boot/virtinst-RANDOM-vmlinuz) and of the cloud-init seed ISO is cut out (virtinst-vmlinuz,
#     virtinst-cloudinit.iso), for the same reason;
# The commands are listed below (`specs`); the cases README lists them too. (An XML comment cannot hold them:
# `--` is not allowed inside one.)
# A command that installs from media gives two documents: the definition virt-install keeps (stored as NAME)
# and the one it boots the installer with (stored as NAME-install, for the cases that ask for it).
#
# Two things the script works around, both in the wrapper below and not in virt-install's output:
#   - virt-install registers no libvirt event loop, which the embedded driver needs ("An event loop
#     implementation must be registered"): the wrapper registers libvirt's default one;
#   - virt-install 4.1 drops a disk's path when the connection has no storage driver (the embedded QEMU
#     driver has none): `diskbackend.manage_path` returns no path then ("Device type 'disk' requires a
#     path"). The wrapper keeps the path, which is what virt-install does for paths it does not manage;
#   - without a storage pool virt-install writes no image format (`<driver name='qemu'/>`, which libvirt
#     reads as raw); on a host with the storage driver it takes the format libvirt's pool probed. The
#     wrapper reads it from the image's header the same way (the dummy images are real, empty qcow2 files).
# Debian 12's osinfo-db (0.20221130) does not know `debian12` (virt-install: "Unknown OS name"), so the
# seeds' `--os-variant debian12` is `debian11` here.
#
# Usage (as root, on Debian 12): scripts/virt-install-cases.sh [NAME...]   (no NAME: every case)
# Installs the `virtinst` package when missing (libvirt-references.sh installs libvirt's).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cases=$repo/crates/domain/tests/data/cases
log() { printf 'virt-install-cases: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}
say() { log "$@"; }
# shellcheck source=../benches/lib.sh
source "$repo/benches/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (libvirt's QEMU driver in a privileged embedded root needs it)"
[ -c /dev/kvm ] || die "/dev/kvm is missing: virt-install would choose type='qemu' instead of 'kvm'"

install_missing virtinst libvirt-daemon-driver-qemu python3-libvirt qemu-system-x86 qemu-utils ovmf
virtinst_version=$(dpkg-query -W -f='${Version}' virtinst)

work=$(mktemp -d /tmp/oxvirt-virt-install-cases.XXXXXX)
trap 'restore_kvm_mode; rm -rf "$work"' EXIT
give_kvm_to_libvirt
root=$work/root
mkdir -p "$root" "$work/var/lib/oxvirt/images" "$work/tmp"
export LIBVIRT_LOG_OUTPUTS="1:file:$work/libvirt.log"

# The files the commands name, under $work (cut out of the stored paths): empty qcow2 images (their format is
# read from the header, see the wrapper) and an empty ISO. A `size=` disk is one of them too: the embedded
# driver has no storage driver to create it with, and virt-install writes the same XML for an existing image.
for f in vm1.qcow2 debian-11-genericcloud-amd64.qcow2 data.qcow2 centos7.qcow2 seedcd.qcow2; do
    qemu-img create -q -f qcow2 "$work/var/lib/oxvirt/images/$f" 20G
done
truncate -s 1M "$work/tmp/debian.iso"
img=$work/var/lib/oxvirt/images
iso=$work/tmp/debian.iso
# An install tree for --location, laid out as CentOS 7's (virt-install reads .treeinfo to find the
# kernel and initrd and to detect the OS): the files only need to exist.
tree=$work/tmp/centos7
mkdir -p "$tree/images/pxeboot"
printf 'kernel\n' > "$tree/images/pxeboot/vmlinuz"
printf 'initrd\n' > "$tree/images/pxeboot/initrd.img"
cat > "$tree/.treeinfo" << 'EOF_TREEINFO'
[general]
family = CentOS
version = 7
arch = x86_64
name = CentOS 7
[images-x86_64]
kernel = images/pxeboot/vmlinuz
initrd = images/pxeboot/initrd.img
EOF_TREEINFO

cat > "$work/virt-install.py" << 'EOF'
import os
import sys
sys.path.insert(0, "/usr/share/virt-manager")
import libvirt
from virtinst import diskbackend, virtinstall

# libvirt's embedded QEMU driver needs an event loop; virt-install registers none.
libvirt.virEventRegisterDefaultImpl()

_manage_path = diskbackend.manage_path


def manage_path(conn, path):
    # virt-install 4.1 returns no path at all when the connection has no storage driver.
    if not conn.support.conn_storage():
        return path, None, None
    return _manage_path(conn, path)


diskbackend.manage_path = manage_path

_get_driver_type = diskbackend.StorageBackend.get_driver_type


def get_driver_type(self):
    # On a host with libvirt's storage driver, virt-install finds an existing image in a pool
    # (it makes one for the image's directory) and takes the format libvirt probed. The
    # embedded driver has no pools: probe the header the same way (qcow2 magic, else raw).
    fmt = _get_driver_type(self)
    path = self.get_path()
    if fmt is None and not self._conn.support.conn_storage() and path and os.path.isfile(path):
        with open(path, "rb") as image:
            fmt = "qcow2" if image.read(4) == b"QFI\xfb" else "raw"
    return fmt


diskbackend.StorageBackend.get_driver_type = get_driver_type
sys.argv[0] = "virt-install"
virtinstall.runcli()
EOF

# NAME|keep the install document too (yes/no)|virt-install arguments (split into words as a shell does, so an
# argument with spaces is quoted; the paths hold no spaces or quotes)
common_import="--memory 1024 --vcpus 1 --disk path=$img/debian-11-genericcloud-amd64.qcow2,format=qcow2 --import --os-variant debian11 --network network=default --noautoconsole"
specs=(
    "virt-install-cdrom|yes|--name vm1 --memory 2048 --vcpus 2 --disk path=$img/vm1.qcow2,size=20,format=qcow2 --cdrom $iso --os-variant debian11 --network network=default --graphics vnc,listen=0.0.0.0 --noautoconsole"
    "virt-install-import|no|--name cloud $common_import"
    "virt-install-uefi|no|--name uefi $common_import --boot uefi"
    "virt-install-q35|no|--name q35 $common_import --machine q35"
    "virt-install-pc|no|--name pc $common_import --machine pc"
    "virt-install-pc-vnc|no|--name pcvnc $common_import --machine pc --graphics vnc,listen=0.0.0.0"
    "virt-install-spice|no|--name spice $common_import --graphics spice"
    "virt-install-pc-spice|no|--name pcspice $common_import --machine pc --graphics spice"
    "virt-install-sata|no|--name sata --memory 1024 --vcpus 1 --disk path=$img/vm1.qcow2,format=qcow2,bus=sata --import --os-variant debian11 --network network=default --noautoconsole"
    "virt-install-scsi|no|--name scsi --memory 1024 --vcpus 1 --disk path=$img/vm1.qcow2,format=qcow2,bus=scsi --import --os-variant debian11 --network network=default --noautoconsole"
    "virt-install-pc-sata-scsi|no|--name pcdisks --memory 1024 --vcpus 1 --machine pc --disk path=$img/vm1.qcow2,format=qcow2,bus=sata --disk path=$img/data.qcow2,format=qcow2,bus=scsi --import --os-variant debian11 --network network=default --noautoconsole"
    "virt-install-serial-console|no|--name serial $common_import --graphics none --console pty,target_type=serial"
    "virt-install-pc-serial-console|no|--name pcserial $common_import --machine pc --graphics none --console pty,target_type=serial"
    "virt-install-host-passthrough|no|--name passthrough $common_import --cpu host-passthrough"
    # Two vCPUs of four, a named CPU model with a feature, VNC on a fixed port with a password.
    "virt-install-cpu-model|no|--name model --memory 1024 --vcpus 2,maxvcpus=4 --cpu Skylake-Client,+vmx --disk path=$img/vm1.qcow2,format=qcow2,cache=writeback,io=threads --import --os-variant debian11 --network bridge=br0,model=e1000 --graphics vnc,port=5901,password=secret --noautoconsole"
    # The seeds' two command lines (issue 9), as written but for the paths: a network install of CentOS 7
    # from a tree with a serial console, and a CD-ROM install shown on VNC.
    "virt-install-seed-location|yes|--network bridge:br0 --name centos7 --ram=4096 --vcpus=2 --disk path=$img/centos7.qcow2,format=qcow2,bus=virtio,cache=none,size=16 --graphics none --location $tree --extra-args='console=tty0 console=ttyS0,115200'"
    # An import with a cloud-init NoCloud seed (virt-install generates the root password and the seed ISO).
    "virt-install-cloud-init|yes|--name ci $common_import --cloud-init root-password-generate=on"
    # --os-variant generic: what virt-install picks for an OS it knows nothing about.
    "virt-install-generic|no|--name generic --memory 1024 --vcpus 1 --disk path=$img/vm1.qcow2,format=qcow2 --import --os-variant generic --network network=default --noautoconsole"
    "virt-install-seed-cdrom|yes|--name seedcd --memory 2048 --vcpus 2 --disk path=$img/seedcd.qcow2,size=8,format=qcow2 --cdrom $iso --os-variant debian11 --graphics vnc,listen=0.0.0.0"
)

# A fixed UUID and MAC for a case, from its name.
fixed_uuid() { printf '%s' "$1" | md5sum | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/'; }
fixed_mac() { printf '%s' "$1" | md5sum | sed -E 's/^(..)(..)(..).*/52:54:00:\1:\2:\3/'; }

wanted=("$@")
made=()
for spec in "${specs[@]}"; do
    IFS='|' read -r name keep_install args <<< "$spec"
    if [ ${#wanted[@]} -gt 0 ]; then
        match=no
        for w in "${wanted[@]}"; do [ "$w" = "$name" ] && match=yes; done
        [ $match = yes ] || continue
    fi
    eval "argv=($args)"
    if ! /usr/bin/python3 "$work/virt-install.py" --connect "qemu:///embed?root=$root" --print-xml "${argv[@]}" \
        > "$work/out.xml" 2> "$work/err"; then
        cat "$work/err" >&2
        die "$name: virt-install failed"
    fi
    shown=$(printf '%s' "$args" | sed "s|$work||g")
    documents=$(grep -c '^</domain>' "$work/out.xml")
    # virt-install prints the install document first, then the definition it keeps.
    csplit -s -z -f "$work/doc" "$work/out.xml" '/^<domain/' '{*}'
    last=$(printf '%s/doc%02d' "$work" $((documents - 1)))
    outputs=("$name:$last")
    if [ "$keep_install" = yes ]; then
        [ "$documents" = 2 ] || die "$name: expected an install document and a definition, got $documents documents"
        outputs+=("$name-install:$work/doc00")
    fi
    for output in "${outputs[@]}"; do
        case_name=${output%%:*}
        file=${output#*:}
        sed -e "s|$work||g" \
            -e "s|<uuid>[^<]*</uuid>|<uuid>$(fixed_uuid "$case_name")</uuid>|" \
            -e "s|<mac address=\"[^\"]*\"/>|<mac address=\"$(fixed_mac "$case_name")\"/>|" \
            -e "s,/virtinst-[a-z0-9_]*-\(vmlinuz<\|initrd\.img<\|cloudinit\.iso\"\),/virtinst-\1," \
            "$file" > "$cases/$case_name.xml"
        log "$case_name: virt-install $shown"
        made+=("$case_name")
    done
    rm -f "$work"/doc*
done
[ ${#made[@]} -gt 0 ] || die "no case matches $*"
log "virtinst $virtinst_version: wrote ${#made[@]} cases; their libvirt references next"
restore_kvm_mode
KVM_MODE_SAVED=
"$repo/scripts/libvirt-references.sh" "${made[@]}"
