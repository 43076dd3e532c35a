#!/usr/bin/env bash
# First-VM benchmark: oxvirt against Debian's libvirt, side by side, on the same domain XML
# (benches/first-vm/domain.xml: TCG, direct kernel boot of the test guest kit, 256 MiB, 1 vCPU, no network,
# serial port written to a file). Prints a table and writes the section "## First VM: oxvirt vs libvirt"
# of docs/benchmarks.md. Ratios are oxvirt / libvirt (below 1: oxvirt is faster or smaller).
#
#   sudo bash benches/first-vm.sh                 # RUNS=5 runs per measurement, 500 defined domains
#   RUNS=2 WRITE_DOC=0 bash benches/first-vm.sh   # quick run while developing, doc left alone
#   SKIP_BUILD=1 ...                              # use the release oxvirtd and oxvirt as they are
#
# What it measures:
#   1. wall time of `oxvirt start` / `virsh start` until the command returns, and until the guest's boot
#      marker (OXVIRT-GUEST-BOOTED) is in the serial log file;
#   2. wall time of `oxvirt list --all` / `virsh list --all` with DOMAINS defined, inactive domains;
#   3. RSS (VmRSS) and PSS (smaps_rollup) of oxvirtd against libvirtd + virtlogd + virtlockd, idle with
#      DOMAINS defined domains, and with 1 running guest.
#
# Needs root (libvirt's qemu:///system), QEMU, and no libvirtd/virtlogd/virtlockd already running: the
# script starts its own (there is no systemd here) and a private oxvirtd in a temporary directory, and on
# exit (also on failure) destroys and undefines every domain it created, stops all four daemons, and
# puts back what it changed (/dev/kvm's mode). It never starts a libvirt network: libvirt's autostarted
# "default" network is disabled before libvirtd starts, so no virbr0 appears in the machine's namespace.
set -euo pipefail
export LC_ALL=C

RUNS=${RUNS:-5}
DOMAINS=${DOMAINS:-500}
WRITE_DOC=${WRITE_DOC:-1}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-120}
MEMORY_SAMPLES=5
MARKER='OXVIRT-GUEST-BOOTED'
PREFIX=firstvm-
VM=${PREFIX}vm
LIBVIRT_PACKAGES=(libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu)
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

