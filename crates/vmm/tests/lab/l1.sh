#!/bin/sh
# Runs inside the L1 guest (QEMU TCG, -cpu max): loads KVM, then runs oxvirt-vmm checks on real KVM.
# Every check's console output is printed with a "[name] " prefix, its stderr with "[name:err] ", and its end as
# "LAB-END name rc=N"; the Rust harness (crates/vmm/tests/lab.rs) asserts on them.
export PATH=/lab/bin:$PATH
# Heartbeat for the harness (oxvirt_testkit::lab::run_l1): a console silent for 90 s means L1 froze.
(while :; do echo LAB-HEARTBEAT; sleep 10; done) &
modprobe kvm-amd 2>/dev/null
modprobe tun 2>/dev/null
if [ ! -c /dev/kvm ]; then
    echo "LAB-FATAL /dev/kvm missing after loading kvm-amd"
    exit 1
fi
K=/lab/l2/vmlinuz
I=/lab/l2/initramfs.img
# quiet: every console byte is a VM exit handled by an emulated L1, keep the boot log short.
CMD="console=ttyS0 panic=-1 quiet"

# awk, not sed: a guest killed mid-line leaves no final newline, and sed would glue LAB-END onto that line.
report() {
    awk -v p="[$1] " '{ print p $0 }' /tmp/$1.out
    awk -v p="[$1:err] " '{ print p $0 }' /tmp/$1.err
    echo "LAB-END $1 rc=$2"
}

# run NAME L2MODE ARGS...: boots L2 with the lab initramfs.
run() {
    name=$1
    mode=$2
    shift 2
    echo "LAB-BEGIN $name"
    timeout 150 oxvirt-vmm --kernel $K --initrd $I --cmdline "$CMD oxl2=$mode" "$@" </dev/null >/tmp/$name.out 2>/tmp/$name.err
    report $name $?
}

# fail NAME ARGS...: a command line that must be refused.
fail() {
    name=$1
    shift
    echo "LAB-BEGIN $name"
    timeout 60 oxvirt-vmm "$@" </dev/null >/tmp/$name.out 2>/tmp/$name.err
    report $name $?
}

wait_for() {
    n=0
    while [ $n -lt 900 ]; do
        eval "$1" && return 0
        sleep 0.1
        n=$((n + 1))
    done
    return 1
}

# finish NAME PID: waits (bounded) for a VMM started in the background and reports it. One that does not end
# is killed and reported with rc=hung, so a stuck scenario fails alone instead of stalling the whole lab.
finish() {
    if wait_for "[ ! -d /proc/$2 ] || grep -q ') Z' /proc/$2/stat 2>/dev/null"; then
        wait $2
        report $1 $?
    else
        kill -KILL $2
        wait $2
        report $1 hung
    fi
}

echo "PT-FLAGS=$(oxvirt-vmm --kernel $K --print-cpu-flags)"

run boot1 info --vcpus 1 --memory 256 --cpu-features -svm
run boot2 info --vcpus 2 --memory 256
run topo info --vcpus 2 --topology sockets=2,cores=1,threads=1 --memory 256
run hostmodel info --memory 256 --cpu-mode host-model
run qemu64 info --memory 256 --cpu-mode custom:qemu64
run kvm64 info --memory 256 --cpu-mode custom:kvm64
run haswell info --memory 256 --cpu-mode custom:Haswell-noTSX-IBRS
# What TCG's -cpu max lacks for Haswell in this lab; the rest of the model must then be exact.
run haswell-reduced info --memory 256 --cpu-mode custom:Haswell-noTSX-IBRS --cpu-features -invpcid,-pcid,-spec-ctrl
run reboot reboot --memory 256 --exit-record /tmp/reboot-exit.json
echo "RECORD-reboot=$(cat /tmp/reboot-exit.json 2>/dev/null)"

