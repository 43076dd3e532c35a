#!/bin/sh
# Runs inside the L1 guest of tests/native_lab.rs (QEMU TCG -cpu max, so kvm-amd gives real KVM):
# oxvirtd runs the guest kit as a native domain (oxvirt-vmm) and the oxvirt CLI drives it, as a user
# would. Every check prints "CHECK <name> ok" or "CHECK <name> FAIL"; the harness asserts on them.
export PATH=/lab/bin:$PATH
# Heartbeat for the harness (oxvirt_testkit::lab::run_l1): a console silent for 90 s means L1 froze.
(while :; do echo LAB-HEARTBEAT; sleep 10; done) &
# A console session that ended must fail the write, not kill this script.
trap '' PIPE
modprobe kvm-amd 2>/dev/null
if [ ! -c /dev/kvm ]; then
    echo "LAB-FATAL /dev/kvm missing after loading kvm-amd"
    exit 1
fi
S=/tmp/ox
SOCK=/tmp/oxvirtd.sock
UUID=6f1d2c3b-4a59-4e6f-8a7b-9c0d1e2f3a4b
LOG=$S/run/$UUID/console.log

ox() { oxvirt --socket $SOCK "$@"; }

wait_for() {
    n=0
    while [ $n -lt 900 ]; do
        eval "$1" && return 0
        sleep 0.1
        n=$((n + 1))
    done
    return 1
}

