# Sourced by l1.sh after balloon.sh (its helpers and $S, $SOCK are in scope): a native domain's cgroups
# (tests/native_lab.rs, native_guests_get_cgroups): oxvirtd puts its jailed oxvirt-vmm in the guest's
# groups before the guest's first instruction, the vCPU thread alone in vcpu0 and every other thread in
# emulator, with <cputune>'s and <memtune>'s values in the kernel's files; a busy loop in the guest gets
# about its 20% quota of a CPU (from the group's cpu.stat); the VMM's user can write none of its groups'
# files; schedinfo (which lifts the quota for the boot), memtune and blkiotune work live; a hard
# limit lowered under what the guest uses makes the kernel OOM-kill the VMM (libvirt's behaviour:
# nothing keeps a guest under its limit), and the domain is shut off with its groups gone.
#
# L1's init mounts no cgroup file system (proc, sysfs and devtmpfs only). Its kernel (Debian's) offers
# both versions: this mounts cgroup v2, one hierarchy, at /sys/fs/cgroup (the hosts this project runs on
# mount v1, which crates/cli/tests/cgroups.rs covers with QEMU). oxvirtd reads the mount table at each
# start: the domains of the scenarios before ran without groups of their own.
CUUID=ad5b6a7f-8e9d-4a03-9ecf-3a4b5c6d7e8f
CRUN=$S/run/$CUUID
CLOG=$CRUN/console.log
CG=/sys/fs/cgroup
G=$CG/oxvirt/$CUUID
csay() { console_say cg "$@"; }
# vcpu_tid PID N: the thread id (L1's, the host's) of the VMM PID's vCPU N, named "vcpu N".
vcpu_tid() {
    for t in /proc/$1/task/*; do
        [ "$(cat $t/comm 2>/dev/null)" = "vcpu $2" ] && echo ${t##*/}
    done
}
# emulator_holds_the_rest: every thread of the VMM but vCPU 0's is in the emulator group (one that
# ended meanwhile does not count).
emulator_holds_the_rest() {
    for t in /proc/$CGPID/task/*; do
        [ "${t##*/}" = "$VTID" ] && continue
        where=$(cat $t/cgroup 2>/dev/null) || continue
        if [ "$where" != "0::/oxvirt/$CUUID/emulator" ]; then
            echo "[cg] thread ${t##*/} ($(cat $t/comm 2>/dev/null)) is in $where"
            return 1
        fi
    done
}
# loose_files: what in the guest's groups is not root's, or is writable by group or others.
loose_files() { stat -c '%u %a %n' $G $G/* $G/*/* | awk '$1 != 0 || $2 ~ /[2367].$/ || $2 ~ /[2367]$/'; }
# as_vmm_user CMD: CMD run as the VMM's user and group, without capabilities (as the VMM runs); it
# must fail for lack of permission (not for a value the kernel would refuse even from root).
as_vmm_user() {
    if out=$(nsenter -S $VUID -G $VUID sh -c "$1" 2>&1); then
        echo "[cg] as the VMM's user: $1: done"
        return 1
    fi
    case $out in
    *"Permission denied"*) echo "[cg denied] $out" ;;
    *) echo "[cg] as the VMM's user: $1: $out" && return 1 ;;
    esac
}
# vmm_user_writes: moving a process (its own shell) into or out of the groups, changing a limit,
# making a group: every attempt is refused.
vmm_user_writes() {
    for f in $G/cgroup.procs $G/cgroup.threads $G/memory.max $G/cpu.weight $G/vcpu0/cpu.max \
        $G/vcpu0/cgroup.threads $G/emulator/cpu.max $CG/cgroup.procs $CG/oxvirt/cgroup.procs; do
        as_vmm_user "echo \$\$ > $f" || return 1
    done
    as_vmm_user "mkdir $G/vcpu0/escape"
}
cg_shut_off() { ox list --all | grep -Eq ' cg +shut off$'; }
usage_us() { awk '$1 == "usage_usec" { print $2 }' $G/vcpu0/cpu.stat; }
throttled() { awk '$1 == "nr_throttled" { print $2 }' $G/vcpu0/cpu.stat; }
# Centiseconds since L1 booted.
uptime_cs() { cut -d' ' -f1 </proc/uptime | tr -d .; }

mount -t cgroup2 cgroup2 $CG
echo "[cg] cgroup v2 controllers: $(cat $CG/cgroup.controllers)"
require cg-v2-mounted "grep -q ' $CG cgroup2 ' /proc/self/mounts && grep -qw cpu $CG/cgroup.controllers && grep -qw memory $CG/cgroup.controllers"

dd if=/dev/zero of=/tmp/cg.raw bs=1M count=8 2>/dev/null
run_ok cg-define ox define /lab/cg.xml
run_ok cg-start ox start cg
CGPID=$(cat $CRUN/vmm.pid)
VTID=$(vcpu_tid $CGPID 0)
VUID=$(awk '$1 == "Uid:" { print $2 }' /proc/$CGPID/status)
echo "[cg] VMM $CGPID (uid $VUID), vCPU 0 thread $VTID"
sed 's/^/[cg vmm cgroup] /' /proc/$CGPID/cgroup
for f in cpu.weight memory.max vcpu0/cpu.max emulator/cpu.max vcpu0/cgroup.threads; do
    echo "[cg] $f: $(cat $G/$f 2>&1)"
