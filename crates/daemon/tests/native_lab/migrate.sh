# Sourced by l1.sh after the balloon scenario (its helpers and $S, $SOCK, $DPID are in scope):
# migrations of a native domain between two oxvirtd in L1, live and paused (tests/native_lab.rs,
# native_guests_migrate_between_two_oxvirtd). The guest boots once, counts in a tmpfs, and
# every answer it prints carries a tag (TAG=value), read back from the console log of the
# oxvirtd it runs on. Its raw disk is at the same path for both (one file system: shared storage).
MUUID=be6c7b8a-9fae-4b14-8fd0-4b5c6d7e8f90
SB=/tmp/oxb
SOCKB=/tmp/oxvirtd-b.sock
MLOG=$S/run/$MUUID/console.log
MLOGB=$SB/run/$MUUID/console.log
oxb() { oxvirt --socket $SOCKB "$@"; }
mig_is() { ox list --all | grep -Eq " mig +$1\$"; }
migb_is() { oxb list --all | grep -Eq " mig +$1\$"; }
# The VMM of the domain run by the oxvirtd of state directory $1 lives.
mig_vmm() { [ -f $1/run/$MUUID/vmm.pid ] && ! gone "$(cat $1/run/$MUUID/vmm.pid)"; }
# (grep -c prints 0 itself when nothing matches; a missing log counts 0 too.)
mig_booted() {
    n=$(grep -ac OXVIRT-GUEST-BOOTED $1 2>/dev/null)
    echo ${n:-0}
}
# say_b N CMD: as console_say, on the second oxvirtd.
say_b() {
    exec 3>&-
    mkfifo /tmp/cin$1
    oxb console mig </tmp/cin$1 >/tmp/con$1 2>&1 &
    exec 3>/tmp/cin$1
    echo "$2" >&3
}
# counting LOG TAG BEFORE: the guest's counter, answered as TAG, is at least BEFORE + 1 (the
# guest renames each value into place: a read never sees the file empty). Each question waits 2 s
# of the guest's time before it reads the counter, which ticks every second: a counter going on
# has ticked by then, one that stopped has not.
counting() { [ -n "$3" ] && [ -n "$(log_answer $1 $2)" ] && [ "$(log_answer $1 $2)" -gt "$3" ]; }

# show_tail LOG: a guest console log's last lines, for a failed check's diagnosis (and fails).
show_tail() {
    tr -d '\r' <$1 | tail -n 20 | sed 's/^/[guest-console] /'
    return 1
}

# The second oxvirtd: its own state directory, socket and jail users.
oxvirtd --socket $SOCKB --state-dir $SB --no-default-network --native-user-range 3101000-3101999 \
    --log-level debug >>/tmp/oxvirtd-b.log 2>&1 &
BPID=$!
require mig-second-oxvirtd "wait_for 'oxb list >/dev/null 2>&1'"

dd if=/dev/zero of=/tmp/mig.raw bs=1M count=8 2>/dev/null
run_ok mig-define ox define /lab/mig.xml
run_ok mig-start ox start mig
require mig-booted "wait_for 'grep -aq OXVIRT-GUEST-BOOTED $MLOG'"
console_say mig 20 'mkdir -p /t; mount -t tmpfs t /t; echo tmpfs-M >/t/mark; (n=0; while :; do echo $n >/t/count.new; mv /t/count.new /t/count; n=$((n+1)); sleep 1; done) >/dev/null 2>&1 & sleep 2; echo MSETUP=$(cat /t/mark) MC0=$(cat /t/count)'
require mig-guest-setup "wait_for '[ \"\$(log_answer $MLOG MSETUP)\" = tmpfs-M ]'"
MC0=$(log_answer $MLOG MC0)