# --config: the VM as a JSON file (what oxvirtd's native engine writes) instead of flags.
cat >/tmp/vm.json <<EOF
{
  "kernel": "$K",
  "initrd": "$I",
  "cmdline": "$CMD oxl2=info",
  "memory": {"size_mib": 256},
  "cpus": {"count": 2, "topology": {"sockets": 2, "cores": 1, "threads": 1}, "features": {"disable": ["svm"]}},
  "exit_record": "/tmp/config-exit.json"
}
EOF
echo "LAB-BEGIN config"
timeout 150 oxvirt-vmm --config /tmp/vm.json </dev/null >/tmp/config.out 2>/tmp/config.err
report config $?
echo "RECORD-config=$(cat /tmp/config-exit.json 2>/dev/null)"

# virtio-blk: known bytes in, bytes written by the guest read back here.
printf 'OXVIRT-DISK-PATTERN' >/tmp/disk.img
dd if=/dev/zero of=/tmp/disk.img bs=1 count=0 seek=1048576 2>/dev/null
run blk blk --memory 256 --disk path=/tmp/disk.img
echo "HOST-READBACK=$(dd if=/tmp/disk.img bs=1 skip=4096 count=13 2>/dev/null)"
run blkro blkro --memory 256 --disk path=/tmp/disk.img,readonly=on

# --jail by hand: PID 1 of a new PID namespace (unshare --fork), an empty root, another user; the
# guest reads and writes its disk through the descriptor opened before, and the record is written.
printf 'OXVIRT-DISK-PATTERN' >/tmp/jdisk.img
dd if=/dev/zero of=/tmp/jdisk.img bs=1 count=0 seek=1048576 2>/dev/null
mkdir -p /tmp/jroot
echo "LAB-BEGIN jail"
timeout 150 unshare --pid --fork oxvirt-vmm --kernel $K --initrd $I --cmdline "$CMD oxl2=blk" --memory 256 \
    --disk path=/tmp/jdisk.img --exit-record /tmp/jail-exit.json --jail /tmp/jroot --uid 3001000 --gid 3001000 \
    </dev/null >/tmp/jail.out 2>/tmp/jail.err
report jail $?
echo "JAIL-READBACK=$(dd if=/tmp/jdisk.img bs=1 skip=4096 count=13 2>/dev/null)"
echo "JAIL-DISK-OWNER=$(stat -c %u /tmp/jdisk.img)"
echo "RECORD-jail=$(cat /tmp/jail-exit.json 2>/dev/null)"

# virtio-net: the VMM creates the TAP; L1 gives it an address once it exists; L2 pings it.
echo "LAB-BEGIN net"
oxvirt-vmm --kernel $K --initrd $I --cmdline "$CMD oxl2=net" --memory 256 --net tap=oxtap0,mac=52:54:00:aa:bb:cc \
    </dev/null >/tmp/net.out 2>/tmp/net.err &
pid=$!
if wait_for '[ -e /sys/class/net/oxtap0 ]'; then
    ip addr add 10.0.2.1/24 dev oxtap0
    ip link set oxtap0 up
fi
finish net $pid
[ -e /sys/class/net/oxtap0 ] && echo "TAP-LEFT-BEHIND" || echo "TAP-GONE"

# pause / resume / status / poweroff through the API socket.
echo "LAB-BEGIN pause"
oxvirt-vmm --kernel $K --initrd $I --cmdline "$CMD oxl2=ticker" --memory 256 --vcpus 2 --api-socket /tmp/api.sock \
    --exit-record /tmp/pause-exit.json </dev/null >/tmp/pause.out 2>/tmp/pause.err &
pid=$!
wait_for 'grep -q "TICK 5" /tmp/pause.out 2>/dev/null' || echo "PAUSE-NO-TICKS"
echo "API-PAUSE $(oxvirt-vmm-api /tmp/api.sock pause)"
echo "API-STATUS-PAUSED $(oxvirt-vmm-api /tmp/api.sock status)"
a=$(grep -c TICK /tmp/pause.out)
sleep 3
b=$(grep -c TICK /tmp/pause.out)
echo "PAUSED-TICKS $a $b"
echo "API-RESUME $(oxvirt-vmm-api /tmp/api.sock resume)"
if wait_for "[ \$(grep -c TICK /tmp/pause.out) -gt $((b + 5)) ]"; then echo "RESUMED-TICKS-GROW"; fi
echo "API-STATUS-RUNNING $(oxvirt-vmm-api /tmp/api.sock status)"
echo "API-POWEROFF $(oxvirt-vmm-api /tmp/api.sock poweroff)"
finish pause $pid
echo "RECORD-pause=$(cat /tmp/pause-exit.json 2>/dev/null)"
[ -e /tmp/api.sock ] && echo "API-SOCKET-LEFT-BEHIND" || echo "API-SOCKET-GONE"

