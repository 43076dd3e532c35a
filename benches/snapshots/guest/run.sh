#!/bin/sh
# Guest side of benches/snapshots.sh. Appended to the test guest kit's initramfs as /lab/run.sh, which the
# kit's init runs after boot.
#
# Fills oxbench.dirty MiB (kernel command line; default 256) of the guest's memory with random data (a file
# in a tmpfs, which lives in RAM: the root file system is capped at half the RAM), so that a snapshot or a save has that much
# non-zero memory to write (QEMU writes a zero page as a flag, not as 4 KiB), prints OXBENCH-DIRTY-DONE,
# then prints OXBENCH-TICK=N once a second forever: the host sees from a new tick that a reverted or
# restored guest runs again. It never returns (the host destroys the guest).
export PATH=/bin:/sbin:/usr/bin

dirty=256
# shellcheck disable=SC2013 # the kernel command line is one line of words
for word in $(cat /proc/cmdline); do
    case $word in
        oxbench.dirty=*) dirty=${word#*=} ;;
    esac
done
mkdir -p /dirty
mount -t tmpfs -o size=$((dirty + 1))m tmpfs /dirty || echo "OXBENCH-DIRTY-FAILED mount"
dd if=/dev/urandom of=/dirty/random bs=1M count="$dirty" 2> /dev/null || echo "OXBENCH-DIRTY-FAILED dd"
echo "OXBENCH-DIRTY-DONE mib=$(($(wc -c < /dirty/random) / 1048576)) free_kib=$(awk '/^MemFree:/ { print $2 }' /proc/meminfo)"
n=0
while :; do
    n=$((n + 1))
    echo "OXBENCH-TICK=$n"
    sleep 1
done
