#!/usr/bin/env bash
# Native-VMM restore benchmark (issue 10, "restore-to-running time of a 256 MiB microVM"): in the nested lab
# (an L1 guest under QEMU TCG -cpu max, with kvm-amd loaded; see docs/native-vmm.md, "Tests"), oxvirt-vmm boots
# the guest kit (256 MiB, 1 vCPU), the guest fills 64 MiB of tmpfs with random data, the VM is paused and its
# state saved through the API (`save`), the VMM ends; then, RUNS times (after one uncounted warm-up), a new
# `oxvirt-vmm --restore FILE --api-socket ...` starts, is resumed through the API, and a command is typed on its
# serial console. Measured from just before the process is spawned:
#   1. restore done: the VMM's stderr line "restored the machine state ... in N ms" (also N, the restore itself);
#   2. the API's answer to `resume`;
#   3. restore to running: the guest's shell printed the answer to the command typed after the resume.
# Prints a table and writes the section "## Native VMM: restore to running (nested lab)" of docs/benchmarks.md.
#
#   bash benches/native-restore.sh                  # RUNS=5 counted restores
#   RUNS=2 WRITE_DOC=0 bash benches/native-restore.sh
#   SKIP_BUILD=1 ...                                # use oxvirt-vmm in $CARGO_TARGET_DIR/release (or target/release)
#   L1_LOG=FILE ...                                 # do not boot L1: report from a console log of an earlier run
#   HOST_KVM=0 ...                                  # skip the restores on the machine's own /dev/kvm (below)
#
# Then (HOST_KVM=1, the default) the state saved in L1 is carried out on a raw disk L1 gets, and restored the same
# way on the machine's own /dev/kvm, whatever that is (here kvm_pvm, not hardware KVM: see the section written).
#
# Needs qemu-system-x86 7.2, cpio and the guest kit (scripts/guest-kit.sh). Everything runs in a temporary
# directory, removed at exit; L1's QEMU is killed on exit.
set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
SECTION='## Native VMM: restore to running (nested lab)'