done
check cg-vmm-in-group "[ \"\$(cat /proc/$CGPID/cgroup)\" = '0::/oxvirt/$CUUID/emulator' ]"
check cg-vcpu0-thread "[ -n '$VTID' ] && [ \"\$(cat /proc/$CGPID/task/$VTID/cgroup)\" = '0::/oxvirt/$CUUID/vcpu0' ] && [ \"\$(cat $G/vcpu0/cgroup.threads)\" = '$VTID' ]"
check cg-emulator-threads "emulator_holds_the_rest"
# shares 512 is cpu.weight 20 (the kernel's mapping); quotas per period in µs; 512 MiB in bytes.
check cg-values "[ \"\$(cat $G/cpu.weight)\" = 20 ] && [ \"\$(cat $G/vcpu0/cpu.max)\" = '20000 100000' ] && [ \"\$(cat $G/emulator/cpu.max)\" = '50000 100000' ] && [ \"\$(cat $G/memory.max)\" = 536870912 ]"
# A boot at a fifth of L1's one CPU would take minutes: the quota is lifted live for the boot, and
# set live again for the busy loop.
run_ok cg-schedinfo-lift ox schedinfo cg --live --set vcpu_quota=-1
check cg-schedinfo-lifted "[ \"\$(cat $G/vcpu0/cpu.max)\" = 'max 100000' ]"
require cg-booted "wait_for 'grep -aq OXVIRT-GUEST-BOOTED $CLOG'"

# The jail's user cannot touch its groups (its root holds no /sys either: jail.sh).
loose_files | sed 's/^/[cg loose] /'
check cg-files-root-only "[ -z \"\$(loose_files)\" ]"
check cg-vmm-unprivileged "[ '$VUID' -ne 0 ] && grep -Eq '^CapEff:[[:space:]]+0+\$' /proc/$CGPID/status"
check cg-vmm-cannot-write "vmm_user_writes && [ \"\$(cat $G/vcpu0/cpu.max)\" = 'max 100000' ] && [ ! -d $G/vcpu0/escape ]"

# A busy loop in the guest under the definition's quota again: its vCPU gets about a fifth of L1's
# one CPU (loose bounds: the quota is enforced per 100 ms period; a 10 s window).
csay 40 'while :; do :; done &'
run_ok cg-schedinfo-quota ox schedinfo cg --live --set vcpu_quota=20000
check cg-schedinfo-file "[ \"\$(cat $G/vcpu0/cpu.max)\" = '20000 100000' ]"
U0=$(usage_us)
check cg-loop-runs "wait_for '[ \$(usage_us) -gt $((U0 + 300000)) ]'"
U1=$(usage_us)
T1=$(uptime_cs)
sleep 10
U2=$(usage_us)
T2=$(uptime_cs)
# Per mille of one CPU: µs used over the window's µs (centiseconds * 10000), times 1000.
USED=$(((U2 - U1) / ((T2 - T1) * 10)))
echo "[cg] vCPU 0 used $USED per mille of a CPU in $((T2 - T1)) cs under a quota of 200; throttled $(throttled) times"
check cg-quota-holds "[ $USED -gt 50 ] && [ $USED -lt 400 ] && [ \$(throttled) -gt 0 ]"

# The verbs, live: the kernel's files change, and the running guest's definition says so.
run_ok cg-schedinfo-live ox schedinfo cg --live --set vcpu_quota=50000
check cg-schedinfo-changed "[ \"\$(cat $G/vcpu0/cpu.max)\" = '50000 100000' ]"
ox schedinfo cg >/tmp/cg-sched 2>&1
sed 's/^/[schedinfo] /' /tmp/cg-sched
check cg-schedinfo-shows "grep -Eq '^vcpu_quota +: 50000\$' /tmp/cg-sched && grep -Eq '^cpu_shares +: 512\$' /tmp/cg-sched"
run_ok cg-memtune-live ox memtune cg --live --soft-limit 1G
check cg-memtune-file "[ \"\$(cat $G/memory.high)\" = 1073741824 ]"
check cg-memtune-shows "ox memtune cg | grep -Eq '^soft_limit +: 1048576\$'"
run_ok cg-blkiotune-live ox blkiotune cg --live
check cg-live-xml "ox dumpxml cg | grep -q '<quota>50000</quota>' && ox dumpxml --inactive cg | grep -q '<quota>20000</quota>'"

# The hard limit lowered under what the guest uses: the kernel OOM-kills the VMM at once.
echo "[cg] memory.current $(cat $G/memory.current)"
# (Whether the verb itself answers success depends on whether the guest's end, which removes its
# groups, comes before it has written the other limits: not checked.)
ox memtune cg --live --hard-limit 16M 2>&1 | sed 's/^/[cg memtune 16M] /'
check cg-oom-killed "wait_for 'gone $CGPID'"
dmesg | grep -i 'out of memory' | tail -n 3 | sed 's/^/[cg dmesg] /'
check cg-oom-by-kernel "dmesg | grep -q 'Memory cgroup out of memory: Killed process $CGPID '"
check cg-oom-shut-off "wait_for cg_shut_off"
check cg-groups-removed "wait_for '[ ! -d $G ]'"
exec 3>&-
run_ok cg-undefine ox undefine cg
echo "CG-LEFTOVER-VMM=$(pidof oxvirt-vmm | wc -w)"