# Refused before anything moves: --postcopy (QEMU's; a native guest's live migration is pre-copy
# only), disk copies, a name B already has.
# refused CHECK CMD...: CMD fails (exit 1), its output in /tmp/mig.err with its status.
refused() {
    name=$1
    shift
    "$@" >/tmp/mig.err 2>&1
    echo "rc=$?" >>/tmp/mig.err
    sed "s/^/[$name] /" /tmp/mig.err
    grep -q '^rc=1$' /tmp/mig.err
}
check mig-postcopy-refused "refused migrate-postcopy ox migrate --live --postcopy mig oxvirt+unix://$SOCKB"
check mig-postcopy-says-why "grep -q 'pre-copy only' /tmp/mig.err"
check mig-postcopy-b-nothing "! oxb list --all | grep -q ' mig '"
check mig-copy-storage-refused "refused migrate-copy ox migrate --copy-storage-all mig oxvirt+unix://$SOCKB && grep -q 'copy-storage' /tmp/mig.err"
sed "s/$MUUID/be6c7b8a-9fae-4b14-8fd0-000000000001/" /lab/mig.xml >/tmp/mig-other.xml
run_ok mig-b-define-same-name oxb define /tmp/mig-other.xml
check mig-name-refused "refused migrate-name ox migrate mig oxvirt+unix://$SOCKB && grep -q \"domain 'mig' is already defined\" /tmp/mig.err"
check mig-name-b-unchanged "oxb dumpxml mig | grep -q be6c7b8a-9fae-4b14-8fd0-000000000001 && migb_is 'shut off'"
run_ok mig-b-undefine-same-name oxb undefine mig
check mig-refusals-leave-it-running "mig_is running && mig_vmm $S && ! mig_vmm $SB"
echo 'sleep 2; echo MC1=$(cat /t/count)' >&3
check mig-counts-after-refusals "wait_for 'counting $MLOG MC1 $MC0'"
MC1=$(log_answer $MLOG MC1)

# Live, aborted while its state goes at 1 MiB/s: the guest never stopped, in the same VMM.
MPID0=$(cat $S/run/$MUUID/vmm.pid)
ox migrate --live --bandwidth 1 mig oxvirt+unix://$SOCKB >/tmp/miglive.out 2>&1 &
MIGPID=$!
check mig-live-jobinfo-progress "wait_for \"ox domjobinfo mig 2>/dev/null | grep -Eq '^Job type: +Unbounded' && ox domjobinfo mig 2>/dev/null | grep -Eq '^Memory processed: +0*[1-9]'\""
ox domjobinfo mig >/tmp/jobinfo 2>&1
sed 's/^/[domjobinfo-live] /' /tmp/jobinfo
# A live stream's length is not known before it ends: no total is shown rather than a made-up one.
check mig-live-jobinfo-no-total "grep -Eq '^Job type: +Unbounded' /tmp/jobinfo && ! grep -Eq '^Memory total: +0*[1-9]' /tmp/jobinfo"
check mig-live-runs-meanwhile "mig_is running && [ \"\$(cat $S/run/$MUUID/vmm.pid)\" = $MPID0 ]"
run_ok mig-live-jobabort ox domjobabort mig
wait $MIGPID
MIGRC=$?
sed 's/^/[migrate-live-aborted] /' /tmp/miglive.out
check mig-live-abort-fails "[ $MIGRC -eq 1 ] && grep -q 'aborted (domjobabort)' /tmp/miglive.out && grep -q 'goes on running here' /tmp/miglive.out"
check mig-live-abort-same-vmm "mig_is running && [ \"\$(cat $S/run/$MUUID/vmm.pid)\" = $MPID0 ] && mig_vmm $S"
check mig-live-abort-job-cancelled "ox domjobinfo mig | grep -Eq '^Job type: +Cancelled'"
check mig-live-abort-b-nothing "wait_for '! oxb list --all | grep -q \" mig \"' && ! mig_vmm $SB && [ -z \"\$(ls $SB/migrations 2>/dev/null)\" ]"
echo 'sleep 2; echo MCL=$(cat /t/count)' >&3
check mig-live-abort-counter-goes-on "wait_for 'counting $MLOG MCL $MC1' || show_tail $MLOG"
MC1=$(log_answer $MLOG MCL)

