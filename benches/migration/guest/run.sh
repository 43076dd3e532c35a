#!/bin/sh
# Guest side of benches/migration.sh. Appended to the test guest kit's initramfs as /lab/run.sh, which the
# kit's init runs after boot.
#
# The memory-dirtying workload: a 256 MiB buffer (a file in a tmpfs, so its pages are the guest's RAM) filled
# once with random bytes, then rewritten in place, pass after pass, as fast as the guest goes (dd reads each
# MiB and writes it back: every page of the buffer is written again in each pass). Random bytes, not zeros:
# QEMU sends a page of zeros as a flag of a few bytes, which would hide the workload from the migration.
# After each pass it prints
#   OXMIG pass N
# (N counts in the guest's RAM: after a migration it goes on from where it was, which the host checks).
# It never returns (the host destroys the guest).
export PATH=/bin:/sbin:/usr/bin

mkdir -p /mnt/dirty
mount -t tmpfs -o size=264m tmpfs /mnt/dirty
dd if=/dev/urandom of=/mnt/dirty/one bs=1M count=1 2> /dev/null
i=0
while [ "$i" -lt 256 ]; do
    cat /mnt/dirty/one
    i=$((i + 1))
done > /mnt/dirty/buffer
rm /mnt/dirty/one
echo "OXMIG buffer $(wc -c < /mnt/dirty/buffer)"

n=0
while :; do
    dd if=/mnt/dirty/buffer of=/mnt/dirty/buffer bs=1M conv=notrunc 2> /dev/null
    n=$((n + 1))
    echo "OXMIG pass $n"
done