# SIGTERM: the VMM stops the VM at once, cleans up (API socket) and exits 0.
echo "LAB-BEGIN sigterm"
oxvirt-vmm --kernel $K --initrd $I --cmdline "$CMD oxl2=ticker" --memory 256 --api-socket /tmp/api2.sock \
    --exit-record /tmp/sigterm-exit.json </dev/null >/tmp/sigterm.out 2>/tmp/sigterm.err &
pid=$!
wait_for 'grep -q "TICK 3" /tmp/sigterm.out 2>/dev/null' || echo "SIGTERM-NO-TICKS"
kill -TERM $pid
finish sigterm $pid
echo "RECORD-sigterm=$(cat /tmp/sigterm-exit.json 2>/dev/null)"
[ -e /tmp/api2.sock ] && echo "SIGTERM-SOCKET-LEFT-BEHIND" || echo "SIGTERM-SOCKET-GONE"

# seccomp: every thread of a running VMM (main, vCPUs, API, device workers) has its filter; a forbidden call
# (the test-only OXVIRT_VMM_TEST_SECCOMP_VIOLATION hook) kills the VMM with SIGSYS.
echo "LAB-BEGIN seccomp"
# One vCPU: once (run 3 on 2026-11-22) two L2 vCPUs with these devices locked up both L1 CPUs inside KVM_RUN
# during L2's boot (L1 "soft lockup" reports, seen with the filters on); boot2/pause cover two filtered vCPUs.
oxvirt-vmm --kernel $K --initrd $I --cmdline "$CMD oxl2=ticker" --memory 256 --rng \
    --disk path=/tmp/disk.img --api-socket /tmp/api3.sock </dev/null >/tmp/seccomp.out 2>/tmp/seccomp.err &
