#!/bin/sh
# Runs inside the L1 guest of benches/native-restore.sh (QEMU TCG, -cpu max): loads kvm-amd, boots the guest
# kit (256 MiB, 1 vCPU) under oxvirt-vmm to its prompt, has the guest fill FILL_MIB of tmpfs with random data,
# pauses and saves the machine state through the API, ends that VMM; then, run after run, starts
# `oxvirt-vmm --restore` from the state, resumes it through the API and types a command on its serial console
# (oxbench-time restore). Prints "RESULT <what> <kind> <run> KEY=value" lines; run 0 is an uncounted warm-up.
. /lab/common.sh
FILL_MIB=64
API=/tmp/vmm-api.sock
# L1 runs from its initramfs: the state file is in RAM (rootfs), so save and restore never wait for a disk.
STATE=/tmp/l2.state

fatal() {
    echo "BENCH-FATAL $*"
    exit 1
}

# vmm PREFIX...: PREFIX followed by oxvirt-vmm's command line for this machine (EXTRA: more options).
vmm() {
    "$@" /lab/bin/oxvirt-vmm --kernel $K --initrd $I --memory $MEM --vcpus 1 --cmdline "$CMD" --api-socket $API $EXTRA
}

# wait_console FILE TEXT SECONDS: until FILE (a console log) contains TEXT.
wait_console() {
    n=0
    until grep -qF "$2" "$1"; do
        n=$((n + 1))
        [ $n -le "$3" ] || return 1
        sleep 1
    done
}

EXTRA="--restore $STATE"
echo "BENCH-CMD-restore=$(vmm echo)"
EXTRA=

# 1. Boot, fill memory, pause, save, stop. The guest's console input is a FIFO held open on fd 3.
rm -f $API /tmp/l2.in
mkfifo /tmp/l2.in
vmm </tmp/l2.in >/tmp/l2.console 2>/tmp/l2.err &
VPID=$!
exec 3>/tmp/l2.in
wait_console /tmp/l2.console "$PROMPT" 600 || fatal "the guest did not reach its prompt: $(tail -5 /tmp/l2.console)"
# \$ keeps the expansions for the guest's shell: the console echoes the line as typed, the answer differs.
echo "mkdir -p /fill && mount -t tmpfs -o size=$((FILL_MIB + 16))m tmpfs /fill && dd if=/dev/urandom of=/fill/data bs=1M count=$FILL_MIB 2>/dev/null; echo FILLED-\$((40+2)) \$(grep -E '^(MemFree|Shmem):' /proc/meminfo | tr -s ' ' | tr '\n' ' ')" >&3
wait_console /tmp/l2.console FILLED-42 900 || fatal "the guest did not fill its tmpfs: $(tail -5 /tmp/l2.console)"
echo "BENCH-GUEST-FILLED=$(grep -a 'FILLED-42' /tmp/l2.console | tr -d '\r' | tail -1)"
# The prompt after the fill: the state is saved with the shell waiting for input.
sleep 2
oxbench-time elapsed -- oxvirt-vmm-api $API pause 2>&1 | result prep pause 0
: >$STATE
oxbench-time elapsed -- oxvirt-vmm-api $API "{\"command\":\"save\",\"path\":\"$STATE\",\"offset\":0}" 2>&1 | result prep save 0
echo "RESULT prep save 0 STATE_BYTES=$(wc -c <$STATE)"
oxvirt-vmm-api $API stop >/dev/null
wait $VPID
echo "BENCH-PREP-EXIT=$?"
exec 3>&-
sed 's/^/VMM-PREP-LOG /' /tmp/l2.err
[ -s $STATE ] || fatal "no state was saved"

# 2. Restore, resume, type a command, RUNS + 1 times.
EXTRA="--restore $STATE"
i=0
while [ $i -le "$RUNS" ]; do
    rm -f $API
    vmm oxbench-time restore 120 $API 'echo RESTORED-$((40+2))' RESTORED-42 -- 2>&1 | result oxvirt restore $i
    i=$((i + 1))
done
echo "LEFTOVER-VMM=$(pidof oxvirt-vmm | wc -w)"
# 3. The state out to the host (its restore on the host's own /dev/kvm), on the raw disk it gave L1, if any.
if [ -b /dev/vda ]; then
    dd if=$STATE of=/dev/vda bs=1M 2>/dev/null && sync && echo "BENCH-EXPORTED=$(wc -c <$STATE)"
fi
exit 0
