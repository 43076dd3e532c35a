#!/usr/bin/env bash
# Live resource changes benchmark (issue 11): oxvirt against Debian's libvirt, side by side on the same
# guest (benches/live/domain.xml: TCG, 1 of 2 vCPUs, 512 MiB with a virtio balloon, direct kernel boot of the
# test guest kit, no disk, no network). Prints a table and writes the section "## Live changes: oxvirt vs
# libvirt" of docs/benchmarks.md. Ratios are oxvirt / libvirt (below 1: oxvirt is faster).
#
#   sudo bash benches/live.sh               # RUNS=5 runs per measurement and system, after 1 warm-up
#   RUNS=2 WRITE_DOC=0 bash benches/live.sh # quick run while developing, doc left alone
#   SKIP_BUILD=1 ...                        # use the release binaries as they are
#
# What it measures, for each change: the wall time from just before the command until it returned, and until
# the guest saw the change (its lab script, benches/live/guest/run.sh, prints what it sees of its CPUs,
# memory and disks on its serial console whenever that changes, checked every 20 ms; the host reads the
# console's log file every 20 ms):
#   1. `setvcpus DOM 2 --live` (a vCPU hot-plugged; seen: 2 CPUs online), then `setvcpus DOM 1 --live` (the
#      vCPU unplugged; seen: 1 CPU);
#   2. `setmem DOM 384M --live` (the balloon inflates by 128 MiB; seen: MemTotal at least 120 MiB lower), then
#      `setmem DOM 512M --live` (seen: MemTotal back);
#   3. `attach-disk DOM FILE vdb --live --subdriver raw` (a 64 MiB raw file; seen: /sys/block/vdb), then
#      `detach-disk DOM vdb --live` (seen: vdb gone).
# Each run has both systems, one after the other; which goes first flips every run.
#
# Needs root, QEMU, and no libvirtd/virtlogd/virtlockd already running: as benches/snapshots.sh, the script
# starts its own libvirt daemons by hand (no systemd) and a private oxvirtd in a temporary directory, and on
# exit (also on failure) destroys and undefines every domain it created, stops the daemons and puts
# /dev/kvm's mode back. It never starts a network (libvirt's default network is kept down, oxvirtd runs with
# --no-default-network, the domain has no interface).
set -euo pipefail
export LC_ALL=C

RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
WRITE_DOC=${WRITE_DOC:-1}
GUEST_TIMEOUT=${GUEST_TIMEOUT:-300}
PREFIX=livebench-
VM=${PREFIX}vm
TITLE="## Live changes: oxvirt vs libvirt"
LIBVIRT_PACKAGES=(libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-utils cpio)
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

