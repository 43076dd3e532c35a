#!/bin/sh
# Guest side of benches/live.sh. Appended to the test guest kit's initramfs as /lab/run.sh, which the kit's
# init runs after boot (its hotplug helper brings hot-plugged CPUs online).
#
# Prints what the guest sees of its resources whenever it changes, checked every 20 ms:
#   OXLIVE N cpus=ONLINE mem=MEMTOTAL_KIB vdb=0|1
# (N counts the lines), so that the host can time a live change until the guest sees it. It never returns
# (the host destroys the guest).
export PATH=/bin:/sbin:/usr/bin

n=0
previous=
while :; do
    cpus=$(grep -c '^processor' /proc/cpuinfo)
    mem=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
    vdb=0
    [ -e /sys/block/vdb ] && vdb=1
    state="cpus=$cpus mem=$mem vdb=$vdb"
    if [ "$state" != "$previous" ]; then
        n=$((n + 1))
        echo "OXLIVE $n $state"
        previous=$state
    fi
    sleep 0.02
done