# What oxvirtd and the VMM said, for a failure's diagnosis.
dump() {
    dmesg | grep -iE 'audit|seccomp|segfault' | tail -n 10 | sed 's/^/[dmesg] /'
    sed 's/^/[oxvirtd] /' /tmp/oxvirtd.log | tail -n 80
    [ -f /tmp/oxvirtd-b.log ] && sed 's/^/[oxvirtd-b] /' /tmp/oxvirtd-b.log | tail -n 60
    for f in $S/run/*/vmm.log $S/run/*/console.log /tmp/oxb/run/*/vmm.log; do
        [ -f $f ] && sed "s|^|[$(basename $f)] |" $f | tail -n 40
    done
}

check() {
    if eval "$2"; then echo "CHECK $1 ok"; else echo "CHECK $1 FAIL"; fi
}

# require NAME COND: a check the rest depends on; on failure, diagnose and stop.
require() {
    if eval "$2"; then echo "CHECK $1 ok"; else
        echo "CHECK $1 FAIL"
        dump
        exit 1
    fi
}

# run_ok NAME CMD...: the command's output, then whether it succeeded.
run_ok() {
    name=$1
    shift
    "$@" >/tmp/cmd.out 2>&1
    rc=$?
    awk -v p="[$name] " '{ print p $0 }' /tmp/cmd.out # awk ends every line, even an unterminated last one
    if [ $rc -eq 0 ]; then echo "CHECK $name ok"; else echo "CHECK $name FAIL rc=$rc"; fi
}

# log_answer LOG TAG: the last value a guest printed for TAG (TAG=value, values are words and
# numbers; the echo of the typed command has `$(` there instead) in the console log LOG.
log_answer() { tr -d '\r' <$1 | grep -ao "$2=[A-Za-z0-9-][A-Za-z0-9-]*" | tail -n 1 | cut -d= -f2; }
# console_say DOMAIN N CMD: a new console session N on DOMAIN (the previous one on descriptor 3 is
# closed) types CMD; more lines go to descriptor 3.
console_say() {
    exec 3>&-
    mkfifo /tmp/cin$2
    ox console $1 </tmp/cin$2 >/tmp/con$2 2>&1 &
    exec 3>/tmp/cin$2
    echo "$3" >&3
}

# gone PID: the process ended (a zombie counts as ended).
gone() { [ ! -d /proc/$1 ] || grep -q ') Z' /proc/$1/stat 2>/dev/null; }
state_is() { ox list --all | grep -Eq "nat +$1\$"; }
# The guest's log writer (oxvirtd __guest-log-writer, working in the run directory) filling vmm.log
# from the VMM's stdout/stderr (a zombie has no cwd, so it does not count).
vmm_log_writer() {
    for p in /proc/[0-9]*; do
        [ "$(readlink $p/cwd 2>/dev/null)" = "$S/run/$UUID" ] &&
            grep -q __guest-log-writer $p/cmdline 2>/dev/null &&
            grep -q vmm.log $p/cmdline 2>/dev/null && return 0
    done
    return 1
}
booted_count() { grep -c OXVIRT-GUEST-BOOTED $LOG 2>/dev/null || echo 0; }

# start_daemon [FLAG...]: oxvirtd with the lab's settings and FLAGs.
start_daemon() {
    oxvirtd --socket $SOCK --state-dir $S --no-default-network --log-level debug "$@" >>/tmp/oxvirtd.log 2>&1 &
    DPID=$!
    wait_for "ox list >/dev/null 2>&1" || echo "LAB-FATAL oxvirtd did not come up"
}

# console N: an `oxvirt console` session fed from a FIFO on descriptor 3, output in /tmp/conN.
console() {
    mkfifo /tmp/cin$1
    ox console nat </tmp/cin$1 >/tmp/con$1 2>&1 &
    CPID=$!
    exec 3>/tmp/cin$1
}

dd if=/dev/zero of=/tmp/disk.raw bs=1M count=8 2>/dev/null
# The domain's <interface type='bridge'>: oxvirtd's network layer puts a TAP on br0 (inside L1).
modprobe tun 2>/dev/null
modprobe bridge 2>/dev/null
ip link add br0 type bridge
ip addr add 10.0.2.1/24 dev br0
ip link set br0 up
start_daemon

# oxvirt host validate on real KVM (kvm-amd): hardware virtualization and a hardware KVM pass, and
# nested is reported as the module says.
oxvirt host validate >/tmp/validate.out 2>&1
sed 's/^/[validate] /' /tmp/validate.out
check host-validate-hardware "grep -Eq 'Checking for hardware virtualization +: PASS' /tmp/validate.out"
check host-validate-kvm "grep -Eq 'Checking if /dev/kvm runs guests as hardware KVM +: PASS' /tmp/validate.out"
case $(cat /sys/module/kvm_amd/parameters/nested 2>/dev/null) in 1 | Y) NESTED=PASS ;; *) NESTED=WARN ;; esac
check host-validate-nested "grep -Eq 'Checking for nested virtualization +: $NESTED' /tmp/validate.out"

run_ok define ox define /lab/nat.xml
run_ok start ox start nat
require booted "wait_for 'grep -q OXVIRT-GUEST-BOOTED $LOG'"
ox list --all | sed 's/^/[list] /'
check list-running "state_is running"
check vmm-log-writer "vmm_log_writer && [ -f $S/run/$UUID/vmm.log ]"
ox dominfo nat >/tmp/dominfo 2>&1
sed 's/^/[dominfo] /' /tmp/dominfo
check dominfo-engine "grep -Eq '^Engine: +native' /tmp/dominfo"
check dominfo-accel "grep -Eq '^Accel: +kvm' /tmp/dominfo"

console 1
echo 'echo MARK-$((6*7))' >&3
check console-answers "wait_for 'grep -q MARK-42 /tmp/con1'"
echo 'echo DISK-$(cat /sys/block/vda/size)' >&3
check guest-sees-disk "wait_for 'grep -q DISK-16384 /tmp/con1'"
echo 'ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0; ping -c 2 -W 10 10.0.2.1 >/dev/null && echo PING-$((3*11))' >&3
check guest-pings-bridge "wait_for 'grep -q PING-33 /tmp/con1'"
# The VMM runs jailed (oxvirtd's default): its /proc, and the guest's disk.
. /lab/jail.sh

run_ok suspend ox suspend nat
check list-paused "state_is paused"
echo 'echo PAUSE-$((5*5))' >&3
# A paused guest cannot answer: watch the console for a while.
sleep 3
check silent-while-paused "! grep -q PAUSE-25 /tmp/con1"
run_ok resume ox resume nat
check answers-after-resume "wait_for 'grep -q PAUSE-25 /tmp/con1'"
check running-after-resume "state_is running"

# The guest reboots itself: the VMM exits with status 3 and on_reboot=restart starts it again.
echo 'reboot -f' >&3
check console-closes-on-exit "wait_for 'gone $CPID'"
exec 3>&-
check rebooted "wait_for '[ \$(booted_count) -ge 2 ]'"
check running-after-reboot "wait_for 'state_is running'"

# oxvirtd dies; the guest keeps running and the restarted oxvirtd takes it back.
VMPID=$(cat $S/run/$UUID/vmm.pid)
kill -9 $DPID
wait $DPID 2>/dev/null
check vmm-survives-oxvirtd "! gone $VMPID"
check vmm-log-writer-survives-oxvirtd "vmm_log_writer"
start_daemon
check reattached-running "state_is running"
console 2
echo 'echo AGAIN-$((7*8))' >&3
check console-after-restart "wait_for 'grep -q AGAIN-56 /tmp/con2'"
run_ok suspend-after-restart ox suspend nat
run_ok resume-after-restart ox resume nat

run_ok shutdown ox shutdown --timeout 60 nat
check shut-off "state_is 'shut off'"
check vmm-gone "wait_for 'gone $VMPID'"
check vmm-log-writer-gone "wait_for '! vmm_log_writer'"
# How it ended, as the VMM recorded it for oxvirtd (which was not its parent any more).
check exit-record-poweroff "grep -q '\"guest-poweroff\"' $S/run/$UUID/vmm-exit.json"
exec 3>&-

# oxvirtd --no-sandbox: the VMM runs as root in the host's root (its seccomp filters stay).
kill $DPID
wait $DPID 2>/dev/null
start_daemon --no-sandbox
run_ok start-again ox start nat
check running-again "state_is running"
NPID=$(cat $S/run/$UUID/vmm.pid)
grep -E '^(Uid|NSpid|NoNewPrivs|Seccomp):' /proc/$NPID/status | sed 's/^/[no-sandbox-status] /'
check no-sandbox-unjailed "[ \"\$(field $NPID Uid)\" = '0 0 0 0' ] && [ -d /proc/$NPID/root/lab ] && [ \"\$(field $NPID NSpid)\" = $NPID ]"
check no-sandbox-seccomp "[ \"\$(field $NPID Seccomp)\" = 2 ]"
# Destroyed while it boots: no need to wait for the guest.
run_ok destroy ox destroy nat
check destroyed "state_is 'shut off'"
check exit-record-host-stop "wait_for 'grep -q host-stop $S/run/$UUID/vmm-exit.json 2>/dev/null'"
# The other scenarios run jailed again.
kill $DPID
wait $DPID 2>/dev/null
start_daemon
run_ok undefine ox undefine nat
check undefined "! ox list --all | grep -q nat"
check taps-removed "[ -z \"\$(ls /sys/class/net | grep -v -e '^lo\$' -e '^br0\$')\" ]"
ls /sys/class/net | sed 's/^/[netdevs] /'

echo "LEFTOVER-VMM=$(pidof oxvirt-vmm | wc -w)"

# Snapshots, save/restore and managed save of a second native domain.
. /lab/snapshots.sh
# The balloon, memory backing and vCPU threads of native domains.
. /lab/balloon.sh
# Migrations of a native domain to a second oxvirtd and back.
. /lab/migrate.sh
# A native domain's cgroups (mounts cgroup v2: last, so the scenarios above run without).
. /lab/cgroups.sh
kill $DPID
wait $DPID 2>/dev/null
dump
exit 0
