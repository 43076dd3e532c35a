# Sourced by l1.sh once its own domain is gone (its helpers and $S, $SOCK are in scope): snapshots,
# save/restore and managed save of a native domain with a qcow2 disk, checked by what the guest
# sees (tests/native_lab.rs, native_snapshots_and_saves_keep_what_the_guest_had). The guest
# writes markers to its disk and to a tmpfs and runs a counter; every answer it prints carries a
# tag and a value (TAG=value), read back from the domain's console log.
SUUID=7a2e3d4c-5b6a-4f70-8b9c-0d1e2f3a4b5c
SLOG=$S/run/$SUUID/console.log
SSTATE=$S/snapshot/$SUUID
snap_is() { ox list --all | grep -Eq "snap +$1\$"; }
snap_booted() { grep -ac OXVIRT-GUEST-BOOTED $SLOG 2>/dev/null || echo 0; }
answer() { log_answer $SLOG $1; }
answered() { [ -n "$(answer $1)" ]; }
# say N CMD: a new console session N (the previous one ended with its VMM) types CMD.
say() { console_say snap "$@"; }
# Reads the first 6 bytes of the disk itself, not of the page cache (which comes back with the
# memory): O_DIRECT.
DISK='dd if=/dev/vda bs=4096 count=1 iflag=direct 2>/dev/null | head -c 6'

run_ok snap-img-create oxvirt img create -f qcow2 /tmp/snap.qcow2 8M
run_ok snap-define ox define /lab/snap.xml
run_ok snap-start ox start snap
require snap-booted "wait_for 'grep -aq OXVIRT-GUEST-BOOTED $SLOG'"
say 10 'mkdir -p /t; mount -t tmpfs t /t; echo tmpfs-A >/t/mark; printf disk-A | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; sync; (n=0; while :; do echo $n >/t/count; n=$((n+1)); sleep 1; done) >/dev/null 2>&1 & sleep 3; echo SETUP=$(cat /t/mark)'
require snap-guest-setup "wait_for 'answered SETUP' && [ \"\$(answer SETUP)\" = tmpfs-A ]"
echo 'echo SNAPCOUNT=$(cat /t/count)' >&3
check snap-count-before "wait_for 'answered SNAPCOUNT'"
SNAPCOUNT=$(answer SNAPCOUNT)

# A running native guest: its state goes into a file oxvirtd keeps, the qcow2 snapshot is taken
# with the VMM gone, and the guest goes on from that state.
run_ok snapshot-create ox snapshot-create-as snap s1
check snapshot-running-after "snap_is running"
check snapshot-state-file "[ -s $SSTATE/s1.save ]"
ox snapshot-list snap | sed 's/^/[snapshot-list] /'
check snapshot-listed "ox snapshot-list snap | grep -Eq '^ *s1 .* running *\$'"
ox snapshot-dumpxml snap s1 >/tmp/s1.xml 2>&1
check snapshot-xml-memory "grep -q \"<memory snapshot='internal'/>\" /tmp/s1.xml && grep -q '<state>running</state>' /tmp/s1.xml"
# The guest goes on after the snapshot (20 s of its time: after the revert, the count is read within
# less than that, even with the machine loaded), and changes disk and tmpfs.
say 11 "sleep 20; echo tmpfs-B >/t/mark; printf disk-B | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; sync; echo BDISK=\$($DISK) BCOUNT=\$(cat /t/count)"
check snap-guest-goes-on "wait_for 'answered BCOUNT' && [ \"\$(answer BDISK)\" = disk-B ]"
BCOUNT=$(answer BCOUNT)
echo "[counts] at the snapshot $SNAPCOUNT, before the revert $BCOUNT"

run_ok snapshot-revert ox snapshot-revert snap s1
check snapshot-revert-running "snap_is running"
say 12 "echo RDISK=\$($DISK) RTMP=\$(cat /t/mark) RCOUNT=\$(cat /t/count)"
check revert-answers "wait_for 'answered RCOUNT'"
echo "[revert] disk $(answer RDISK) tmpfs $(answer RTMP) count $(answer RCOUNT)"
check revert-disk-a "[ \"\$(answer RDISK)\" = disk-A ]"
check revert-tmpfs-a "[ \"\$(answer RTMP)\" = tmpfs-A ]"
# The counter goes on from the snapshot: not from 0, not from where it was before the revert.
check revert-count-continues "[ \$(answer RCOUNT) -ge $SNAPCOUNT ] && [ \$(answer RCOUNT) -lt $BCOUNT ]"