# Aborted while its state goes at 1 MiB/s: the guest runs here again, from that state.
ox migrate --bandwidth 1 mig oxvirt+unix://$SOCKB >/tmp/migabort.out 2>&1 &
MIGPID=$!
# (The live migration's job, cancelled, is what domjobinfo shows until this one has begun.)
check mig-jobinfo-progress "wait_for \"ox domjobinfo mig 2>/dev/null | grep -Eq '^Job type: +Unbounded' && ox domjobinfo mig 2>/dev/null | grep -Eq '^Memory processed: +0*[1-9]'\""
ox domjobinfo mig >/tmp/jobinfo 2>&1
sed 's/^/[domjobinfo] /' /tmp/jobinfo
check mig-jobinfo-total "grep -Eq '^Memory total: +[1-9]' /tmp/jobinfo && grep -Eq '^Job type: +Unbounded' /tmp/jobinfo"
check mig-paused-vmm-ended "mig_is 'shut off' && ! mig_vmm $S"
run_ok mig-jobabort ox domjobabort mig
wait $MIGPID
MIGRC=$?
sed 's/^/[migrate-aborted] /' /tmp/migabort.out
check mig-abort-fails "[ $MIGRC -eq 1 ] && grep -q 'aborted (domjobabort)' /tmp/migabort.out && grep -q 'goes on running here' /tmp/migabort.out"
check mig-abort-running-here "wait_for 'mig_is running' && mig_vmm $S"
check mig-abort-job-cancelled "ox domjobinfo mig | grep -Eq '^Job type: +Cancelled'"
check mig-abort-b-nothing "wait_for '! oxb list --all | grep -q \" mig \"' && ! mig_vmm $SB && [ -z \"\$(ls $SB/migrations 2>/dev/null)\" ]"
check mig-abort-no-image "[ -z \"\$(ls $S/migrations 2>/dev/null | grep save)\" ]"
console_say mig 21 'sleep 2; echo MC2=$(cat /t/count) MMARK2=$(cat /t/mark)'
check mig-abort-counter-goes-on "(wait_for 'counting $MLOG MC2 $MC1' || show_tail $MLOG) && [ \"\$(log_answer $MLOG MMARK2)\" = tmpfs-M ]"
MC2=$(log_answer $MLOG MC2)

