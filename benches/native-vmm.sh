#!/usr/bin/env bash
# Native-VMM benchmark: oxvirt-vmm against QEMU (-M microvm and -M pc), side by side on real KVM in the nested
# lab (an L1 guest under QEMU TCG -cpu max, with kvm-amd loaded; see docs/native-vmm.md, "Tests"). One L1 boot
# runs every measurement on the same L2 kernel + initramfs (the guest kit), 256 MiB, 1 vCPU, serial console:
#   1. process start -> the guest's init prints OXVIRT-GUEST-BOOTED on the serial console;
#   2. VMM resident memory without guest RAM, from /proc/PID/smaps while the guest idles at its prompt;
#   3. process start (execve) -> first KVM_RUN, from `strace -f --seccomp-bpf -ttt -T -e trace=execve,ioctl`.
# Prints a table and writes the section "## Native VMM vs QEMU (nested lab)" of docs/benchmarks.md.
#
#   bash benches/native-vmm.sh                  # RUNS=5 counted runs per VMM and measurement
#   RUNS=2 WRITE_DOC=0 bash benches/native-vmm.sh
#   SKIP_BUILD=1 ...                            # use oxvirt-vmm in $CARGO_TARGET_DIR/release (or target/release) as it is
#   L1_LOG=FILE ...                             # do not boot L1: report from a console log of an earlier run
#
# Needs qemu-system-x86 7.2, seabios, strace, cpio and the guest kit (scripts/guest-kit.sh). The machine's own
# /dev/kvm is never used. Everything runs in a temporary directory, removed at exit; L1's QEMU is killed on exit.
set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
SECTION='## Native VMM vs QEMU (nested lab)'
VMMS=(oxvirt microvm pc)

say() { printf '[native-vmm] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
. benches/lib.sh
KEEP_LOG=$BENCH_TARGET/l1-console.log

# ---------------------------------------------------------------------------------------------------------
# Build the L1 initramfs and boot it
# ---------------------------------------------------------------------------------------------------------
lab_begin native-vmm
if ! lab_replay; then
    build_lab "$BENCH_TARGET" strace
    [ -f /usr/share/seabios/bios-256k.bin ] || die "/usr/share/seabios/bios-256k.bin is missing (apt-get install seabios)"
    root=$WORK/l1-root
    lab_root "$root" benches/native-vmm/l1.sh
    install_binary "$root" "$(command -v strace)" lab/bin/strace
    # QEMU looks for its firmware relative to its binary (../share/qemu, ../share/seabios).
    install_binary "$root" "$(command -v qemu-system-x86_64)" usr/bin/qemu-system-x86_64
    mkdir -p "$root/usr/share/qemu" "$root/usr/share/seabios"
    cp -L /usr/share/seabios/bios-256k.bin "$root/usr/share/seabios/"
    for f in qboot.rom bios-microvm.bin linuxboot_dma.bin linuxboot.bin kvmvapic.bin pvh.bin multiboot_dma.bin; do
        cp -L "/usr/share/qemu/$f" "$root/usr/share/qemu/"
    done
    run_l1 "$root" "$WORK" "$RUNS" "$KEEP_LOG"
    LOG=$KEEP_LOG
fi
grep -q '^BENCH-FATAL' "$LOG" && die "$(grep '^BENCH-FATAL' "$LOG")"

# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------
# round_ratio KIND KEY A B: the median over the counted runs of A's value / B's value in the same run (round),
# which follows the machine's changing load better than the ratio of the medians.
round_ratio() {
    awk -v k="$1" -v key="$2=" -v a="$3" -v b="$4" '$1 == "RESULT" && $3 == k && $4 != "0" && index($5, key) == 1 {
            x = substr($5, length(key) + 1); if (x ~ /^[0-9.]+$/) v[$2, $4] = x }
        END { for (i = 1; i <= 1000; i++) if ((a, i) in v && (b, i) in v && v[b, i] > 0) print v[a, i] / v[b, i] }' "$LOG" |
        median | awk '{ if ($1 == "n/a") print; else printf "%.2f", $1 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
verdict() { awk -v x="$1" -v lim="$2" 'BEGIN { if (x == "n/a") print "not measured"; else if (x < lim) print "**met**"; else print "**not met**" }'; }

declare -A BOOT MEMO KRUN KFIRST IOCTL INIOCTL N
for v in "${VMMS[@]}"; do
    BOOT[$v]=$(med "$v" boot MARKER_MS 1000)
    MEMO[$v]=$(med "$v" boot RSS_OVERHEAD_KB 1024)
    KRUN[$v]=$(med "$v" kvmrun FIRST_KVM_RUN_MS 1 1)
    KFIRST[$v]=$(med "$v" kvmrun FIRST_KVM_IOCTL_MS 1 1)
    IOCTL[$v]=$(med "$v" kvmrun IOCTLS_BEFORE 1 0)
    INIOCTL[$v]=$(med "$v" kvmrun IN_IOCTLS_MS 1 1)
    N[$v]="$(count "$v" boot MARKER_MS)/$(count "$v" boot RSS_OVERHEAD_KB)/$(count "$v" kvmrun FIRST_KVM_RUN_MS)"
done
TOTAL_RSS_OX=$(med oxvirt boot RSS_TOTAL_KB 1024)
lab_host_values
boot_ratio=$(ratio "${BOOT[oxvirt]}" "${BOOT[microvm]}")
boot_round_mv=$(round_ratio boot MARKER_MS oxvirt microvm)

# The guest-RAM mappings and the biggest other mappings of the last counted run of each VMM.
maps_of() {
    awk -v v="$1" -v r="$RUNS" '$1 == "RESULT" && $2 == v && $3 == "boot" && $4 == r && ($5 == "GUEST_MAP" || $5 == "TOP_MAP") {
        $1 = $2 = $3 = $4 = ""; sub(/^ +/, ""); print }' "$LOG"
}