say() { printf '[native-restore] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
. benches/lib.sh
KEEP_LOG=$BENCH_TARGET/l1-restore-console.log

lab_begin native-restore
if ! lab_replay; then
    build_lab "$BENCH_TARGET"
    [ -x "$RELEASE/oxvirt-vmm-api" ] || die "$RELEASE/oxvirt-vmm-api is missing (cargo build --release -p oxvirt-vmm)"
    root=$WORK/l1-root
    lab_root "$root" benches/native-restore/l1.sh
    install_binary "$root" "$RELEASE/oxvirt-vmm-api" lab/bin/oxvirt-vmm-api
    if [ "${HOST_KVM:-1}" = 1 ]; then
        truncate -s 512M "$WORK/export.raw"
        L1_EXTRA=(-drive "if=virtio,format=raw,file=$WORK/export.raw")
    fi
    run_l1 "$root" "$WORK" "$RUNS" "$KEEP_LOG"
    LOG=$KEEP_LOG
    exported=$(top_value BENCH-EXPORTED)
    if [ -n "$exported" ] && [ -c /dev/kvm ]; then
        say "restoring the same state on this machine's /dev/kvm ($(grep -qw -e vmx -e svm /proc/cpuinfo && echo hardware KVM || echo "not hardware KVM: $(ls -d /sys/module/kvm_* 2> /dev/null | xargs -n1 basename | tr '\n' ' ')"))"
        head -c "$exported" "$WORK/export.raw" > "$WORK/l2.state"
        echo "HOST-KVM-MODULES=$(ls -d /sys/module/kvm_* 2> /dev/null | xargs -n1 basename | tr '\n' ' ')" >> "$LOG"
        for ((i = 0; i <= RUNS; i++)); do
            rm -f "$WORK/api.sock"
            "$OXBENCH_TIME" restore "${HOST_TIMEOUT:-30}" "$WORK/api.sock" 'echo RESTORED-$((40+2))' RESTORED-42 -- \
                "$RELEASE/oxvirt-vmm" --kernel target/guest-kit/vmlinuz --initrd target/guest-kit/initramfs.img \
                --memory 256 --vcpus 1 --cmdline "console=ttyS0 panic=-1 quiet" --api-socket "$WORK/api.sock" \
                --restore "$WORK/l2.state" 2>&1 | sed "s/^/RESULT host restore $i /" >> "$LOG"
        done
    fi
fi
grep -q '^BENCH-FATAL' "$LOG" && die "$(grep '^BENCH-FATAL' "$LOG")"

# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------
# prep STEP KEY: the value of KEY for the preparation's STEP (pause, save).
prep() { awk -v s="$1" -v key="$2=" '$1 == "RESULT" && $2 == "prep" && $3 == s && index($5, key) == 1 { print substr($5, length(key) + 1) }' "$LOG" | head -1; }
# row WHERE TITLE KEY: a table row: median, min-max and every counted run of KEY (WHERE: oxvirt = in L1, host).
row() { echo "| $2 | $(med "$1" restore "$3" 1 1) | $(spread "$1" restore "$3" 1 1) | $(all "$1" restore "$3") |"; }

lab_host_values
N_OK=$(count oxvirt restore ANSWER_MS)
STATE_MIB=$(awk -v b="$(prep save STATE_BYTES)" 'BEGIN { printf "%.1f", b / 1048576 }')
SAVE_LINE=$(sed -n 's/^VMM-PREP-LOG oxvirt-vmm: saved/saved/p' "$LOG" | head -1)
RESTORE_LINE=$(sed -n 's/^RESULT oxvirt restore 1 VMM_LOG| oxvirt-vmm: //p' "$LOG" | head -1)
STOPS=$(values oxvirt restore EXIT_AFTER_STOP | sort | uniq -c | awk '{ printf "%s%s x exit %s", sep, $1, $2; sep = ", " }')

# The restores of the L1 state on the machine's own /dev/kvm, as far as they went.
host_part() {
    if ! grep -q '^RESULT host restore' "$LOG"; then
        echo "**The machine's own /dev/kvm** was not tried in this run (HOST_KVM=0, or L1 exported no state)."
        return
    fi
    local n_restored n_failed
    n_restored=$(count host restore RESTORED_MS)
    n_failed=$(values host restore RESTORED_MS | grep -c '^failed$' || true)
    cat << EOF2
**The machine's own /dev/kvm** ($(top_value HOST-KVM-MODULES | sed 's/ *$//'): not hardware KVM, see the environment notes; a
stock Debian kernel does not boot on it, so no state can be saved there). The state saved in L1 was carried
out on a raw disk given to L1 (\`-drive if=virtio,format=raw\`, written with \`dd\` after the lab runs) and
restored the same way ($RUNS counted + 1 warm-up, \`oxbench-time restore\` with the host's release
\`oxvirt-vmm\`, same options): $n_restored of $RUNS restored, $n_failed of $RUNS ended before restoring.
EOF2
    if [ "$n_restored" -gt 0 ]; then
        echo
        echo "| on the host's /dev/kvm, from process start (ms) | median | min-max | every run, in order |"
        echo "|---|---|---|---|"
        row host "restore done" RESTORED_MS
        row host "… of which the restore itself" VMM_RESTORE_MS
        row host "\`resume\` answered" RESUMED_MS
        row host "the guest's answer on the serial console" ANSWER_MS
    fi
    if [ "$n_failed" -gt 0 ]; then
        cat << EOF2

The VMM's error (run 1; exit status of the runs: $(values host restore EXIT | sort -u | tr '\n' ' ' | sed 's/ $//')):
\`$(sed -n 's/^RESULT host restore 1 VMM_LOG| //p' "$LOG" | head -1 | sed "s|/tmp/native-restore[^ ]*/|/tmp/.../|")\`.
Process start to that exit (ms): median $(med host restore ENDED_MS 1 1), min-max $(spread host restore ENDED_MS 1 1)
($(all host restore ENDED_MS)). The restore loads RAM first, then the in-kernel irqchips, PIT and clock, then
each vCPU: this is the VMM's start plus reading and placing the $STATE_MIB MiB of stored pages, natively on
the host's CPU (no TCG), up to the first vCPU register load, which kvm_pvm refuses (\`KVM_SET_SREGS\`, EINVAL; which field it
objects to was not investigated: a guest that ran under nested kvm-amd has control-register and EFER bits for
features kvm_pvm's CPUID hides, a likely cause). It is the closest this machine gets to the VMM's own share on a host without TCG; the
vCPU and device loads after it, and running the guest, were not measured on the host.
EOF2
    fi
}

section() {
    cat << EOF
$SECTION

\`bash benches/native-restore.sh\` (RUNS=$RUNS), $date_start. Issue 10's benchmark "restore-to-running time
of a 256 MiB microVM". One L1 boot; inside it oxvirt-vmm (release build) boots the guest kit (kernel
$(cat target/guest-kit/version 2> /dev/null || echo '?'), busybox initramfs, unchanged), 256 MiB, 1 vCPU, serial console on a pipe, on real KVM
(kvm-amd in L1). At the guest's prompt the guest fills 64 MiB of tmpfs from /dev/urandom
(\`$(top_value BENCH-GUEST-FILLED | sed 's/^FILLED-42 *//')\` in the guest afterwards), the VM is paused
(\`oxvirt-vmm-api SOCK pause\`: $(prep pause ELAPSED_MS) ms round trip) and its state saved
(\`{"command":"save",...}\`), and that VMM is stopped. Then $RUNS counted restores (after one uncounted
warm-up), each a new process: \`oxvirt-vmm --restore FILE --api-socket SOCK ...\`, the API's \`resume\` as soon
as the VMM says it restored, then \`echo RESTORED-\$((40+2))\` typed on the serial console.

**Save**: state file $STATE_MIB MiB: all-zero pages are left out, so this is about what the guest had in use
(its kernel, the unpacked initramfs with its modules, the 64 MiB of tmpfs; MemFree above); the VMM's own
line: "$SAVE_LINE";
\`oxvirt-vmm-api ... save\` round trip $(prep save ELAPSED_MS) ms
(the file is in L1's RAM: L1 runs from its initramfs, so no disk is involved, and fsync has nothing to wait for).

| from process start (ms), $N_OK of $RUNS restores answered | median | min-max | every run, in order |
|---|---|---|---|
$(row oxvirt "restore done (the VMM's stderr line), the VMM's own share" RESTORED_MS)
$(row oxvirt "… of which the restore itself (the duration that line gives)" VMM_RESTORE_MS)
$(row oxvirt "\`resume\` answered by the API" RESUMED_MS)
$(row oxvirt "**restore to running**: the guest's answer on the serial console" ANSWER_MS)

The restore line of run 1: "$RESTORE_LINE". Each restored VMM was ended with the API's \`stop\`: $STOPS.

**How each value is taken** (in L1, by \`benches/native-vmm/oxbench-time restore\`, which also serves
benches/native-vmm.sh): it reads \`Instant::now()\`, spawns the VMM with its stdout (the serial console),
stdin and stderr on pipes, and takes the instant it read: the stderr line
\`oxvirt-vmm: restored the machine state from FILE in N ms; paused until resumed\` (printed by
\`crates/vmm/src/vm.rs\` once RAM, the in-kernel irqchips, PIT, clock, vCPU registers and devices are loaded;
N is that part alone, from the VMM's own clock, whole milliseconds), the API's answer to \`resume\` (it
connects to the socket as soon as that line came), and the console chunk completing \`RESTORED-42\` after
it wrote the command line to the console's input. "Process start" therefore includes the dynamic loader,
argument and config checks, KVM and VM creation, guest-RAM mapping, vCPU threads and the API socket. The
state file sits in L1's page cache (rootfs), as a file just saved would on a host.

**Exact command** (in L1; \`K=/lab/l2/vmlinuz\`, \`I=/lab/l2/initramfs.img\`):
\`$(top_value BENCH-CMD-restore | sed 's|/lab/l2/vmlinuz|$K|; s|/lab/l2/initramfs.img|$I|')\`
(the kernel and initramfs are not loaded on a restore; the options must describe the saved machine).

**Machine**: host $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB, kernel $(uname -r),
shared with other work (other sessions' builds and benchmarks): load average
(1/5/15 min) $load_start at the start and $load_end at the end.
L1: \`${L1_QEMU[*]} -serial file:LOG -kernel vmlinuz -initrd l1-initramfs.img -append 'console=ttyS0 panic=-1 quiet oxbench_runs=$RUNS'\`,
kernel $(top_value BENCH-L1-KERNEL), CPU "$(top_value BENCH-L1-CPU)", $(top_value BENCH-L1-NPROC) vCPU(s), MemTotal $(top_value BENCH-L1-MEMTOTAL); KVM in L1 is kvm-amd (nested SVM emulated by TCG).
**Versions**: oxvirt-vmm $(top_value HOST-GIT | grep . || echo "(commit not recorded)").

**Anchor and why the lab differs**: Firecracker reports restoring a microVM from a snapshot in single-digit
milliseconds on bare metal (its snapshot files are mapped, not read, so guest memory is paged in lazily
after the resume). Here L1 runs under TCG: every instruction of L1, so of oxvirt-vmm's own code, the kernel's
KVM module emulating nested SVM, and every L2 VM exit (the serial port's I/O exits included) is emulated by
QEMU's binary translator on a shared 2-core machine, so absolute times are many times what hardware KVM gives.
oxvirt-vmm also reads the stored pages into fresh anonymous guest RAM (a copy of the non-zero pages, about
$STATE_MIB MiB here) instead of mapping the file, so its restore grows with the memory the guest touched.

$(host_part)
EOF
}

TEXT=$(section)
printf '%s\n' "$TEXT" | sed -n '/^| from process start/,/^$/p' >&2
if [ "$WRITE_DOC" = 1 ]; then
    printf '%s\n' "$TEXT" > "$WORK/section.md"
    write_doc_section "$SECTION" "$WORK/section.md"
fi
