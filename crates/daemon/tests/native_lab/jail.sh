# Sourced by l1.sh while the domain `nat` runs and console session 1 is open on descriptor 3 (its
# helpers, $S, $UUID, $LOG in scope): oxvirtd started its oxvirt-vmm jailed (tests/native_lab.rs,
# the_native_vmm_runs_jailed): seen from L1's /proc, and through the guest's disk.
JPID=$(cat $S/run/$UUID/vmm.pid)
# field PID NAME: a /proc/PID/status field's values, space separated.
field() { grep "^$2:" /proc/$1/status | cut -d: -f2 | tr -s ' \t' ' ' | sed 's/^ //; s/ $//'; }
grep -E '^(Uid|Gid|Groups|NSpid|NoNewPrivs|Seccomp):' /proc/$JPID/status | sed 's/^/[vmm-status] /'
sed 's/^/[vmm-mountinfo] /' /proc/$JPID/mountinfo
ls -la /proc/$JPID/root/ | sed 's/^/[vmm-root] /'
grep -E 'open files|file size' /proc/$JPID/limits | sed 's/^/[vmm-limits] /'
JUID=$(field $JPID Uid | cut -d' ' -f1)
# A user of its own from native_user_range (3001000-3001999), real, effective, saved and fs the same.
check jail-uid "[ $JUID -ge 3001000 ] && [ $JUID -le 3001999 ] && [ \"\$(field $JPID Uid)\" = '$JUID $JUID $JUID $JUID' ]"
check jail-gid "[ \"\$(field $JPID Gid)\" = '$JUID $JUID $JUID $JUID' ] && [ -z \"\$(field $JPID Groups)\" ]"
# dominfo shows that user as virsh shows a DAC label.
check jail-dominfo-label "ox dominfo $UUID | grep -Eq \"^Security label: +\\+$JUID:\\+$JUID \\(enforcing\\)\""
check jail-seccomp "[ \"\$(field $JPID Seccomp)\" = 2 ]"
check jail-no-new-privs "[ \"\$(field $JPID NoNewPrivs)\" = 1 ]"
# PID 1 of its own PID namespace, still oxvirtd's pid for it.
check jail-pid-namespace "[ \"\$(field $JPID NSpid)\" = '$JPID 1' ]"
ns_differs() { [ "$(readlink /proc/$JPID/ns/$1)" != "$(readlink /proc/self/ns/$1)" ]; }
check jail-namespaces "ns_differs mnt && ns_differs ipc && ns_differs net && ns_differs pid"
# Its root holds nothing, and is the only mount it has: an empty read-only tmpfs.
check jail-root-empty "[ -z \"\$(ls -A /proc/$JPID/root/)\" ] && [ \$(wc -l </proc/$JPID/mountinfo) -eq 1 ] && grep -q ' / / ro,' /proc/$JPID/mountinfo"
check jail-limits "grep -Eq '^Max open files +1024 +1024' /proc/$JPID/limits && ! grep -Eq '^Max file size +unlimited' /proc/$JPID/limits"
# The guest writes and reads its disk through the descriptor opened before the jail: the bytes land
# in L1's file, which keeps its owner (nothing was relabelled for the VMM).
echo 'printf jail-W | dd of=/dev/vda bs=512 seek=100 count=1 conv=sync 2>/dev/null; sync; echo JAILDISK=$(dd if=/dev/vda bs=512 skip=100 count=1 iflag=direct 2>/dev/null | head -c 6)' >&3
check jail-guest-disk "wait_for 'grep -q JAILDISK=jail-W /tmp/con1'"
check jail-disk-in-host-file "[ \"\$(dd if=/tmp/disk.raw bs=512 skip=100 count=1 2>/dev/null | head -c 6)\" = jail-W ]"
check jail-nothing-relabelled "[ \"\$(stat -c %u:%g /tmp/disk.raw $S/run/$UUID/vmm-api.sock $S/run/$UUID/vmm-serial.sock | sort -u)\" = 0:0 ]"