# save + restore: the same guest goes on (uptime, tmpfs), nothing boots.
echo 'echo SAVEUP=$(cut -d. -f1 /proc/uptime)' >&3
check save-uptime-before "wait_for 'answered SAVEUP'"
run_ok save ox save snap /tmp/snap.save
check saved-shut-off "snap_is 'shut off'"
run_ok restore ox restore /tmp/snap.save
check restored-running "snap_is running"
say 13 'echo RESTUP=$(cut -d. -f1 /proc/uptime) RESTTMP=$(cat /t/mark)'
check restore-answers "wait_for 'answered RESTUP'"
echo "[restore] uptime $(answer SAVEUP) -> $(answer RESTUP), tmpfs $(answer RESTTMP)"
check restore-uptime-continues "[ \$(answer RESTUP) -ge \$(answer SAVEUP) ]"
check restore-tmpfs "[ \"\$(answer RESTTMP)\" = tmpfs-A ]"

# managedsave, then start resumes it.
echo 'echo MSUP=$(cut -d. -f1 /proc/uptime)' >&3
check managedsave-uptime-before "wait_for 'answered MSUP'"
run_ok managedsave ox managedsave snap
check managedsave-shut-off "snap_is 'shut off'"
ox dominfo snap >/tmp/sdominfo 2>&1
sed 's/^/[dominfo] /' /tmp/sdominfo
check managedsave-dominfo "grep -Eq '^Managed save: +yes' /tmp/sdominfo"
run_ok managedsave-start ox start snap
check managedsave-running "snap_is running"
check managedsave-consumed "ox dominfo snap | grep -Eq '^Managed save: +no'"
say 14 'echo MSTUP=$(cut -d. -f1 /proc/uptime) MSTMP=$(cat /t/mark)'
check managedsave-answers "wait_for 'answered MSTUP'"
check managedsave-uptime-continues "[ \$(answer MSTUP) -ge \$(answer MSUP) ]"
check managedsave-tmpfs "[ \"\$(answer MSTMP)\" = tmpfs-A ]"
check never-rebooted "[ \$(snap_booted) -eq 1 ]"

# A paused guest's snapshot leaves it paused.
run_ok snapshot-paused-suspend ox suspend snap
run_ok snapshot-create-paused ox snapshot-create-as snap s2
check snapshot-paused-after "snap_is paused"
check snapshot-paused-state "ox snapshot-list snap | grep -Eq '^ *s2 .* paused *\$'"
run_ok snapshot-paused-resume ox resume snap

# Deleting s1 while the guest runs: its tags and its state file go, the guest goes on.
run_ok snapshot-delete ox snapshot-delete snap s1
check snapshot-delete-running "snap_is running"
check snapshot-delete-state-file "[ ! -e $SSTATE/s1.save ] && [ -s $SSTATE/s2.save ]"
check snapshot-delete-listed "! ox snapshot-list snap | grep -q ' s1 '"
say 15 'echo ALIVE=$((6*7))'
check snapshot-delete-answers "wait_for '[ \"\$(answer ALIVE)\" = 42 ]'"
check never-rebooted-after-delete "[ \$(snap_booted) -eq 1 ]"

run_ok snap-destroy ox destroy snap
exec 3>&-
oxvirt img snapshot -l /tmp/snap.qcow2 >/tmp/imgsnap 2>&1
sed 's/^/[img snapshot] /' /tmp/imgsnap
check snap-image-tags "grep -q s2 /tmp/imgsnap && ! grep -q s1 /tmp/imgsnap"
run_ok snap-undefine ox undefine --snapshots-metadata snap
check snap-state-dir-removed "[ ! -e $SSTATE ]"
echo "SNAP-LEFTOVER-VMM=$(pidof oxvirt-vmm | wc -w)"