section() {
    cat <<EOF
$SECTION

\`bash benches/native-vmm.sh\` (RUNS=$RUNS), $date_start. One L1 boot; inside it the same L2 kernel and
initramfs (the guest kit: kernel $(cat target/guest-kit/version 2>/dev/null || echo '?'), busybox initramfs, unchanged), 256 MiB, 1 vCPU,
serial console on stdio, kernel command line \`$CMDLINE\`, booted by each VMM on real KVM
(kvm-amd in L1). Medians of $RUNS counted runs per VMM and measurement, after one uncounted warm-up run each;
runs alternate between the VMMs (oxvirt, microvm, pc, oxvirt, ...). Ratio = oxvirt-vmm / QEMU: of the medians,
and for boot also the median of the ratios within each round (the runs of a round follow each other
within a few minutes, so they see about the same load from the other work on the machine).

| measurement (median of $RUNS) | oxvirt-vmm | QEMU microvm | QEMU pc | ratio vs microvm | ratio vs pc | target |
|---|---|---|---|---|---|---|
| process start to init marker (s) | ${BOOT[oxvirt]} | ${BOOT[microvm]} | ${BOOT[pc]} | $boot_ratio | $(ratio "${BOOT[oxvirt]}" "${BOOT[pc]}") | < 0.5 of microvm: $(verdict "$boot_ratio" 0.5) |
| … same, median of the per-run ratios | | | | $boot_round_mv | $(round_ratio boot MARKER_MS oxvirt pc) | < 0.5: $(verdict "$boot_round_mv" 0.5) |
| VMM resident memory without guest RAM (MiB) | ${MEMO[oxvirt]} | ${MEMO[microvm]} | ${MEMO[pc]} | $(ratio "${MEMO[oxvirt]}" "${MEMO[microvm]}") | $(ratio "${MEMO[oxvirt]}" "${MEMO[pc]}") | < 5 MiB: $(verdict "${MEMO[oxvirt]}" 5) |
| process start to first KVM_RUN, under strace (ms) | ${KRUN[oxvirt]} | ${KRUN[microvm]} | ${KRUN[pc]} | $(ratio "${KRUN[oxvirt]}" "${KRUN[microvm]}") | $(ratio "${KRUN[oxvirt]}" "${KRUN[pc]}") | < 10 ms: $(verdict "${KRUN[oxvirt]}" 10) |
| … process start to first KVM ioctl (ms) | ${KFIRST[oxvirt]} | ${KFIRST[microvm]} | ${KFIRST[pc]} | $(ratio "${KFIRST[oxvirt]}" "${KFIRST[microvm]}") | $(ratio "${KFIRST[oxvirt]}" "${KFIRST[pc]}") | |
| … time inside ioctls up to the first KVM_RUN (ms) | ${INIOCTL[oxvirt]} | ${INIOCTL[microvm]} | ${INIOCTL[pc]} | | | |
| ioctls before the first KVM_RUN | ${IOCTL[oxvirt]} | ${IOCTL[microvm]} | ${IOCTL[pc]} | | | |

Counted runs that produced a value (boot / memory / KVM_RUN): oxvirt ${N[oxvirt]}, microvm ${N[microvm]}, pc ${N[pc]}.
oxvirt-vmm's whole resident set (guest RAM the guest touched included): $TOTAL_RSS_OX MiB.

**Huge pages**: guest RAM in transparent huge pages at the prompt (AnonHugePages of the guest-RAM mapping,
median, MiB): oxvirt-vmm $(huge_mib oxvirt), microvm $(huge_mib microvm), pc $(huge_mib pc); L1's THP setting is
\`$(top_value BENCH-L1-THP)\`. Both VMMs place guest RAM on a 2 MiB boundary and mark it \`MADV_HUGEPAGE\`
(the \`hg\` flag in the mappings below), so KVM can map it with 2 MiB pages.

Every run, in order:

EOF
    for v in "${VMMS[@]}"; do
        echo "- $v: init marker (s) $(all "$v" boot MARKER_MS 1000); overhead RSS (MiB) $(all "$v" boot RSS_OVERHEAD_KB 1024); first KVM_RUN (ms) $(all "$v" kvmrun FIRST_KVM_RUN_MS)"
    done
    cat <<EOF

**How each value is taken** (in L1, by \`benches/native-vmm/oxbench-time\`, a small Rust program built
outside the workspace, because busybox \`date\` has no sub-second clock: \`+%N\` prints a literal \`%N\`):
1. *Init marker*: the helper reads \`Instant::now()\`, spawns the VMM with its stdout (the guest's serial
   console) on a pipe, and takes the instant the read returning the chunk that completes \`OXVIRT-GUEST-BOOTED\`
   came back. The kit's init prints that line after mounting /proc, /sys, /dev, loading its virtio and button
   modules and starting acpid, so this is kernel boot plus that much of init, the same work under every VMM.
2. *Memory*: the same run continues until the shell prompt \`oxvirt-guest# \` appears (stdin is a pipe kept
   open and never written, so the shell waits), then $SETTLE_S s idle, then /proc/PID/smaps of the VMM
   process. Overhead = sum of Rss over all mappings minus the Rss of the guest-RAM mappings, which are the
   anonymous mappings (no path) at least as large as the guest's 256 MiB: exactly one per VMM here
   (oxvirt-vmm's single RAM region below 3 GiB; QEMU's \`pc.ram\` / \`microvm.ram\`). QEMU's small ROM
   blocks (BIOS 256 KiB or qboot 64 KiB, option ROMs) stay in its overhead. The VMM is then sent SIGTERM.
3. *First KVM_RUN*: separate runs under \`strace -f --seccomp-bpf -ttt -T -e trace=execve,ioctl\`; the time
   from the VMM's \`execve\` to the entry of its first \`KVM_RUN\` ioctl, in strace's own timestamps. The seccomp
   filter stops the process only at ioctls and execve, but each stop costs a round trip through strace, so
   the VMM with more ioctls (QEMU) is slowed more; the "inside ioctls" row is the sum of strace's \`-T\`
   durations, time spent in the kernel (KVM), not in the VMM's own code; "first KVM ioctl" is the end of
   the VMM's own start-up (dynamic loader, libraries, command line). The VMM is killed as soon as the log
   shows KVM_RUN.

QEMU's overhead includes what it keeps to serve the guest's boot files over fw_cfg: an anonymous mapping of
the kernel's size and the initramfs file mapped (both in the list below). In oxvirt-vmm's ioctl list, the
gap between \`KVM_SET_USER_MEMORY_REGION\` and \`KVM_IRQFD\` is the copy of the kernel and initramfs (17 MiB)
into guest RAM, the largest single part of its time to the first KVM_RUN.

Seen by hand on the machine itself (2026-11-22, not by this script): the same strace measurement of
oxvirt-vmm on the host's own \`/dev/kvm\` (kvm_pvm; native, not emulated, user space; load average ~9) gave
30-170 ms to the first KVM_RUN, of which 17-67 ms between \`KVM_SET_USER_MEMORY_REGION\` and \`KVM_IRQFD\`
(the boot-file copy) and 6-60 ms inside KVM ioctls; QEMU could not be compared there (with \`-cpu host\` it
aborts before its first KVM_RUN: "failed to set MSR 0x10a"). The 10 ms target is out of reach on this shared
machine either way; the boot-file copy is the largest part that oxvirt-vmm itself controls.

Guest-RAM mappings and the biggest other mappings (last counted run; sizes in KiB):

\`\`\`
$(for v in "${VMMS[@]}"; do echo "$v:"; maps_of "$v" | sed 's/^/  /'; done)
\`\`\`

oxvirt-vmm's ioctls up to its first KVM_RUN (last run; \`-T\` duration at the end of each line):

\`\`\`
$(sed -n 's/^STRACE-oxvirt //p' "$LOG" | cut -c1-150)
\`\`\`

**Exact commands** (in L1; \`K=/lab/l2/vmlinuz\`, \`I=/lab/l2/initramfs.img\`):
- oxvirt-vmm: \`$(top_value BENCH-CMD-oxvirt | sed 's|/lab/l2/vmlinuz|$K|; s|/lab/l2/initramfs.img|$I|')\` (release build)
- QEMU microvm: \`$(top_value BENCH-CMD-microvm | sed 's|/lab/l2/vmlinuz|$K|; s|/lab/l2/initramfs.img|$I|')\`
- QEMU pc: \`$(top_value BENCH-CMD-pc | sed 's|/lab/l2/vmlinuz|$K|; s|/lab/l2/initramfs.img|$I|')\`

(The command line shows \`$CMDLINE\` unquoted; it is one argument.) QEMU microvm uses its defaults (qboot
firmware, ACPI on, no PCI) plus \`rtc=on\`: with QEMU 7.2's default for this machine there is no CMOS RTC, and
this kernel's \`rtc_cmos\` driver then spins in \`mc146818_avoid_UIP\` on the empty ports for tens of seconds
(a verbose boot in the lab showed a 27 s soft lockup there and "rtc_cmos: broken or not accessible" 51 s of
guest time later), which would have made microvm look far slower than it is.

**Machine**: host $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB, kernel $(uname -r),
shared with other work: load average (1/5/15 min) $load_start at the start and $load_end at the end.
L1: \`$L1_DESC\`, kernel $(top_value BENCH-L1-KERNEL), CPU "$(top_value BENCH-L1-CPU)", $(top_value BENCH-L1-NPROC) vCPUs,
MemTotal $(top_value BENCH-L1-MEMTOTAL); KVM in L1 is kvm-amd (nested SVM emulated by TCG).

**Versions**: oxvirt-vmm $(top_value HOST-GIT | grep . || echo "(from target/release; commit not recorded)"); $(top_value BENCH-QEMU-VERSION) (the same binary as the host's,
copied into L1 with its libraries, \`bios-256k.bin\` from seabios and \`qboot.rom\`, \`linuxboot_dma.bin\`,
\`kvmvapic.bin\`); $(top_value BENCH-STRACE-VERSION).

**Targets** (from the issue): boot to init under half of QEMU microvm's time: $(verdict "$boot_ratio" 0.5) (ratio
of the medians $boot_ratio, median per-run ratio $boot_round_mv); VMM overhead under 5 MiB resident: $(verdict "${MEMO[oxvirt]}" 5) (${MEMO[oxvirt]} MiB); under 10 ms from process
start to first KVM_RUN: $(verdict "${KRUN[oxvirt]}" 10) (${KRUN[oxvirt]} ms under strace in L1).

**Caveats**: L1 runs under TCG, so every instruction of L1 (the VMMs' own code, strace, and the KVM module
emulating nested SVM) is emulated, and L2's VM exits go through an emulated L1 hypervisor. Absolute times are
therefore many times longer than on hardware KVM, and the machine was shared with other work; the ratios
between the VMMs, measured in the same L1 boot with alternating runs, are what to compare. The first-KVM_RUN
time includes strace's stop at each ioctl (in L1, under TCG).
EOF
}

huge_mib() {
    awk -v v="$1" '$1 == "RESULT" && $2 == v && $3 == "boot" && $4 != "0" && $5 == "GUEST_MAP" {
        for (i = 6; i <= NF; i++) if ($i ~ /^anon_huge_kb=/) print substr($i, 14) / 1024 }' "$LOG" | median
}
CMDLINE=$(sed -n 's/^BENCH-CMD-oxvirt=.*--cmdline //p' "$LOG" | head -1)
SETTLE_S=$(sed -n 's/^SETTLE=//p' benches/native-vmm/l1.sh | head -1)
L1_DESC="qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp 1 -nodefaults -display none -no-reboot -serial file:LOG -kernel vmlinuz -initrd l1-initramfs.img -append 'console=ttyS0 panic=-1 quiet oxbench_runs=$RUNS'"
TEXT=$(section)
printf '%s\n' "$TEXT" | sed -n '/^| measurement/,/^$/p' >&2
say "targets: boot ratio vs microvm $boot_ratio (< 0.5), overhead ${MEMO[oxvirt]} MiB (< 5), first KVM_RUN ${KRUN[oxvirt]} ms (< 10)"

if [ "$WRITE_DOC" = 1 ]; then
    doc=docs/benchmarks.md
    [ -f "$doc" ] || printf '# Benchmarks\n' >"$doc"
    printf '%s\n' "$TEXT" >"$WORK/section.md"
    # Replace our section (up to the next "## " heading) or append it.
    awk -v title="$SECTION" -v file="$WORK/section.md" '
        function emit() { while ((getline line < file) > 0) print line; close(file); done = 1 }
        $0 == title { skip = 1; if (!done) emit(); next }
        skip && /^## / { skip = 0; print ""; }
        !skip { print }
        END { if (!done) { print ""; emit() } }' "$doc" >"$WORK/doc.md"
    cp "$WORK/doc.md" "$doc"
    say "wrote the section \"$SECTION\" of $doc"
fi
