#!/usr/bin/env bash
# Builds the test guest kit from Debian packages: the Debian cloud kernel (bzImage), its module tree, and a
# small busybox initramfs. Tests, the demo and the nested lab boot it.
#
# Output (default target/guest-kit/, or $OXVIRT_GUEST_KIT_DIR):
#   vmlinuz         the kernel (bzImage)
#   initramfs.img   busybox initramfs (newc cpio, gzip)
#   modules/        the kernel's whole module tree (lib/modules/<version>), for labs that need more modules
#   version         the kernel version string
#
# What the guest does (tests rely on it, keep docs/guest-kit.md in sync):
#   - loads the virtio, disk, network, ACPI button and evdev modules;
#   - prints "OXVIRT-GUEST-BOOTED" on the console (ttyS0 when console=ttyS0);
#   - powers off on the ACPI power button (busybox acpid);
#   - if /lab/run.sh exists (an extra cpio appended to the initramfs), runs it, prints
#     "OXVIRT-LAB-EXIT=<status>" and powers off;
#   - otherwise runs a root shell on the console with the prompt "oxvirt-guest# ", respawned on exit.
#
# Cached: rebuilt only when this script, the kernel package or busybox changes.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${OXVIRT_GUEST_KIT_DIR:-$repo/target/guest-kit}
cache=$out/cache
mkdir -p "$cache"

log() { printf 'guest-kit: %s\n' "$*" >&2; }

need_packages=()
[ -x /bin/busybox ] || need_packages+=(busybox-static)
command -v cpio >/dev/null || need_packages+=(cpio)
if [ ${#need_packages[@]} -gt 0 ]; then
    log "installing ${need_packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

# The kernel package that linux-image-cloud-amd64 currently points at. With no apt lists (fresh machine),
# update them once; without network, reuse the newest package already cached.
kernel_package() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
package=$(kernel_package || true)
if [ -z "$package" ]; then
    apt-get update -qq || true
    package=$(kernel_package || true)
fi
deb=""
if [ -n "$package" ]; then
    deb=$(ls "$cache/${package}"_*.deb 2>/dev/null | head -n 1 || true)
    if [ -z "$deb" ]; then
        log "downloading $package"
        (cd "$cache" && apt-get download -q "$package" 2>&1 | grep -v 'unsandboxed' >&2 || true)
        deb=$(ls "$cache/${package}"_*.deb 2>/dev/null | head -n 1 || true)
    fi
fi
if [ -z "$deb" ]; then
    deb=$(ls -t "$cache"/linux-image-*.deb 2>/dev/null | head -n 1 || true)
fi
[ -n "$deb" ] || { log "cannot find or download the Debian cloud kernel package"; exit 1; }

busybox_version=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || /bin/busybox | head -n 1)
stamp=$( { sha256sum <"$0"; basename "$deb"; echo "$busybox_version"; } | sha256sum | cut -d' ' -f1)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] &&
    [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.img" ]; then
    exit 0
fi

log "building from $(basename "$deb")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/pkg"
version=$(ls "$work/pkg/lib/modules" | head -n 1)
moddir=$work/pkg/lib/modules/$version

# The modules the guest loads at boot, in modprobe names. Dependencies come from modules.dep below.
boot_modules="virtio_pci virtio_blk virtio_net virtio_scsi virtio-rng virtio_console virtio_balloon
    ata_piix sd_mod sr_mod button evdev"
# Extra modules shipped (not loaded) so tests can load them on demand.
extra_modules="tun bridge kvm kvm-amd kvm-intel irqbypass"

root=$work/root
mkdir -p "$root"/{bin,sbin,etc/acpi/PWRF,proc,sys,dev,tmp,run,root,lab,"lib/modules/$version"}
cp /bin/busybox "$root/bin/busybox"

# Copy each wanted module and, transitively, what it depends on (from the .ko's own modinfo).
declare -A copied=()
copy_module() {
    local name=$1 file dep
    file=$(find "$moddir/kernel" \( -name "$name.ko" -o -name "${name//_/-}.ko" -o -name "${name//-/_}.ko" \) | head -n 1)
    [ -n "$file" ] || { log "module $name not found in $version"; exit 1; }
    [ -z "${copied[$file]:-}" ] || return 0
    copied[$file]=1
    mkdir -p "$root/lib/modules/$version/$(dirname "${file#$moddir/}")"
    cp "$file" "$root/lib/modules/$version/${file#$moddir/}"
    for dep in $(grep -a -o 'depends=[^[:cntrl:]]*' "$file" | head -n 1 | cut -d= -f2 | tr ',' ' '); do
        copy_module "$dep"
    done
}
for m in $boot_modules $extra_modules; do copy_module "$m"; done
/bin/busybox depmod -b "$root" "$version"

cat >"$root/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "oxvirt-guest: power button pressed, powering off"
/bin/poweroff -f
EOF
chmod +x "$root/etc/acpi/PWRF/00000080"

# Run for each kernel device event (busybox uevent, on netlink: the kernel has no /proc/sys/kernel/hotplug):
# a hot-plugged CPU arrives offline and, as udev's rule does on distributions, it is brought online.
cat >"$root/sbin/hotplug" <<'EOF'
#!/bin/sh
if [ "$ACTION" = add ] && [ "$SUBSYSTEM" = cpu ] && [ -f "/sys$DEVPATH/online" ]; then
    echo 1 >"/sys$DEVPATH/online"
fi
EOF
chmod +x "$root/sbin/hotplug"

cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
for m in $(echo $boot_modules); do modprobe "\$m" 2>/dev/null; done
uevent /sbin/hotplug &
hostname oxvirt-guest
ip link set lo up
# acpid listens only to the input devices that exist when it starts, and the power button's event node appears
# asynchronously after its module loaded: wait for the node, then for acpid to hold it open, so that the boot
# marker also means "the power button works" (a press before that was lost, and shutdown/reboot with it).
n=0
while [ -z "\$(ls /dev/input/event* 2>/dev/null)" ] && [ \$n -lt 100 ]; do sleep 0.05; n=\$((n + 1)); done
acpid -f -c /etc/acpi -l /tmp/acpid.log &
acpid_pid=\$!
n=0
while ! ls -l /proc/\$acpid_pid/fd 2>/dev/null | grep -q /dev/input/event && [ \$n -lt 100 ]; do
    sleep 0.05
    n=\$((n + 1))
done
echo "OXVIRT-GUEST-BOOTED"
if [ -x /lab/run.sh ]; then
    /lab/run.sh
    echo "OXVIRT-LAB-EXIT=\$?"
    poweroff -f
fi
export PS1='oxvirt-guest# '
# A serial console reports no size; the shell would wrap echoed lines at 80 columns and split long commands.
stty cols 4096 rows 50 </dev/console 2>/dev/null
while true; do
    setsid cttyhack sh
done
EOF
chmod +x "$root/init"

(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initramfs.img"

rm -rf "$out/modules"
mkdir -p "$out/modules"
cp -a "$moddir" "$out/modules/"
cp "$work/pkg/boot/vmlinuz-$version" "$out/vmlinuz"
cp "$work/initramfs.img" "$out/initramfs.img"
echo "$version" >"$out/version"
echo "$stamp" >"$out/stamp"
log "ready in $out (kernel $version)"
