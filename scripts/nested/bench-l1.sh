#!/bin/sh
# /lab/run.sh of `oxvirt bench`'s nested target (docs/bench.md; scripts/bench-kit.sh --nested puts it in L1's
# initramfs): L1 is a guest of oxvirtd's qemu engine (TCG, <cpu mode='maximum'/>, so it has SVM) and loads
# kvm-amd (common.sh); L2 is the bench kit under oxvirt-vmm on that KVM (768 MiB, 1 vCPU), with L1's /dev/vda,
# the run's data disk, as its virtio-blk disk (raw, cache=none).
#
# The protocol on L1's console, which `oxvirt bench` (crates/cli/src/bench/nested.rs) drives:
#   L1 prints BENCH-FATAL REASON and exits when it cannot run L2 (no SVM, kvm-amd not loading, L2 not booting);
#   otherwise, once L2 is at its shell, it prints BENCH-L1-NEXT and reads a line "ID COMMAND" from the console,
#   types COMMAND at L2's shell with its output kept in L2's /tmp/bench.out, has L2 print that between the
#   markers BENCH-BEGIN-ID and BENCH-END-ID-STATUS-DONE, relays what L2 printed since the last relay, and
#   prints BENCH-L1-NEXT again. The line "BENCH-L1-AGAIN ID" has L2 print the last output again (a console byte
#   garbled on the way out: seen in L2's serial output under this emulated nested KVM); BENCH-L1-DONE ends.

# fatal REASON...: the host reads the reason up to the end of the line: it is printed as one.
fatal() {
    echo "BENCH-FATAL $(printf '%s' "$*" | tr '\r\n' '  ')"
    exit 1
}

# Said before common.sh's modprobe, which cannot tell why kvm-amd did not load.
grep -qw svm /proc/cpuinfo || fatal "L1's CPU has no svm flag: kvm-amd cannot load (give L1 a CPU with SVM)"
. /lab/common.sh
# After common.sh, which sets the labs' 256 MiB: the bench kit unpacks to about 100 MB in L2's rootfs (half
# of its RAM at most), and fio and sysbench run beside it.
MEM=768
[ -c /dev/kvm ] || fatal "kvm-amd did not give L1 a /dev/kvm"

# until_seen REGEX SECONDS [COUNT]: waits until L2's console shows REGEX on COUNT lines (default 1), at most
# SECONDS by the clock (a count of one-second sleeps runs long where the emulated L1 is slow, and the host,
# which waits longer than L1 does, must hear L1's reason rather than time out itself).
until_seen() {
    deadline=$(($(date +%s) + $2))
    while [ "$(grep -c "$1" /tmp/l2.console)" -lt "${3:-1}" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        kill -0 "$VPID" 2>/dev/null || return 1
        sleep 1
    done
}

# stall_report: what L1 sees of an L2 that stopped making progress, for the reason the host prints: L1's own
# disk requests in flight (an L1 disk that hangs holds L2's up), each VMM thread's state and kernel stack top
# (a vCPU halted in KVM with the disk worker idle in epoll means L2 waits for an interrupt that never came),
# and the VMM's count of L2's completed disk requests, then L2's last console lines.
stall_report() {
    echo "L1 vda in flight: $(cat /sys/block/vda/inflight 2>/dev/null);"
    for task in /proc/"$VPID"/task/*; do
        echo "thread $(cat "$task/comm" 2>/dev/null) $(sed 's/.*) //' "$task/stat" 2>/dev/null | cut -d' ' -f1)" \
            "$(head -3 "$task/stack" 2>/dev/null | sed 's/^\[<[0-9a-f]*>\] //' | tr '\n' ' ');"
    done
    echo "VMM block-stats: $(oxvirt-vmm-api /tmp/l2.api block-stats 2>&1);"
    echo "L2 console: $(tail -5 /tmp/l2.console)"
}

[ -b /dev/vda ] || fatal "L1 has no /dev/vda (the data disk)"
rm -f /tmp/l2.in
mkfifo /tmp/l2.in
oxvirt-vmm --kernel $K --initrd $I --memory $MEM --vcpus 1 --cmdline "$CMD" --api-socket /tmp/l2.api \
    --disk path=/dev/vda,format=raw,cache=none </tmp/l2.in >/tmp/l2.console 2>/tmp/l2.err &
VPID=$!
exec 3>/tmp/l2.in
until_seen "$PROMPT" 1200 || fatal "L2 did not reach its prompt: $(tail -5 /tmp/l2.console) $(cat /tmp/l2.err)"
echo "dmesg -n 1" >&3
# What the host types is not echoed back: every console byte costs an emulated L1 time.
stty -echo 2>/dev/null
relayed=0
echo "BENCH-L2-BOOTED"
printed=0
while echo "BENCH-L1-NEXT" && read -r id command; do
    [ "$id" != BENCH-L1-DONE ] || break
    if [ "$id" = BENCH-L1-AGAIN ]; then
        id=$command
    else
        printed=0
        echo "$command >/tmp/bench.out 2>&1; s=\$?" >&3
    fi
    # The quotes keep the markers of the echoed command line apart from the ones the shell prints.
    echo "echo BENCH\"\"-BEGIN-$id; cat /tmp/bench.out; echo BENCH\"\"-END-$id-\$s-DO\"\"NE" >&3
    printed=$((printed + 1))
    until_seen "BENCH-END-$id-[0-9]*-DONE" 600 "$printed" || fatal "$id did not finish in L2 within 600 s: $(stall_report)"
    size=$(wc -c </tmp/l2.console)
    tail -c +$((relayed + 1)) /tmp/l2.console | head -c $((size - relayed)) | tr -d '\r'
    relayed=$size
    echo
done
echo "poweroff -f" >&3
wait $VPID
echo "BENCH-VMM-EXIT=$?"
exit 0
