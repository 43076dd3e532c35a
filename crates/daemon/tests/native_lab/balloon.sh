# Sourced by l1.sh after snapshots.sh (its helpers and $S, $SOCK are in scope): the virtio balloon
# and the disk counters of a native domain through oxvirtd, as a user drives them
# (tests/native_lab.rs, native_balloon_and_memory_backing): `ox setmem --live` takes the guest's
# MemTotal down to half and back (and the VMM's own API agrees), above the maximum it is refused
# with nothing changed, `ox dommemstat` shows virsh's keys and `--period` makes the guest refresh
# them; `ox domblkstat` counts what the guest read and wrote with dd; guest RAM is mergeable (KSM,
# VmFlags `mg`) unless <nosharepages/>; the vCPU threads are found (vcpuinfo, vcpupin,
# emulatorpin).
BUUID=8b3f4e5d-6c7b-4081-9cad-1e2f3a4b5c6d
BRUN=$S/run/$BUUID
BLOG=$BRUN/console.log
banswer() { log_answer $BLOG $1; }
banswered() { [ -n "$(banswer $1)" ]; }
# bsay N CMD: a console session N on the balloon domain types CMD.
bsay() { console_say bal "$@"; }
vmm_api() { oxvirt-vmm-api $BRUN/vmm-api.sock "$1"; }
# memstat KEY: the value of KEY in `ox dommemstat bal` (empty if it has none).
memstat() { ox dommemstat bal 2>/dev/null | awk -v k="$1" '$1 == k { print $2 }'; }
# actual_is KIB: dommemstat reports the guest at KIB.
actual_is() { [ "$(memstat actual)" = "$1" ]; }
# vmm_actual_is KIB: the VMM's own balloon report says the same.
vmm_actual_is() { vmm_api balloon-stats | grep -q "\"actual_kib\":$1,"; }
# stats_have KEY: dommemstat shows KEY (the output is left in /tmp/bstats).
stats_have() { ox dommemstat bal >/tmp/bstats 2>&1 && grep -q "^$1 " /tmp/bstats; }
# blkstat KEY: the value of KEY in `ox domblkstat bal vda`.
blkstat() { ox domblkstat bal vda 2>/dev/null | awk -v k="$1" '$1 == "vda" && $2 == k { print $3 }'; }
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
sed 's/^/[dommemstat] /' /tmp/bstats
check bal-stats-guest-keys "stats_have available && stats_have major_fault && stats_have usable && stats_have last_update && stats_have rss"
check bal-actual-full "actual_is 262144"

# Half of the guest's 256 MiB goes back to the host.
run_ok bal-set-half ox setmem bal 128M --live
check bal-actual-half "wait_for 'actual_is 131072'"
check bal-vmm-agrees-half "vmm_actual_is 131072 && vmm_api balloon-stats | grep -q '\"target_kib\":131072,'"
echo 'echo MEMHALF='"$MEMTOTAL" >&3
check bal-memtotal-drops "wait_for 'banswered MEMHALF' && [ \$(banswer MEMHALF) -le \$(($MEMBEFORE - 128 * 1024 + 1024)) ]"
echo "[balloon] MemTotal $MEMBEFORE KiB, with the balloon at half $(banswer MEMHALF) KiB"
check bal-live-xml-half "ox dumpxml bal | grep -q \"<currentMemory unit='KiB'>131072</currentMemory>\""
# Above the maximum: refused with exit 1 and a clear error, nothing changes.
ox setmem bal 300000 --live >/tmp/bref 2>&1
REFUSED=$?
sed 's/^/[setmem above] /' /tmp/bref
check bal-refused-above "[ $REFUSED -eq 1 ] && grep -q 'higher than max memory' /tmp/bref"
check bal-refused-unchanged "actual_is 131072 && vmm_api balloon-stats | grep -q '\"target_kib\":131072,' && ox dumpxml bal | grep -q \"<currentMemory unit='KiB'>131072</currentMemory>\""
# And back: the guest has all its memory again.
run_ok bal-set-full ox setmem bal 262144 --live
check bal-actual-back "wait_for 'actual_is 262144'"
check bal-vmm-agrees-back "vmm_actual_is 262144"
echo 'echo MEMBACK='"$MEMTOTAL" >&3
check bal-memtotal-back "wait_for 'banswered MEMBACK' && [ \$(banswer MEMBACK) -eq $MEMBEFORE ]"

# A period makes the guest refresh its statistics.
FIRST=$(memstat last_update)
run_ok bal-stats-period ox dommemstat bal --period 1 --live
check bal-stats-period-vmm "vmm_api balloon-stats | grep -q '\"stats_period_s\":1,'"
check bal-stats-refresh "wait_for '[ \"\$(memstat last_update)\" != \"$FIRST\" ]'"

# domblkstat: the guest reads 1 MiB and writes 512 KiB of its disk with direct I/O (past the
# page cache, so every byte is a request to the device) and a flush; the counters grow by at
# least that.
ox domblkstat bal vda | sed 's/^/[domblkstat before] /'
RD0=$(blkstat rd_bytes)
WR0=$(blkstat wr_bytes)
RQ0=$(blkstat rd_req)
WQ0=$(blkstat wr_req)
FL0=$(blkstat flush_operations)
check bal-blkstat-before "[ -n \"$RD0\" ] && [ -n \"$WR0\" ] && [ -n \"$FL0\" ]"
echo 'dd if=/dev/vda of=/dev/null bs=65536 count=16 iflag=direct && dd if=/dev/zero of=/dev/vda bs=65536 count=8 seek=64 oflag=direct conv=fsync && echo BLKIO=$((6*7))' >&3
check bal-blkstat-guest-io "wait_for 'banswered BLKIO' && [ \"\$(banswer BLKIO)\" = 42 ]"
ox domblkstat bal vda | sed 's/^/[domblkstat after] /'
check bal-blkstat-rd-bytes "[ \$(blkstat rd_bytes) -ge \$(($RD0 + 1048576)) ]"
check bal-blkstat-wr-bytes "[ \$(blkstat wr_bytes) -ge \$(($WR0 + 524288)) ]"
check bal-blkstat-requests "[ \$(blkstat rd_req) -gt $RQ0 ] && [ \$(blkstat wr_req) -gt $WQ0 ] && [ \$(blkstat flush_operations) -gt $FL0 ]"
check bal-blkstat-times "[ \$(blkstat rd_total_times) -gt 0 ] && [ \$(blkstat wr_total_times) -gt 0 ]"
# Without a disk: every disk's counters added up, under virsh's empty device name.
check bal-blkstat-all "ox domblkstat bal | grep -Eq '^ rd_bytes [0-9]+\$'"
# The VMM's own counters name the disk by its target.
vmm_api block-stats | sed 's/^/[block-stats] /'
check bal-blkstat-vmm "vmm_api block-stats | grep -q '\"id\":\"vda\"'"
ox domblkstat bal vdz >/tmp/bnodisk 2>&1
NODISK=$?
sed 's/^/[domblkstat vdz] /' /tmp/bnodisk
check bal-blkstat-unknown-disk "[ $NODISK -eq 1 ] && grep -q 'vdz' /tmp/bnodisk"

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
