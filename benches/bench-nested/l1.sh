#!/bin/sh
# Runs inside the L1 guest of benches/bench-nested.sh (QEMU TCG, -cpu max, kvm-amd loaded by common.sh): boots
# the bench kit under oxvirt-vmm on KVM (L2: 768 MiB, 1 vCPU, L1's /dev/vda as its virtio-blk disk, raw,
# cache=none), types each workload of /lab/workloads ("ID<TAB>COMMAND" lines from `oxvirt bench
# --print-commands`) at L2's shell, and prints L2's whole console between L2-CONSOLE-BEGIN and L2-CONSOLE-END
# for `oxvirt bench import-console` on the host.
. /lab/common.sh
MEM=768

fatal() {
    echo "BENCH-FATAL $*"
    exit 1
}

# until_seen TEXT SECONDS: waits until L2's console shows TEXT.
until_seen() {
    left=$2
    while ! grep -qF "$1" /tmp/l2.console; do
        [ "$left" -gt 0 ] || return 1
        left=$((left - 1))
        sleep 1
    done
}

[ -b /dev/vda ] || fatal "L1 has no /dev/vda (the data disk)"
rm -f /tmp/l2.in
mkfifo /tmp/l2.in
oxvirt-vmm --kernel $K --initrd $I --memory $MEM --vcpus 1 --cmdline "$CMD" \
    --disk path=/dev/vda,format=raw,cache=none </tmp/l2.in >/tmp/l2.console 2>/tmp/l2.err &
VPID=$!
exec 3>/tmp/l2.in
until_seen "$PROMPT" 1200 || fatal "L2 did not reach its prompt: $(tail -5 /tmp/l2.console) $(cat /tmp/l2.err)"
echo "BENCH-L2-BOOTED"
echo "dmesg -n 1" >&3
TAB=$(printf '\t')
while IFS="$TAB" read -r id command; do
    echo "BENCH-RUNNING $id"
    # The quotes keep the markers of the echoed command line apart from the ones the shell prints.
    echo "echo BENCH\"\"-BEGIN-$id; $command 2>&1; echo BENCH\"\"-END-$id-\$?" >&3
    until_seen "BENCH-END-$id-" 1800 || fatal "$id did not finish in L2: $(tail -5 /tmp/l2.console)"
done </lab/workloads
echo "poweroff -f" >&3
wait $VPID
echo "BENCH-VMM-EXIT=$?"
exec 3>&-
echo "L2-CONSOLE-BEGIN"
tr -d '\r' </tmp/l2.console
echo
echo "L2-CONSOLE-END"
exit 0
