#!/bin/sh
# Runs inside the L1 guest of benches/native-vmm.sh (QEMU TCG, -cpu max): loads kvm-amd, then boots the same L2
# kernel + initramfs (the guest kit, as it is) under oxvirt-vmm, QEMU -M microvm and QEMU -M pc, all on KVM,
# and prints one "RESULT <vmm> <kind> <run> KEY=value" line per measured value. The host script computes the
# medians. Runs alternate between the VMMs (oxvirt, microvm, pc, oxvirt, ...), after one uncounted warm-up each.
. /lab/common.sh
# Seconds the guest idles at its prompt before smaps is read.
SETTLE=3
VMMS="oxvirt microvm pc"

# launch VMM PREFIX...: runs PREFIX followed by VMM's command line (same kernel, initramfs, RAM, vCPUs, console).
launch() {
    vmm=$1
    shift
    case $vmm in
    oxvirt)
        "$@" /lab/bin/oxvirt-vmm --kernel $K --initrd $I --memory $MEM --vcpus 1 --cmdline "$CMD"
        ;;
    # QEMU sits at /usr/bin with its firmware in /usr/share/{qemu,seabios}, where it looks for them.
    # microvm needs rtc=on: without an RTC, this kernel's rtc_cmos probe of the empty CMOS ports spins in
    # mc146818_avoid_UIP for tens of seconds of guest time (soft lockup seen in a verbose boot).
    microvm)
        "$@" /usr/bin/qemu-system-x86_64 -M microvm,rtc=on -enable-kvm -cpu host -m $MEM -smp 1 -nodefaults \
            -no-user-config -display none -serial stdio -kernel $K -initrd $I -append "$CMD"
        ;;
    pc)
        "$@" /usr/bin/qemu-system-x86_64 -M pc -enable-kvm -cpu host -m $MEM -smp 1 -nodefaults \
            -no-user-config -display none -serial stdio -kernel $K -initrd $I -append "$CMD"
        ;;
    esac
}

boot() {
    launch "$1" oxbench-time boot 240 "$MARKER" "$PROMPT" $SETTLE $MEM -- 2>&1 | result "$1" boot "$2"
}

# strace stops the VMM only at its execve and ioctl calls (seccomp-bpf filter); oxbench-time kills it (its
# process group) as soon as the log shows the first KVM_RUN.
kvmrun() {
    rm -f /tmp/strace.log
    launch "$1" oxbench-time kvmrun 120 /tmp/strace.log -- strace -f --seccomp-bpf -ttt -T \
        -e trace=execve,ioctl -o /tmp/strace.log -- 2>&1 | result "$1" kvmrun "$2"
    cp /tmp/strace.log "/tmp/strace-$1.log"
}

echo "BENCH-QEMU-VERSION=$(/usr/bin/qemu-system-x86_64 --version | head -1)"
echo "BENCH-STRACE-VERSION=$(strace -V | head -1)"
for v in $VMMS; do
    echo "BENCH-CMD-$v=$(launch $v echo)"
done
echo "BENCH-L1-THP=$(cat /sys/kernel/mm/transparent_hugepage/enabled)"

# rounds MEASUREMENT: round 0 (the uncounted warm-up) and rounds 1..RUNS, every VMM once per round.
rounds() {
    i=0
    while [ $i -le "$RUNS" ]; do
        for v in $VMMS; do
            "$1" $v $i
        done
        i=$((i + 1))
    done
}
rounds boot
rounds kvmrun
# The ioctls oxvirt-vmm made before its first KVM_RUN in the last run, with their durations, for the reader.
cut -c1-170 /tmp/strace-oxvirt.log | sed 's/^/STRACE-oxvirt /'
echo "LEFTOVER-VMM=$(pidof oxvirt-vmm qemu-system-x86_64 strace | wc -w)"
exit 0
