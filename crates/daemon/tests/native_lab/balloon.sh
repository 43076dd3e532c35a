# Sourced by l1.sh after snapshots.sh (its helpers and $S, $SOCK are in scope): the virtio balloon
# of a native domain (tests/native_lab.rs, native_balloon_and_memory_backing): the target set on
# the VMM's control socket takes the guest's MemTotal down and back, its statistics come back
# with the guest's keys; guest RAM is mergeable (KSM, VmFlags `mg`) unless <nosharepages/>; the
# vCPU threads are found (vcpuinfo, vcpupin, emulatorpin).
BUUID=8b3f4e5d-6c7b-4081-9cad-1e2f3a4b5c6d
BRUN=$S/run/$BUUID
BLOG=$BRUN/console.log
banswer() { log_answer $BLOG $1; }
banswered() { [ -n "$(banswer $1)" ]; }
# bsay N CMD: a console session N on the balloon domain types CMD.
bsay() { console_say bal "$@"; }
vmm_api() { oxvirt-vmm-api $BRUN/vmm-api.sock "$1"; }
# actual_is KIB: the balloon reports the guest at KIB.
actual_is() { vmm_api balloon-stats | grep -q "\"actual_kib\":$1,"; }
last_update() { vmm_api balloon-stats | grep -o '"last_update":[0-9]*'; }
# stats_have KEY: the guest's statistics have KEY (the report is left in /tmp/bstats).
stats_have() { vmm_api balloon-stats >/tmp/bstats 2>&1 && grep -q "\"$1\"" /tmp/bstats; }
# ram_flags PID: the VmFlags of the VMM's 256 MiB guest RAM mapping.
ram_flags() {
    awk '/^[0-9a-f]+-[0-9a-f]+ /{size=0} /^Size:/{size=$2} /^VmFlags:/{if (size == 262144) print}' /proc/$1/smaps
}
MEMTOTAL='$(grep MemTotal /proc/meminfo | tr -s " " | cut -d" " -f2)'

dd if=/dev/zero of=/tmp/bal.raw bs=1M count=8 2>/dev/null
run_ok bal-define ox define /lab/bal.xml
run_ok bal-start ox start bal
BPID=$(cat $BRUN/vmm.pid)
ram_flags $BPID | sed 's/^/[bal smaps] /'
check bal-ram-mergeable "ram_flags $BPID | grep -qw mg"
require bal-booted "wait_for 'grep -aq OXVIRT-GUEST-BOOTED $BLOG'"
bsay 20 "echo BALDRV=\$(ls /sys/bus/virtio/drivers/virtio_balloon | grep -c virtio) MEMBEFORE=$MEMTOTAL"
check bal-driver "wait_for 'banswered MEMBEFORE' && [ \"\$(banswer BALDRV)\" -ge 1 ]"
MEMBEFORE=$(banswer MEMBEFORE)
# The driver's first statistics arrive when it starts.
check bal-stats-keys "wait_for 'stats_have unused'"
sed 's/^/[balloon-stats] /' /tmp/bstats
check bal-stats-guest-keys "stats_have available && stats_have major_fault && stats_have last_update"
check bal-actual-full "actual_is 262144"

# Half of the guest's 256 MiB goes back to the host.
run_ok bal-set-half vmm_api '{"command":"balloon","target_kib":131072}'
check bal-actual-half "wait_for 'actual_is 131072'"
echo 'echo MEMHALF='"$MEMTOTAL" >&3
check bal-memtotal-drops "wait_for 'banswered MEMHALF' && [ \$(banswer MEMHALF) -le \$(($MEMBEFORE - 128 * 1024 + 1024)) ]"
echo "[balloon] MemTotal $MEMBEFORE KiB, with the balloon at half $(banswer MEMHALF) KiB"
ABOVE='{"command":"balloon","target_kib":300000}'
check bal-refused-above '! vmm_api "$ABOVE" >/tmp/bref 2>&1 && grep -q "above the guest" /tmp/bref'
# And back: the guest has all its memory again.
run_ok bal-set-full vmm_api '{"command":"balloon","target_kib":262144}'
check bal-actual-back "wait_for 'actual_is 262144'"
echo 'echo MEMBACK='"$MEMTOTAL" >&3
check bal-memtotal-back "wait_for 'banswered MEMBACK' && [ \$(banswer MEMBACK) -eq $MEMBEFORE ]"

# A period makes the guest refresh its statistics.
FIRST=$(last_update)
run_ok bal-stats-period vmm_api '{"command":"balloon-stats-period","seconds":1}'
check bal-stats-refresh "wait_for '[ \"\$(last_update)\" != \"$FIRST\" ]'"

# The vCPU threads are the VMM's named ones.
run_ok bal-vcpuinfo ox vcpuinfo bal
check bal-vcpuinfo-vcpu0 "grep -Eq '^VCPU: +0' /tmp/cmd.out"
run_ok bal-vcpupin ox vcpupin bal 0 0
run_ok bal-emulatorpin ox emulatorpin bal 0
run_ok bal-destroy ox destroy bal
exec 3>&-
run_ok bal-undefine ox undefine bal

# <nosharepages/>: the same guest RAM, not mergeable.
run_ok nsp-define ox define /lab/nsp.xml
run_ok nsp-start ox start nsp
NPID=$(cat $S/run/9c4a5f6e-7d8c-4192-8dbe-2f3a4b5c6d7e/vmm.pid)
ram_flags $NPID | sed 's/^/[nsp smaps] /'
check nsp-ram-flags "ram_flags $NPID | grep -q VmFlags"
check nsp-ram-not-mergeable "! ram_flags $NPID | grep -qw mg"
run_ok nsp-destroy ox destroy nsp
run_ok nsp-undefine ox undefine nsp
echo "BAL-LEFTOVER-VMM=$(pidof oxvirt-vmm | wc -w)"