say() { printf '[live] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
source benches/lib.sh

check_root_runs_warmup

# ---------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------
start_libvirt_side build_oxvirt_and_guest_kit /var/tmp/live-bench.XXXXXX "${LIBVIRT_PACKAGES[@]}"

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    say "cleaning up"
    stop_both_sides "$PREFIX"
    finish_work "$status"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TIME_DECIMALS=3 # milliseconds: the changes take a fraction of a second
UPTIME_AT_START=$(uptime)

# The guest: the test guest kit plus a cpio with the script that reports what it sees.
kit_with_lab_script benches/live/guest/run.sh

serial_log() { echo "$WORK/$1.serial.log"; }
for system in ox lv; do
    sed -e "s|@NAME@|$VM|" -e "s|@SERIAL_LOG@|$(serial_log "$system")|" \
        -e "s|@KERNEL@|$WORK/vmlinuz|" -e "s|@INITRD@|$WORK/initramfs.img|" -e "s|@DISK@|$WORK/$system-vda.raw|" \
        benches/live/domain.xml > "$WORK/$system-vm.xml"
    # The disk each system starts with (vda) and the one it hot-plugs (vdb): 64 MiB of raw zeros each.
    for disk in vda vdb; do
        truncate -s 64M "$WORK/$system-$disk.raw"
        chmod 644 "$WORK/$system-$disk.raw"
    done
done

start_both_daemons

client() { # system (ox|lv), args...
    local system=$1
    shift
    if [ "$system" = ox ]; then "${OXVIRT[@]}" "$@"; else "${VIRSH[@]}" "$@"; fi
}
system_name() { if [ "$1" = ox ]; then echo oxvirt; else echo libvirt; fi; }

# The guest's last report: "cpus=N mem=KIB vdb=0|1".
guest_state() { grep -a -o 'OXLIVE [0-9]* cpus=[0-9]* mem=[0-9]* vdb=[01]' "$(serial_log "$1")" | tail -1 | cut -d' ' -f3-; }
state_value() { guest_state "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; } # system, key
# wait_seen SYSTEM T0 CONDITION...: waits until CONDITION (a command run with the guest's state as its last
# argument) holds; sets SEEN to the seconds since T0. Polls every 20 ms, for at most GUEST_TIMEOUT seconds.
wait_seen() {
    local system=$1 t0=$2 deadline=$((${EPOCHREALTIME%.*} + GUEST_TIMEOUT))
    shift 2
    until "$@" "$(guest_state "$system")"; do
        ((${EPOCHREALTIME%.*} < deadline)) || die "$(system_name "$system"): the guest did not see it ($*) within ${GUEST_TIMEOUT}s; it says: $(guest_state "$system")"
        sleep 0.02
    done
    SEEN=$(seconds_since "$t0")
}
cpus_are() { [[ " $2 " == *" cpus=$1 "* ]]; }
vdb_is() { [[ " $2 " == *" vdb=$1 "* ]]; }
mem_at_most() { local m=${2#*mem=}; m=${m%% *}; ((m <= $1)); }
mem_at_least() { local m=${2#*mem=}; m=${m%% *}; ((m >= $1)); }

declare -A T # T[row.system.returned|seen] = the runs' seconds, space separated
record() { T[$1.$2.$3]+="${T[$1.$2.$3]:+ }$4"; }
OTHERS=() # other QEMU processes on the machine (not this benchmark's) at the start of each run
count_others() { OTHERS+=("$(pgrep -af qemu-system | grep -v "$WORK" | grep -c . || true)"); }
LOADS=()

# measure SYSTEM ROW COUNTED CONDITION... -- COMMAND...: one change, timed. The client runs in the
# background while the guest's reports are read every 20 ms: RETURNED is when the command returned, SEEN when
# the guest first reported CONDITION (a command run with the guest's state as its last argument), each from
# just before the command started, whichever comes first. A failure of the command ends the run with its
# output, but for one: libvirt gives up waiting for a guest to eject an unplugged device after 5 s ("...
# unplug request timed out. Unplug result must be manually inspected"), while the unplug goes on; such runs
# are counted in TIMEOUTS and their SEEN says when the guest had it.
declare -A TIMEOUTS
measure() {
    local system=$1 row=$2 counted=$3 condition=() pid t0 returned= seen= deadline
    shift 3
    while [ "$1" != -- ]; do condition+=("$1"); shift; done
    shift
    deadline=$((${EPOCHREALTIME%.*} + GUEST_TIMEOUT))
    t0=$EPOCHREALTIME
    client "$system" "$@" > "$WORK/last.out" 2>&1 &
    pid=$!
    while [ -z "$returned" ] || [ -z "$seen" ]; do
        if [ -z "$seen" ] && "${condition[@]}" "$(guest_state "$system")"; then
            seen=$(seconds_since "$t0")
        fi
        if [ -z "$returned" ] && ! kill -0 "$pid" 2> /dev/null; then
            if ! wait "$pid"; then
                grep -q 'unplug request timed out' "$WORK/last.out" || die "$(system_name "$system"): \`$*\` failed: $(cat "$WORK/last.out")"
                TIMEOUTS[$system.$1]=$((${TIMEOUTS[$system.$1]:-0} + 1))
            fi
            returned=$(seconds_since "$t0")
        fi
        ((${EPOCHREALTIME%.*} < deadline)) || die "$(system_name "$system") \`$*\`: returned: ${returned:-no}; the guest did not see it (${condition[*]}) within ${GUEST_TIMEOUT}s; it says: $(guest_state "$system")"
        sleep 0.02
    done
    say "  $(system_name "$system") $row: returned ${returned}s, seen ${seen}s"
    if [ "$counted" = 1 ]; then
        record "$row" "$system" returned "$returned"
        record "$row" "$system" seen "$seen"
    fi
}

# ---------------------------------------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------------------------------------
# boot SYSTEM: starts the guest and waits until its lab script reports (untimed).
boot() {
    : > "$(serial_log "$1")"
    client "$1" start "$VM" > /dev/null
    wait_seen "$1" "$EPOCHREALTIME" cpus_are 1
}

MEM_FULL=()
say "booting the guest in both systems"
for system in ox lv; do
    client "$system" define "$WORK/$system-vm.xml" > /dev/null
    boot "$system"
    MEM_FULL+=("$system:$(state_value "$system" mem)")
done
say "  the guests' MemTotal at start (KiB): ${MEM_FULL[*]}"
full_mem() { printf '%s\n' "${MEM_FULL[@]}" | sed -n "s/^$1://p"; }

# One run: the disk, the memory, then the vCPUs. QEMU 7.2 under TCG (Debian 12's) crashes on the next
# device_add after a vCPU was unplugged, under libvirt as under oxvirt (see docs/benchmarks.md), so every
# run but the last ends with the guest restarted (untimed).
once() { # system, counted, last (1/0)
    local system=$1 counted=$2 last=$3 full
    full=$(full_mem "$system")
    count_others
    measure "$system" attach-disk "$counted" vdb_is 1 -- attach-disk "$VM" "$WORK/$system-vdb.raw" vdb --live --subdriver raw
    measure "$system" detach-disk "$counted" vdb_is 0 -- detach-disk "$VM" vdb --live
    measure "$system" setmem-down "$counted" mem_at_most $((full - 120 * 1024)) -- setmem "$VM" 384M --live
    measure "$system" setmem-up "$counted" mem_at_least "$full" -- setmem "$VM" 512M --live
    measure "$system" setvcpus-up "$counted" cpus_are 2 -- setvcpus "$VM" 2 --live
    measure "$system" setvcpus-down "$counted" cpus_are 1 -- setvcpus "$VM" 1 --live
    if [ "$last" = 0 ]; then
        client "$system" destroy "$VM" > /dev/null
        boot "$system"
    fi
}

LOADS+=("start: $(load)")
say "$WARMUP warm-up run(s) each, then $RUNS runs each"
if [ "$WARMUP" = 1 ]; then
    for system in ox lv; do once "$system" 0 0; done
fi
for ((run = 1; run <= RUNS; run++)); do
    order=(ox lv)
    ((run % 2)) || order=(lv ox)
    for system in "${order[@]}"; do once "$system" 1 $((run == RUNS)); done
done
LOADS+=("end: $(load)")
for system in ox lv; do client "$system" destroy "$VM" > /dev/null; done
UPTIME_AT_END=$(uptime)

# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------
OX_VERSION=$("${OXVIRT[@]}" version | sed '/^$/d' | paste -sd';' | sed 's/;/; /g')
LV_VERSION=$("${VIRSH[@]}" version | sed '/^$/d' | paste -sd';' | sed 's/;/; /g')
QEMU_VERSION=$(qemu-system-x86_64 --version | head -1)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
CPUS=$(nproc)
MEM_GIB=$(free -g | awk '/^Mem:/ { print $2 }')
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2> /dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2> /dev/null)" ]; then
    COMMIT="$COMMIT plus uncommitted changes"
fi

cell() { # ROW.SYSTEM.KIND: "median (min–max)"
    local median low high
    [ -n "${T[$1]:-}" ] || { echo -; return 0; }
    # shellcheck disable=SC2086 # the run list is space separated on purpose
    read -r median low high < <(stats ${T[$1]})
    echo "$median ($low–$high)"
}
row() { # label, row key, kind
    local ox lv r=-
    ox=$(cell "$2.ox.$3") lv=$(cell "$2.lv.$3")
    [ "$ox" = - ] || [ "$lv" = - ] || r="**$(ratio "${ox%% *}" "${lv%% *}")**"
    printf '| %s | %s | %s | %s |\n' "$1" "$ox" "$lv" "$r"
}
TABLE=$(
    echo "| operation, seconds: median (min–max) of $RUNS | oxvirt | libvirt | ratio oxvirt/libvirt (medians) |"
    echo "|---|---|---|---|"
    row "\`setvcpus DOM 2 --live\`, returns" setvcpus-up returned
    row "… until the guest has 2 CPUs online" setvcpus-up seen
    row "\`setvcpus DOM 1 --live\`, returns" setvcpus-down returned
    row "… until the guest has 1 CPU online" setvcpus-down seen
    row "\`setmem DOM 384M --live\`, returns" setmem-down returned
    row "… until the guest's MemTotal is 120 MiB lower" setmem-down seen
    row "\`setmem DOM 512M --live\`, returns" setmem-up returned
    row "… until the guest's MemTotal is back" setmem-up seen
    row "\`attach-disk DOM FILE vdb --live --subdriver raw\`, returns" attach-disk returned
    row "… until the guest has /sys/block/vdb" attach-disk seen
    row "\`detach-disk DOM vdb --live\`, returns" detach-disk returned
    row "… until vdb is gone in the guest" detach-disk seen
)
RAW=$(
    for key in "${!T[@]}"; do echo "- $key (s): ${T[$key]}"; done | sort
    echo "- other QEMU processes on the machine (not this benchmark's) at the start of each run, warm-ups included: ${OTHERS[*]}"
    for key in "${!TIMEOUTS[@]}"; do
        echo "- $(system_name "${key%%.*}") \`${key#*.}\`: returned \"unplug request timed out\" in ${TIMEOUTS[$key]} run(s), warm-ups included (the unplug went on; its time until the guest saw it is counted)"
    done
)

echo
echo "$TABLE"
echo
echo "$RAW"
echo
echo "uptime at start: $UPTIME_AT_START"
echo "uptime at end:   $UPTIME_AT_END"

[ "$WRITE_DOC" = 1 ] || exit 0

# busy_note: a warning when the machine ran other work: a one-minute load average above its CPU count at the
# start (at the end, the benchmark's own two guests count in it).
busy_note() {
    local value
    value=$(printf '%s\n' "${LOADS[0]}" | awk '{ print $2 }')
    if awk -v l="$value" -v c="$CPUS" 'BEGIN { exit !(l > c) }'; then
        echo " The machine was busy with other work during this run (load above its $CPUS CPUs at the start): both systems shared it alike, run for run, but the absolute figures and the spread are larger than on a quiet machine."
    fi
}

SECTION=$WORK/section.md
cat > "$SECTION" << EOF
$TITLE

\`bash benches/live.sh\` (RUNS=$RUNS, WARMUP=$WARMUP), $(date -u '+%Y-%m-%d %H:%M UTC'). Release build of oxvirt
(commit $COMMIT); Debian's libvirt with its default configuration. For each change: wall seconds from just
before the command until it returned, and until the guest saw the change (its lab script prints what it sees
of its CPUs, memory and disks whenever that changes, checked every 20 ms; the host reads the serial log every
20 ms while the command runs, so "seen" carries up to about 40 ms of polling, and can come before "returned"
when a command waits for more than the guest's view: an unplug waits until QEMU reports the device gone). Median, with the fastest and slowest run, of $RUNS runs
each$([ "$WARMUP" = 1 ] && echo ", after one uncounted warm-up run each"); each run has both systems one after
the other, and which goes first flips every run. Ratios are of the medians, oxvirt / libvirt (below 1: oxvirt
is faster).

$TABLE

**The guest**: [benches/live/domain.xml](../benches/live/domain.xml), the same definition in both systems but
for its serial log file: \`<domain type='qemu'>\` (TCG for both: /dev/kvm here is not hardware KVM), machine
\`pc\` (ACPI PCI hot-plug), 1 of 2 vCPUs, 512 MiB with a virtio balloon, direct kernel boot of the test guest
kit (kernel $GUEST_KERNEL; its hotplug helper brings new CPUs online) with
[benches/live/guest/run.sh](../benches/live/guest/run.sh) as the lab script. MemTotal at start (KiB):
${MEM_FULL[*]}. Both guests run the whole time, idle but for their reporting loop.

**Commands timed** (DOM is \`$VM\`; \`oxvirt\` talks to a private oxvirtd, \`virsh\` to \`qemu:///system\` of a
libvirtd started by the script): \`setvcpus DOM 2 --live\`, \`setvcpus DOM 1 --live\`, \`setmem DOM 384M
--live\`, \`setmem DOM 512M --live\`, \`attach-disk DOM FILE vdb --live --subdriver raw\` (a 64 MiB raw file,
each system its own), \`detach-disk DOM vdb --live\`, in the order attach, detach, setmem down and up,
setvcpus up and down in every run. Every run but the last ends with the guest destroyed and started again
(untimed): Debian 12's QEMU 7.2 under TCG crashes (SIGSEGV) on the next \`device_add\` after a vCPU was
unplugged, with libvirt as with oxvirt (found by this benchmark; README.md, vCPU hotplug).

**Machine**: $CPU_MODEL, $CPUS CPUs, $MEM_GIB GiB; load average at the start and end: ${LOADS[*]}.$(busy_note) Other QEMU
processes on the machine at the start of each run (not this benchmark's): ${OTHERS[*]}.
**Versions**: oxvirt: $OX_VERSION. libvirt: $LV_VERSION. $QEMU_VERSION.

Raw runs (seconds):

$RAW
EOF
write_doc_section "$TITLE" "$SECTION"
