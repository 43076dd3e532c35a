#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine (as root): install and build everything, start oxvirtd, define the
# demo guest from examples/demo.xml and boot it, then show its console. On a terminal you get the guest's
# shell (Ctrl-] leaves it, the guest keeps running); otherwise a few commands run in the guest and it powers off.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bash "$repo/scripts/setup.sh"

export PATH="$repo/target/debug:$PATH"
state_dir=${OXVIRT_STATE_DIR:-/var/lib/oxvirt}
export OXVIRT_SOCKET=${OXVIRT_SOCKET:-/run/oxvirt/oxvirtd.sock}
demo_dir=$state_dir/demo
mkdir -p "$demo_dir" "$(dirname "$OXVIRT_SOCKET")"

if ! oxvirt version >/dev/null 2>&1; then
    echo "demo: starting oxvirtd (state in $state_dir, log in $state_dir/oxvirtd.log)"
    setsid oxvirtd --socket "$OXVIRT_SOCKET" --state-dir "$state_dir" >>"$state_dir/oxvirtd.log" 2>&1 </dev/null &
    for _ in $(seq 100); do oxvirt version >/dev/null 2>&1 && break; sleep 0.1; done
    oxvirt version >/dev/null
fi

kit=$repo/target/guest-kit
[ -f "$demo_dir/disk.raw" ] || truncate -s 256M "$demo_dir/disk.raw"
sed -e "s|@KERNEL@|$kit/vmlinuz|" -e "s|@INITRD@|$kit/initramfs.img|" -e "s|@DISK@|$demo_dir/disk.raw|" \
    "$repo/examples/demo.xml" >"$demo_dir/demo.xml"

if [ "$(oxvirt domstate demo 2>/dev/null)" = "running" ] || [ "$(oxvirt domstate demo 2>/dev/null)" = "paused" ]; then
    oxvirt destroy demo
fi
oxvirt define "$demo_dir/demo.xml"
oxvirt start demo
oxvirt dominfo demo

console_log=$state_dir/run/$(oxvirt domuuid demo)/console.log
for _ in $(seq 600); do grep -q OXVIRT-GUEST-BOOTED "$console_log" 2>/dev/null && break; sleep 0.1; done
echo "---- demo console (boot) ----"
cat "$console_log"
echo "---- demo console (live) ----"
if [ -t 0 ] && [ -t 1 ]; then
    exec oxvirt console demo
fi
printf 'uname -r\nnproc\ncat /sys/block/vda/size\nls /sys/class/net\npoweroff -f\n' | oxvirt console demo
oxvirt list --all