# The live move: the guest rewrites 16 MiB of its tmpfs (a file named by its md5) all along, so
# that pages it wrote during a pass go again in the next; a 10 ms downtime keeps the VMM from
# pausing it before the rest is that small, so the move never converges by itself: --timeout 1
# pauses the guest after 1 s (virsh's --timeout-suspend), and the VMM's next pass is its last.
# On B the same boot goes on, A has it shut off (migrated) and no VMM of it.
echo 'dd if=/dev/urandom of=/t/seed bs=64k count=16 2>/dev/null; (k=0; while :; do (echo $k; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do cat /t/seed; done) >/t/tmp.new; s=$(md5sum </t/tmp.new | cut -c1-32); mv /t/tmp.new /t/x.$s; for f in /t/x.*; do [ $f = /t/x.$s ] || rm -f $f; done; k=$((k+1)); echo $k >/t/dirtk; sleep 1; done) >/dev/null 2>&1 & echo $! >/t/dirt.pid; while [ ! -s /t/dirtk ]; do sleep 1; done; echo MUP=$(cut -d. -f1 /proc/uptime) MC3=$(cat /t/count) MDK=$(cat /t/dirtk)' >&3
check mig-before-move "wait_for 'counting $MLOG MC3 $MC2' && [ \"\$(log_answer $MLOG MDK)\" -ge 1 ]"
MUP=$(log_answer $MLOG MUP)
MC3=$(log_answer $MLOG MC3)
MDK=$(log_answer $MLOG MDK)
run_ok mig-setmaxdowntime ox migrate-setmaxdowntime mig 10
MPID0=$(cat $S/run/$MUUID/vmm.pid)
run_ok mig-migrate ox migrate --live --timeout 1 --persistent --verbose mig oxvirt+unix://$SOCKB
# The VMM's report, as A's oxvirtd logged it: more than the first pass and the paused last one,
# and fewer than the 31 of a move that ran into the VMM's cap of 30 passes (the timeout ended it).
grep -a "live state stream is complete" /tmp/oxvirtd.log | tail -n 1 | sed 's/^/[live-report] /'
MPASSES=$(grep -a "live state stream is complete" /tmp/oxvirtd.log | tail -n 1 | grep -o 'passes=[0-9]*' | cut -d= -f2)
check mig-live-passes "[ -n \"$MPASSES\" ] && [ \"$MPASSES\" -ge 3 ] && [ \"$MPASSES\" -lt 31 ]"
check mig-live-timeout "grep -a 'migration timeout reached: suspending the guest' /tmp/oxvirtd.log | grep -q 'domain=mig'"
check mig-b-running "migb_is running && mig_vmm $SB"
check mig-b-reason "oxb domstate --reason mig | grep -q 'running (migrated)'"
check mig-a-shut-off "ox domstate --reason mig | grep -q 'shut off (migrated)'"
check mig-a-no-vmm "! mig_vmm $S"
check mig-one-vmm "[ \$(pidof oxvirt-vmm | wc -w) -eq 1 ]"
check mig-a-no-image "[ -z \"\$(ls $S/migrations 2>/dev/null | grep save)\" ] && [ ! -e $SB/run/$MUUID/incoming.state ]"
ox domjobinfo mig >/tmp/jobinfo 2>&1
sed 's/^/[domjobinfo-done] /' /tmp/jobinfo
check mig-job-completed "grep -Eq '^Job type: +Completed' /tmp/jobinfo && grep -Eq '^Memory processed: +0*[1-9]' /tmp/jobinfo"
check mig-job-downtime "grep -Eq '^Total downtime: +[0-9]+ +ms' /tmp/jobinfo"
# Its passes, as the VMM reported them (virsh's "Iteration").
check mig-job-iteration "grep -Eq \"^Iteration: +$MPASSES\$\" /tmp/jobinfo"
say_b 22 'echo BUP=$(cut -d. -f1 /proc/uptime) BC=$(cat /t/count) BMARK=$(cat /t/mark)'
check mig-b-answers "wait_for '[ -n \"\$(log_answer $MLOGB BC)\" ]'"
echo "[migrated] uptime $MUP -> $(log_answer $MLOGB BUP), counter $MC3 -> $(log_answer $MLOGB BC)"
check mig-b-same-boot "[ \$(mig_booted $MLOGB) -eq 0 ] && [ \$(log_answer $MLOGB BUP) -ge $MUP ]"
check mig-b-tmpfs "[ \"\$(log_answer $MLOGB BMARK)\" = tmpfs-M ]"
check mig-b-counter-continues "[ \$(log_answer $MLOGB BC) -ge $MC3 ]"
BC=$(log_answer $MLOGB BC)
echo 'sleep 2; echo BC2=$(cat /t/count)' >&3
check mig-b-counter-goes-on "wait_for 'counting $MLOGB BC2 $BC' || show_tail $MLOGB"
BC2=$(log_answer $MLOGB BC2)
# What the guest rewrote while it moved is whole: every file it completed matches its md5.
echo 'kill $(cat /t/dirt.pid); sleep 2; n=0; bad=0; for f in /t/x.*; do n=$((n+1)); [ "$(md5sum <$f | cut -c1-32)" = "${f#/t/x.}" ] || bad=$((bad+1)); done; echo DIRTN=$n DIRTBAD=$bad DIRTK=$(cat /t/dirtk)' >&3
check mig-b-dirty-answers "wait_for '[ -n \"\$(log_answer $MLOGB DIRTBAD)\" ]' || show_tail $MLOGB"
echo "[dirtied] rounds $MDK before the move, $(log_answer $MLOGB DIRTK) on B; files $(log_answer $MLOGB DIRTN), damaged $(log_answer $MLOGB DIRTBAD)"
check mig-b-dirty-whole "[ \"\$(log_answer $MLOGB DIRTN)\" -ge 1 ] && [ \"\$(log_answer $MLOGB DIRTBAD)\" = 0 ] && [ \"\$(log_answer $MLOGB DIRTK)\" -gt $MDK ]"

# And back, --undefinesource: A runs it again, B has nothing. (A's undefine removed its run
# directory: the console log starts again, and still shows no boot.)
check mig-never-rebooted "[ \$(mig_booted $MLOG) -eq 1 ]"
run_ok mig-a-undefine ox undefine mig
run_ok mig-back oxb migrate --persistent --undefinesource mig oxvirt+unix://$SOCK
check mig-back-running "mig_is running && mig_vmm $S"
check mig-back-b-undefined "! oxb list --all | grep -q ' mig '"
check mig-back-b-no-vmm "! mig_vmm $SB"
console_say mig 23 'sleep 2; echo AC=$(cat /t/count)'
check mig-back-counter-goes-on "wait_for 'counting $MLOG AC $BC2' || show_tail $MLOG"
check mig-back-same-boot "[ \$(mig_booted $MLOG) -eq 0 ]"

run_ok mig-destroy ox destroy mig
exec 3>&-
run_ok mig-undefine ox undefine mig
kill $BPID
wait $BPID 2>/dev/null
echo "MIG-LEFTOVER-VMM=$(pidof oxvirt-vmm | wc -w)"