say() { printf '[first-vm] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
source benches/lib.sh

[ "$(id -u)" = 0 ] || die "run as root (libvirt's qemu:///system needs it)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
[[ $DOMAINS =~ ^[1-9][0-9]*$ ]] || die "DOMAINS must be a positive number, not '$DOMAINS'"

# ---------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------
missing=()
for package in "${LIBVIRT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi
refuse_running_libvirt_daemons

build_oxvirt_and_guest_kit

make_work_dir /tmp/first-vm.XXXXXX
OXVIRTD_BIN=$WORK/oxvirtd
VIRSH=(virsh -c qemu:///system)
SERIAL_LOG=$WORK/serial.log
OXVIRTD_PID=

# ---------------------------------------------------------------------------------------------------------
# Cleanup: runs on every exit, also after a failure or Ctrl-C.
# ---------------------------------------------------------------------------------------------------------
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    say "cleaning up"
    if pid_alive "$(pid_from_file "$WORK/libvirtd.pid")"; then remove_libvirt_domains "$PREFIX"; fi
    if pid_alive "$OXVIRTD_PID"; then
        "${OXVIRT[@]}" destroy "$VM" > /dev/null 2>&1
        stop_pid "$OXVIRTD_PID"
    fi
    stop_oxvirt_guests "$OX_STATE"
    stop_libvirt_daemons "$WORK"
    restore_kvm_mode
    if [ "${KEEP_WORK:-0}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------------------
# Daemons
# ---------------------------------------------------------------------------------------------------------
cp target/guest-kit/vmlinuz target/guest-kit/initramfs.img "$WORK/"
chmod 644 "$WORK/vmlinuz" "$WORK/initramfs.img"

domain_xml() { # name, serial log path
    sed -e "s|@NAME@|$1|" -e "s|@KERNEL@|$WORK/vmlinuz|" -e "s|@INITRD@|$WORK/initramfs.img|" \
        -e "s|@SERIAL_LOG@|$2|" benches/first-vm/domain.xml
}
domain_xml "$VM" "$SERIAL_LOG" > "$WORK/vm.xml"

give_kvm_to_libvirt

keep_libvirt_networks_down

say "starting virtlogd, virtlockd, libvirtd"
start_libvirt_daemons "$WORK"
for net in $("${VIRSH[@]}" net-list --name); do # active networks: none expected
    [ "$net" = default ] || die "libvirt network '$net' is active: refusing to go on"
    "${VIRSH[@]}" net-destroy default > /dev/null
done
! ip link show virbr0 > /dev/null 2>&1 || say "warning: virbr0 exists (not created by this run)"

say "starting oxvirtd"
start_oxvirtd "$WORK/oxvirtd.log" "$OXVIRTD_BIN" --socket "$OX_SOCKET" --state-dir "$OX_STATE" --log-level warn

LIBVIRTD_PID=$(pid_from_file "$WORK/libvirtd.pid")
VIRTLOGD_PID=$(pid_from_file "$WORK/virtlogd.pid")
VIRTLOCKD_PID=$(pid_from_file "$WORK/virtlockd.pid")

# ---------------------------------------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------------------------------------
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

seconds_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

wait_for_marker() {
    local deadline=$((${EPOCHREALTIME%.*} + BOOT_TIMEOUT))
    until grep -qs "$MARKER" "$SERIAL_LOG"; do
        ((${EPOCHREALTIME%.*} < deadline)) || die "no $MARKER in $SERIAL_LOG after ${BOOT_TIMEOUT}s"
        sleep 0.01
    done
}

# The exact commands, for the doc.
START_CMD_OX="oxvirt --socket \$SOCK start $VM"
START_CMD_LV="virsh -c qemu:///system start $VM"
LIST_CMD_OX="oxvirt --socket \$SOCK list --all"
LIST_CMD_LV="virsh -c qemu:///system list --all"

client() { # system (ox|lv), args...
    local system=$1
    shift
    if [ "$system" = ox ]; then "${OXVIRT[@]}" "$@"; else "${VIRSH[@]}" "$@"; fi
}

# start_once SYSTEM: starts the VM, waits for the boot marker, destroys the VM. Sets RETURNED and BOOTED
# (seconds from just before the start command).
start_once() {
    local system=$1 t0
    rm -f "$SERIAL_LOG"
    t0=$EPOCHREALTIME
    client "$system" start "$VM" > /dev/null
    RETURNED=$(seconds_since "$t0")
    wait_for_marker
    BOOTED=$(seconds_since "$t0")
    client "$system" destroy "$VM" > /dev/null
    sleep 1 # let the host settle (QEMU teardown, log files) before the next run
}

list_once() { # system: sets LISTED (seconds)
    local t0
    t0=$EPOCHREALTIME
    client "$1" list --all > /dev/null
    LISTED=$(seconds_since "$t0")
}

# Memory of a process, in KiB: "rss pss".
memory_of() {
    local rss pss
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status")
    pss=$(awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup")
    echo "$rss $pss"
}

# oxvirtd and its helper children (not the QEMU processes it runs: libvirt's QEMU is not counted either).
oxvirt_pids() {
    echo "$OXVIRTD_PID"
    ps -e -o pid=,ppid=,comm= | awk -v p="$OXVIRTD_PID" '$2 == p && $3 !~ /^qemu-system/ { print $1 }'
}

# sample_memory LABEL: medians over MEMORY_SAMPLES samples, 1 s apart; sets MEM[LABEL.<daemon>.<rss|pss>].
declare -A MEM
sample_memory() {
    local label=$1 i pid rss pss key
    declare -A samples=()
    for ((i = 0; i < MEMORY_SAMPLES; i++)); do
        rss=0 pss=0
        for pid in $(oxvirt_pids); do
            read -r r p < <(memory_of "$pid")
            rss=$((rss + r)) pss=$((pss + p))
        done
        samples[oxvirtd.rss]+=" $rss" samples[oxvirtd.pss]+=" $pss"
        for key in libvirtd:$LIBVIRTD_PID virtlogd:$VIRTLOGD_PID virtlockd:$VIRTLOCKD_PID; do
            read -r rss pss < <(memory_of "${key#*:}")
            samples[${key%%:*}.rss]+=" $rss" samples[${key%%:*}.pss]+=" $pss"
        done
        sleep 1
    done
    for key in "${!samples[@]}"; do
        # shellcheck disable=SC2086 # word splitting of the sample list is intended
        MEM[$label.$key]=$(median ${samples[$key]})
    done
    for kind in rss pss; do
        MEM[$label.libvirt.$kind]=$((${MEM[$label.libvirtd.$kind]} + ${MEM[$label.virtlogd.$kind]} + ${MEM[$label.virtlockd.$kind]}))
    done
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---------------------------------------------------------------------------------------------------------
# 1. start
# ---------------------------------------------------------------------------------------------------------
"${OXVIRT[@]}" define "$WORK/vm.xml" > /dev/null
"${VIRSH[@]}" define "$WORK/vm.xml" > /dev/null

say "start: 1 warm-up run each (not counted), then $RUNS runs each, alternating which goes first"
start_once ox
start_once lv
START_RET_OX=() START_MARK_OX=() START_RET_LV=() START_MARK_LV=()
for ((run = 1; run <= RUNS; run++)); do
    order=(ox lv)
    ((run % 2)) || order=(lv ox)
    for system in "${order[@]}"; do
        start_once "$system"
        if [ "$system" = ox ]; then
            START_RET_OX+=("$RETURNED") START_MARK_OX+=("$BOOTED")
        else
            START_RET_LV+=("$RETURNED") START_MARK_LV+=("$BOOTED")
        fi
        say "  run $run $system: start returned in ${RETURNED}s, boot marker after ${BOOTED}s"
    done
done

# ---------------------------------------------------------------------------------------------------------
# 2. list --all with DOMAINS defined domains (the VM plus DOMAINS-1 fillers, all inactive)
# ---------------------------------------------------------------------------------------------------------
say "defining $((DOMAINS - 1)) more domains in each system"
mkdir "$WORK/fillers"
for ((n = 1; n < DOMAINS; n++)); do
    name=$(printf '%s%04d' "$PREFIX" "$n")
    domain_xml "$name" "$WORK/fillers/$name.log" > "$WORK/fillers/$name.xml"
    "${OXVIRT[@]}" define "$WORK/fillers/$name.xml" > /dev/null
    echo "define $WORK/fillers/$name.xml"
done | "${VIRSH[@]}" -q > /dev/null
for system in ox lv; do
    count=$(client "$system" list --all --name | grep -c "^$PREFIX")
    [ "$count" = "$DOMAINS" ] || die "$system lists $count of our domains, expected $DOMAINS"
done

say "list --all: 1 warm-up run each, then $RUNS runs each"
list_once ox
list_once lv
LIST_OX=() LIST_LV=()
for ((run = 1; run <= RUNS; run++)); do
    list_once ox
    LIST_OX+=("$LISTED")
    list_once lv
    LIST_LV+=("$LISTED")
    say "  run $run: oxvirt ${LIST_OX[-1]}s, virsh ${LIST_LV[-1]}s"
done

# ---------------------------------------------------------------------------------------------------------
# 3. memory: idle with DOMAINS defined domains, then with 1 running guest
# ---------------------------------------------------------------------------------------------------------
say "memory: idle with $DOMAINS defined domains"
sleep 3
sample_memory idle

say "memory: 1 running guest (each system's own, one at a time)"
for system in ox lv; do
    rm -f "$SERIAL_LOG"
    client "$system" start "$VM" > /dev/null
    wait_for_marker
    sleep 2
    sample_memory "running-$system"
    client "$system" destroy "$VM" > /dev/null
done
for kind in rss pss; do
    MEM[running.oxvirtd.$kind]=${MEM[running-ox.oxvirtd.$kind]}
    for daemon in libvirtd virtlogd virtlockd libvirt; do
        MEM[running.$daemon.$kind]=${MEM[running-lv.$daemon.$kind]}
    done
done
LOAD_AT_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------
OX_VERSION=$("${OXVIRT[@]}" version | sed '/^$/d' | paste -sd';' | sed 's/;/; /g')
LV_VERSION=$("${VIRSH[@]}" version | sed '/^$/d' | paste -sd';' | sed 's/;/; /g')
QEMU_VERSION=$(qemu-system-x86_64 --version | head -1)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM_GIB=$(free -g | awk '/^Mem:/ { print $2 }')
GUEST_KERNEL=$(cat target/guest-kit/version 2> /dev/null || echo unknown)
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2> /dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2> /dev/null)" ]; then
    COMMIT="$COMMIT plus uncommitted changes"
fi
BUSY=$(awk -v a="${LOAD_AT_START%% *}" -v b="${LOAD_AT_END%% *}" 'BEGIN { print (a >= 1.5 || b >= 1.5) }')
LOAD_NOTE=""
if [ "$BUSY" = 1 ]; then
    LOAD_NOTE=" The machine was busy with other work during the run (1-minute load of 1.5 or more): absolute
times are slower and noisier than on an idle machine; the ratios are the figures to compare."
fi

med_ret_ox=$(median "${START_RET_OX[@]}") med_ret_lv=$(median "${START_RET_LV[@]}")
med_mark_ox=$(median "${START_MARK_OX[@]}") med_mark_lv=$(median "${START_MARK_LV[@]}")
med_list_ox=$(median "${LIST_OX[@]}") med_list_lv=$(median "${LIST_LV[@]}")
# Three decimals: a ratio just above the 0.25 target must not print as "0.25".
start_ratio=$(awk -v a="$med_ret_ox" -v b="$med_ret_lv" 'BEGIN { printf "%.3f", a / b }')
mem_ratio_idle=$(ratio "${MEM[idle.oxvirtd.rss]}" "${MEM[idle.libvirtd.rss]}")
mem_ratio_running=$(ratio "${MEM[running.oxvirtd.rss]}" "${MEM[running.libvirtd.rss]}")
mem_ratio_idle_all=$(ratio "${MEM[idle.oxvirtd.rss]}" "${MEM[idle.libvirt.rss]}")
mem_ratio_running_all=$(ratio "${MEM[running.oxvirtd.rss]}" "${MEM[running.libvirt.rss]}")

verdict() { # value, limit
    awk -v v="$1" -v l="$2" 'BEGIN { print (v < l) ? "**met**" : "**not met**" }'
}
both_verdict() { # value, value, limit
    if [ "$(verdict "$1" "$3")" = "**met**" ] && [ "$(verdict "$2" "$3")" = "**met**" ]; then
        echo "**met**"
    else
        echo "**not met**"
    fi
}
TARGETS="**Targets** (from the issue): \`oxvirt start\` returns in under a quarter of \`virsh start\`'s time:
$(verdict "$start_ratio" 0.25) (ratio of medians $start_ratio). oxvirtd uses under half of libvirtd's memory:
$(both_verdict "$mem_ratio_idle" "$mem_ratio_running" 0.5) (RSS ratio $mem_ratio_idle idle and $mem_ratio_running with a running guest, against libvirtd
alone; $mem_ratio_idle_all and $mem_ratio_running_all against libvirtd + virtlogd + virtlockd)."

time_row() { # label, ox, lv, target
    printf '| %s | %.3f | %.3f | %s | %s |\n' "$1" "$2" "$3" "$(ratio "$2" "$3")" "$4"
}
mem_row() { # label, state, kind, target
    local ox=${MEM[$2.oxvirtd.$3]} lv=${MEM[$2.libvirt.$3]} lvd=${MEM[$2.libvirtd.$3]}
    printf '| %s | %s | %s (libvirtd alone: %s) | %s (vs libvirtd alone: %s) | %s |\n' "$1" \
        "$(mib "$ox")" "$(mib "$lv")" "$(mib "$lvd")" "$(ratio "$ox" "$lv")" "$(ratio "$ox" "$lvd")" "$4"
}

TABLE=$(
    echo "| measurement (median of $RUNS) | oxvirt | libvirt | ratio oxvirt/libvirt | target |"
    echo "|---|---|---|---|---|"
    time_row "\`start\` returns (s)" "$med_ret_ox" "$med_ret_lv" "< 0.25: $(verdict "$start_ratio" 0.25)"
    time_row "\`start\` to boot marker in the serial log (s)" "$med_mark_ox" "$med_mark_lv" ""
    time_row "\`list --all\`, $DOMAINS inactive domains (s)" "$med_list_ox" "$med_list_lv" ""
    for state in idle running; do
        label="idle, $DOMAINS domains defined"
        [ "$state" = idle ] || label="1 running guest, $DOMAINS defined"
        ox=${MEM[$state.oxvirtd.rss]} lvd=${MEM[$state.libvirtd.rss]}
        mem_row "daemon RSS (MiB), $label" "$state" rss \
            "< 0.5 of libvirtd: $(verdict "$(ratio "$ox" "$lvd")" 0.5)"
        mem_row "daemon PSS (MiB), $label" "$state" pss ""
    done
)
BREAKDOWN=$(
    echo "| daemon | RSS idle | PSS idle | RSS 1 guest | PSS 1 guest |"
    echo "|---|---|---|---|---|"
    for daemon in oxvirtd libvirtd virtlogd virtlockd; do
        printf '| %s | %s | %s | %s | %s |\n' "$daemon" "$(mib "${MEM[idle.$daemon.rss]}")" \
            "$(mib "${MEM[idle.$daemon.pss]}")" "$(mib "${MEM[running.$daemon.rss]}")" \
            "$(mib "${MEM[running.$daemon.pss]}")"
    done
)
RAW=$(
    echo "- \`start\` returns (s): oxvirt ${START_RET_OX[*]}; virsh ${START_RET_LV[*]}"
    echo "- boot marker (s): oxvirt ${START_MARK_OX[*]}; libvirt ${START_MARK_LV[*]}"
    echo "- \`list --all\` (s): oxvirt ${LIST_OX[*]}; virsh ${LIST_LV[*]}"
)

echo
echo "$TABLE"
echo
echo "$BREAKDOWN"
echo
echo "$RAW"
echo
echo "load average at start: $LOAD_AT_START; at end: $LOAD_AT_END"
echo
echo "$TARGETS"

[ "$WRITE_DOC" = 1 ] || exit 0

SECTION=$WORK/section.md
cat > "$SECTION" << EOF
## First VM: oxvirt vs libvirt

\`bash benches/first-vm.sh\` (RUNS=$RUNS, DOMAINS=$DOMAINS), $(date -u '+%Y-%m-%d %H:%M UTC'). Release build
of oxvirt (commit $COMMIT); Debian's libvirt with its default configuration. Medians of $RUNS runs each, after one
uncounted warm-up run each; oxvirt and libvirt runs alternate (which goes first flips every run), and the
guest is destroyed after every start. Memory: median of $MEMORY_SAMPLES samples 1 s apart, MiB.

$TABLE

$TARGETS

Memory per daemon (MiB; the libvirt column above is libvirtd + virtlogd + virtlockd; the RSS sum counts
the libraries they share three times, the PSS sum does not). With a guest running, the numbers are each
system's own daemons while its own guest runs; QEMU itself (the same binary for both) is not counted.

$BREAKDOWN

Every run, in order:

$RAW

**Machine**: $(nproc) cores ($CPU_MODEL), ${MEM_GIB} GiB (\`free -g\`), kernel $(uname -r); load
average (1/5/15 min) $LOAD_AT_START at the start and $LOAD_AT_END at the end.$LOAD_NOTE

**Versions**: oxvirt: $OX_VERSION. libvirt: $LV_VERSION. $QEMU_VERSION.

**The domain**: [benches/first-vm/domain.xml](../benches/first-vm/domain.xml), identical for both:
\`<domain type='qemu'>\` (TCG), 256 MiB, 1 vCPU, direct kernel boot of the test guest kit
(\`scripts/guest-kit.sh\`: kernel $GUEST_KERNEL + busybox initramfs, cmdline \`console=ttyS0 panic=-1\`), ACPI, no network, and
\`<serial type='file'>\`. The boot marker \`$MARKER\` is detected by polling that file every 10 ms for
both systems (oxvirt's QEMU writes the file itself; libvirt hands QEMU a pipe to virtlogd, which writes
the file: that is libvirt's normal design, so its extra hop is part of what is measured). A pty serial
port would log to \`STATE_DIR/run/<uuid>/console.log\` in oxvirt, but libvirt needs an extra \`<log>\`
element for that; the file serial port keeps the XML identical.

**Not the same work**: on \`start\`, libvirt also isolates the guest, and oxvirt does not (yet): it runs
QEMU as the unprivileged libvirt-qemu user with a seccomp sandbox (\`-sandbox on,...\`) in a private mount
namespace, relabels the kernel and initramfs for that user, creates the domain's cgroup, and starts QEMU
paused (\`-S\`) to configure it over QMP before \`cont\`; oxvirt runs QEMU as root and only checks its
status over QMP. Part of libvirt's time buys that isolation.

**Commands timed** (wall time from just before the command to its return; \`\$SOCK\` is the private
oxvirtd's socket):
- \`$START_CMD_OX\` vs \`$START_CMD_LV\` (then \`destroy\` with the same tool, untimed)
- \`$LIST_CMD_OX\` vs \`$LIST_CMD_LV\`

**Setup** (done by the script): \`virtlogd -d; virtlockd -d; libvirtd -d\` started by hand (no systemd),
and a private \`oxvirtd --socket \$SOCK --state-dir \$DIR\` in a temporary directory; both stopped at the end.
No libvirt network is started ($NET_NOTE); no virbr0 is created. /dev/kvm is made root:kvm 0660 for the
run, as Debian's udev does, when it is root-only (containers without udev): otherwise libvirt, running QEMU
as libvirt-qemu, finds its QEMU capability cache outdated ("KVM was enabled when probing, but it is not
available now") and probes QEMU again on every start, which made \`virsh start\` take 4-7 s here instead
of under 1 s. $((DOMAINS - 1)) filler domains (same XML, other names, never started) are defined with
\`oxvirt define\` (one process each) and one \`virsh\` session reading \`define\` commands.
EOF

DOC=$REPO/docs/benchmarks.md
[ -f "$DOC" ] || printf '# Benchmarks\n\nEach section is written by the script it names; re-run the script to refresh it.\n' > "$DOC"
TITLE="## First VM: oxvirt vs libvirt"
awk -v title="$TITLE" -v section="$SECTION" '
    function put_section(  line) { while ((getline line < section) > 0) print line; close(section) }
    $0 == title { put_section(); skipping = 1; done = 1; next }
    skipping && /^## / { skipping = 0; print "" }
    !skipping { print; last = $0 }
    END { if (!done) { if (last != "") print ""; put_section() } }
' "$DOC" > "$WORK/benchmarks.md"
cp "$WORK/benchmarks.md" "$DOC"
say "wrote \"$TITLE\" in docs/benchmarks.md"