pid=$!
wait_for 'grep -q "TICK 3" /tmp/seccomp.out 2>/dev/null' || echo "SECCOMP-NO-TICKS"
for t in /proc/$pid/task/*; do
    echo "SECCOMP-THREAD $(tr ' ' _ <$t/comm) $(awk '/^Seccomp:/ {print $2}' $t/status) $(awk '/^Seccomp_filters:/ {print $2}' $t/status)"
done
echo "SECCOMP-POWEROFF $(oxvirt-vmm-api /tmp/api3.sock poweroff)"
finish seccomp $pid
OXVIRT_VMM_TEST_SECCOMP_VIOLATION=vcpu run seccomp-kill info --memory 256
# The kernel logs every seccomp kill; the lab's only one must be the hook's socket(2) (syscall 41).
dmesg | grep 'type=1326' | sed 's/^/SECCOMP-AUDIT /'

# Saved machine state: a guest counting in a tmpfs is paused and saved (after a 13-byte header that the save
# must keep, as oxvirtd's own header), its VMM is killed, and a new VMM restores it: paused, then resumed.
echo "LAB-BEGIN snapshot"
printf 'OXVIRT-DISK-PATTERN' >/tmp/snapdisk.img
dd if=/dev/zero of=/tmp/snapdisk.img bs=1 count=0 seek=1048576 2>/dev/null
# Split on purpose: the same devices for both VMMs (no value has a space).
SNAP_DEV="--rng --disk path=/tmp/snapdisk.img --net tap=oxsnap0,mac=52:54:00:aa:bb:01"
oxvirt-vmm --kernel $K --initrd $I --cmdline "$CMD oxl2=counter" --memory 256 --vcpus 2 $SNAP_DEV --api-socket /tmp/snap.sock \
    </dev/null >/tmp/snapshot.out 2>/tmp/snapshot.err &
pid=$!
wait_for 'grep -q "^COUNT 25 " /tmp/snapshot.out 2>/dev/null' || echo "SNAP-NO-COUNT"
printf 'DAEMON-HEADER' >/tmp/snap.state
echo "SNAP-SAVE-RUNNING-REFUSED=$(oxvirt-vmm-api /tmp/snap.sock '{"command":"save","path":"/tmp/snap.state","offset":13}')"
echo "SNAP-PAUSE=$(oxvirt-vmm-api /tmp/snap.sock pause)"
echo "SNAP-SAVE=$(oxvirt-vmm-api /tmp/snap.sock '{"command":"save","path":"/tmp/snap.state","offset":13}')"
kill -KILL $pid
finish snapshot $pid
echo "SNAP-HEADER=$(head -c 13 /tmp/snap.state)"
echo "SNAP-STATE-BYTES=$(stat -c %s /tmp/snap.state)"
# Let the TAP of the killed VMM go before the new one asks for the same name.
wait_for '[ ! -e /sys/class/net/oxsnap0 ]'
echo "LAB-BEGIN restored"
t0=$(cut -d' ' -f1 /proc/uptime)
oxvirt-vmm --kernel $K --initrd $I --cmdline "$CMD oxl2=counter" --memory 256 --vcpus 2 $SNAP_DEV --api-socket /tmp/snap2.sock \
    --restore /tmp/snap.state --restore-offset 13 </dev/null >/tmp/restored.out 2>/tmp/restored.err &
pid=$!
wait_for '[ -S /tmp/snap2.sock ] && oxvirt-vmm-api /tmp/snap2.sock status >/dev/null 2>&1'
echo "SNAP-STATUS-RESTORED=$(oxvirt-vmm-api /tmp/snap2.sock status)"
echo "SNAP-RESUME=$(oxvirt-vmm-api /tmp/snap2.sock resume)"
t1=$(cut -d' ' -f1 /proc/uptime)
echo "SNAP-RESTORE-TO-RUNNING-MS=$(awk -v a=$t0 -v b=$t1 'BEGIN { printf "%d", (b - a) * 1000 }')"
wait_for '[ $(grep -c "^BLK " /tmp/restored.out) -ge 2 ]' || echo "SNAP-NO-COUNT-AFTER-RESTORE"
echo "SNAP-POWEROFF=$(oxvirt-vmm-api /tmp/snap2.sock poweroff)"
finish restored $pid
# A stream cut short is refused with a clear error, before anything runs.
head -c 100000 /tmp/snap.state >/tmp/snap-short.state
fail snap-truncated --kernel $K --initrd $I --memory 256 --vcpus 2 $SNAP_DEV --api-socket /tmp/snap3.sock \
    --restore /tmp/snap-short.state --restore-offset 13
# So is a machine that is not the saved one.
fail snap-mismatch --kernel $K --initrd $I --memory 512 --vcpus 2 $SNAP_DEV --api-socket /tmp/snap3.sock \
    --restore /tmp/snap.state --restore-offset 13

# Bad input: refused with one clear line, nothing started.
fail err-nokernel --kernel /nonexistent/vmlinuz --memory 256
fail err-notkernel --kernel /lab/l2/initramfs.img --memory 256
fail err-memory --kernel $K --initrd $I --memory 100000000
fail err-vcpus --kernel $K --initrd $I --memory 256 --vcpus 100000
fail err-disk --kernel $K --initrd $I --memory 256 --disk path=/nonexistent/disk.img --exit-record /tmp/err-disk-exit.json
echo "RECORD-err-disk=$(cat /tmp/err-disk-exit.json 2>/dev/null)"
mkdir -p /ro && mount -t tmpfs tmpfs /ro && dd if=/dev/zero of=/ro/disk.img bs=4096 count=16 2>/dev/null && mount -o remount,ro /ro
fail err-rodisk --kernel $K --initrd $I --memory 256 --disk path=/ro/disk.img

# pidof matches the process name, so busybox timeout's watchdog (named timeout) is not counted.
echo "LEFTOVER-VMM=$(pidof oxvirt-vmm | wc -w)"
exit 0
