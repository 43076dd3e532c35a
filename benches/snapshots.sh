#!/usr/bin/env bash
# Snapshots, save/restore and clone benchmark (issue 10): oxvirt against Debian's libvirt 9.0 and virt-clone
# 4.1, side by side on the same guest (benches/snapshots/domain.xml: TCG, 512 MiB, 1 vCPU, direct kernel
# boot of the test guest kit, one qcow2 disk, no network; the guest fills DIRTY MiB of its memory with random
# data first). Prints a table and writes the section "## Snapshots, save/restore, clone: oxvirt vs libvirt"
# of docs/benchmarks.md. Ratios are oxvirt / libvirt (below 1: oxvirt is faster or smaller).
#
#   sudo bash benches/snapshots.sh               # RUNS=5 runs per measurement and system, after 1 warm-up
#   RUNS=2 WRITE_DOC=0 bash benches/snapshots.sh # quick run while developing, doc left alone
#   SKIP_BUILD=1 ...                             # use the release binaries as they are
#   ROWS="snapshot save clone" ...               # which parts to run (default: all three)
#
# What it measures (wall time from just before the command until it returns; where the command writes a
# file, also until `sync FILE` returned after it, so that a tool that fsyncs and one that does not compare):
#   1. `snapshot-create-as DOM NAME` of the running guest (internal snapshot with its memory, in the qcow2
#      disk), then `snapshot-revert DOM NAME` to it; the guest runs on after both (checked: it prints a new
#      tick on its serial console), and the snapshot is deleted, untimed, before the next run;
#   2. `save DOM FILE`, then `restore FILE` (checked: a new tick), and the save file's size;
#   3. `clone --original ORIG --name COPY --auto-clone` of a shut-off domain whose disk is a 4 GiB qcow2 image
#      with 1 GiB of random data (the same file for both): `oxvirt clone` vs `virt-clone`; and
#      `oxvirt clone --linked` alone (virt-clone 4.1 has no linked clones).
# Each run has both systems, one after the other; which goes first flips every run.
#
# Needs root, QEMU, virtinst, and no libvirtd/virtlogd/virtlockd already running: as benches/first-vm.sh,
# the script starts its own libvirt daemons by hand (no systemd) and a private oxvirtd in a temporary
# directory, and on exit (also on failure) destroys and undefines every domain it created (with their
# snapshots), removes the storage pool virt-clone made, stops the four daemons and puts /dev/kvm's mode
# back. It never starts a network: libvirt's default network autostart is disabled, oxvirtd runs with
# --no-default-network, the domain has no interface.
set -euo pipefail
export LC_ALL=C

RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
WRITE_DOC=${WRITE_DOC:-1}
ROWS=${ROWS:-snapshot save clone}
DIRTY=${DIRTY:-300}
CLONE_SIZE=${CLONE_SIZE:-4G}
CLONE_DATA_MIB=${CLONE_DATA_MIB:-1024}
GUEST_TIMEOUT=${GUEST_TIMEOUT:-300}
PREFIX=snapbench-
VM=${PREFIX}vm
ORIG=${PREFIX}orig
COPY=${PREFIX}copy
LINKED=${PREFIX}linked
TITLE="## Snapshots, save/restore, clone: oxvirt vs libvirt"
LIBVIRT_PACKAGES=(libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu virtinst qemu-utils cpio)
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

say() { printf '[snapshots] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
source benches/lib.sh

[ "$(id -u)" = 0 ] || die "run as root (libvirt's qemu:///system needs it)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
[[ $WARMUP =~ ^[01]$ ]] || die "WARMUP must be 0 or 1, not '$WARMUP'"
[[ $DIRTY =~ ^[1-9][0-9]*$ ]] && ((DIRTY < 400)) || die "DIRTY must be 1 to 399 (MiB of the 512 MiB guest), not '$DIRTY'"
[[ $CLONE_DATA_MIB =~ ^[1-9][0-9]*$ ]] || die "CLONE_DATA_MIB must be a positive number, not '$CLONE_DATA_MIB'"
for row in $ROWS; do
    case $row in snapshot | save | clone) ;; *) die "ROWS: unknown part '$row' (snapshot, save, clone)" ;; esac
done
wants() { [[ " $ROWS " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------
# In /var/tmp: the clone part writes several GiB.
start_libvirt_side build_oxvirt_and_guest_kit /var/tmp/snapshots-bench.XXXXXX "${LIBVIRT_PACKAGES[@]}"
CLONE_POOLS_BEFORE=

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    say "cleaning up"
    if pid_alive "$(pid_from_file "$WORK/libvirtd.pid")"; then
        local pool
        remove_libvirt_domains "$PREFIX" --snapshots-metadata --managed-save
        # The pool virt-clone defined for the work directory (it manages the directory of the disks it
        # clones as a storage pool): not one that existed before the run.
        for pool in $("${VIRSH[@]}" pool-list --all --name 2> /dev/null); do
            [[ " $CLONE_POOLS_BEFORE " == *" $pool "* ]] && continue
            "${VIRSH[@]}" pool-dumpxml "$pool" 2> /dev/null | grep -q "<path>$WORK" || continue
            "${VIRSH[@]}" pool-destroy "$pool" > /dev/null 2>&1
            "${VIRSH[@]}" pool-undefine "$pool" > /dev/null 2>&1
        done
    fi
    if pid_alive "$OXVIRTD_PID"; then
        remove_oxvirt_domains "$PREFIX" --snapshots-metadata --managed-save
        stop_pid "$OXVIRTD_PID"
    fi
    stop_oxvirt_guests "$OX_STATE"
    [ "$DAEMONS_STARTED" = 0 ] || stop_libvirt_daemons "$WORK"
    restore_kvm_mode
    finish_work "$status"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

seconds_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
stats() { # values...: "median min max"
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f %.2f %.2f\n", m, v[1], v[NR] }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
UPTIME_AT_START=$(uptime)
LOAD_AT_START=$(load)

# ---------------------------------------------------------------------------------------------------------
# The guest: the test guest kit plus a cpio with the script that dirties its memory and then ticks
# ---------------------------------------------------------------------------------------------------------
kit_with_lab_script benches/snapshots/guest/run.sh

domain_xml() { # name, disk, serial log
    sed -e "s|@NAME@|$1|" -e "s|@DISK@|$2|" -e "s|@SERIAL_LOG@|$3|" -e "s|@DIRTY@|$DIRTY|" \
        -e "s|@KERNEL@|$WORK/vmlinuz|" -e "s|@INITRD@|$WORK/initramfs.img|" benches/snapshots/domain.xml
}

# ---------------------------------------------------------------------------------------------------------
# Daemons
# ---------------------------------------------------------------------------------------------------------
start_both_daemons
CLONE_POOLS_BEFORE=$("${VIRSH[@]}" pool-list --all --name | paste -sd' ')

# ---------------------------------------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------------------------------------
client() { # system (ox|lv), args...
    local system=$1
    shift
    if [ "$system" = ox ]; then "${OXVIRT[@]}" "$@"; else "${VIRSH[@]}" "$@"; fi
}
system_name() { if [ "$1" = ox ]; then echo oxvirt; else echo libvirt; fi; }

# timed SYSTEM SYNC_FILE COMMAND...: runs COMMAND (its output kept in $WORK/last.out; a failure ends the
# run with it); sets RETURNED (seconds until it returned) and SYNCED (until `sync SYNC_FILE` returned after
# it; "-" for no file).
timed() {
    local system=$1 file=$2 t0
    shift 2
    t0=$EPOCHREALTIME
    "$@" > "$WORK/last.out" 2>&1 || die "$(system_name "$system"): \`$*\` failed: $(cat "$WORK/last.out")"
    RETURNED=$(seconds_since "$t0")
    SYNCED=-
    if [ "$file" != - ]; then
        sync "$file"
        SYNCED=$(seconds_since "$t0")
    fi
}

# The serial logs: libvirt truncates a file serial port's file when QEMU starts (restore), oxvirt appends.
serial_log() { echo "$WORK/$1.serial.log"; }
log_size() { stat -c %s "$1" 2> /dev/null || echo 0; }
# wait_for_line FILE OFFSET PATTERN: waits until a line matching PATTERN is in FILE past byte OFFSET (or
# anywhere in it if it is shorter than OFFSET now: truncated and written again).
wait_for_line() {
    local file=$1 offset=$2 pattern=$3 deadline=$((${EPOCHREALTIME%.*} + GUEST_TIMEOUT)) size
    while :; do
        size=$(log_size "$file")
        if ((size < offset)); then
            grep -qs "$pattern" "$file" && return 0
        else
            tail -c +"$((offset + 1))" "$file" 2> /dev/null | grep -qs "$pattern" && return 0
        fi
        ((${EPOCHREALTIME%.*} < deadline)) || die "no '$pattern' in $file after ${GUEST_TIMEOUT}s: $(tail -c 400 "$file")"
        sleep 0.1
    done
}

declare -A T # T[row.system] = the runs' seconds, space separated
record() { T[$1.$2]+="${T[$1.$2]:+ }$3"; }
OTHERS=() # other QEMU processes on the machine (not this benchmark's) at the start of each run
count_others() { OTHERS+=("$(pgrep -af qemu-system | grep -v "$WORK" | grep -c . || true)"); }
LOADS=()  # load average at the start of each part

# ---------------------------------------------------------------------------------------------------------
# 1 and 2. The running guest: snapshots, save/restore
# ---------------------------------------------------------------------------------------------------------
SIZES_OX=() SIZES_LV=()
GUEST_NOTE=
if wants snapshot || wants save; then
    for system in ox lv; do
        qemu-img create -q -f qcow2 "$WORK/$system-disk.qcow2" 1G
        chmod 644 "$WORK/$system-disk.qcow2"
        domain_xml "$VM" "$WORK/$system-disk.qcow2" "$(serial_log "$system")" > "$WORK/$system-vm.xml"
        client "$system" define "$WORK/$system-vm.xml" > /dev/null
    done
    say "booting the guest in both systems (it fills $DIRTY MiB of its memory with random data)"
    for system in ox lv; do client "$system" start "$VM" > /dev/null; done
    for system in ox lv; do
        wait_for_line "$(serial_log "$system")" 0 OXBENCH-DIRTY-DONE
        grep -q OXBENCH-DIRTY-FAILED "$(serial_log "$system")" && die "$system guest: $(grep OXBENCH-DIRTY "$(serial_log "$system")")"
    done
    GUEST_NOTE="oxvirt's guest: \`$(grep -a -m1 -o 'OXBENCH-DIRTY-DONE.*' "$(serial_log ox)" | tr -d '\r')\`; libvirt's: \`$(grep -a -m1 -o 'OXBENCH-DIRTY-DONE.*' "$(serial_log lv)" | tr -d '\r')\`"
    say "  $GUEST_NOTE"
fi

# A new tick on the guest's console after OFFSET: it runs.
wait_running() { wait_for_line "$(serial_log "$1")" "$2" 'OXBENCH-TICK='; }
# ticks FILE OFFSET: the tick numbers past OFFSET (the whole file if it is shorter now), in order.
ticks() {
    local size
    size=$(log_size "$1")
    if ((size < $2)); then cat "$1"; else tail -c +"$(($2 + 1))" "$1"; fi | grep -a -o 'OXBENCH-TICK=[0-9]*' | cut -d= -f2
}
last_tick() { ticks "$(serial_log "$1")" 0 | tail -1; }
# check_ticks SYSTEM WHAT OFFSET LOW HIGH: the guest's first tick past OFFSET is from LOW to HIGH. After a
# revert: at most the last tick before it (the guest's memory went back to the snapshot's moment rather than
# running on) and at least the last before the snapshot (not a fresh boot); after a restore: at least the
# last before the save (it goes on where it was, not booted again).
check_ticks() {
    local first
    first=$(ticks "$(serial_log "$1")" "$3" | head -1)
    ((first >= $4 && first <= $5)) || die "$(system_name "$1") $2: the guest's first tick after it is $first, not in $4..$5"
}
qemu_pid() { pgrep -f -- "$WORK/$1-disk.qcow2" | head -1; } # the guest's QEMU (its command line names the disk)
PID_NOTE=()

snapshot_once() { # system, snapshot name, counted (1/0)
    local system=$1 snap=$2 counted=$3 offset at_create
    count_others
    at_create=$(last_tick "$system")
    offset=$(log_size "$(serial_log "$system")")
    timed "$system" "$WORK/$system-disk.qcow2" client "$system" snapshot-create-as "$VM" "$snap"
    local created=$RETURNED created_synced=$SYNCED
    # A tick printed after the create returned, so after the snapshot's moment (one printed between the
    # offset above and the snapshot is in the snapshot): the revert below must go back before it.
    offset=$(log_size "$(serial_log "$system")")
    wait_running "$system" "$offset"
    offset=$(log_size "$(serial_log "$system")")
    local before pid_before pid_after
    before=$(last_tick "$system")
    pid_before=$(qemu_pid "$system")
    timed "$system" - client "$system" snapshot-revert "$VM" "$snap"
    local reverted=$RETURNED
    wait_running "$system" "$offset"
    check_ticks "$system" snapshot-revert "$offset" "$at_create" "$before"
    pid_after=$(qemu_pid "$system")
    [ "$pid_before" = "$pid_after" ] && PID_NOTE+=("$system:same") || PID_NOTE+=("$system:new")
    client "$system" snapshot-delete "$VM" "$snap" > /dev/null
    say "  $(system_name "$system") $snap: create ${created}s (+sync ${created_synced}s), revert ${reverted}s"
    if [ "$counted" = 1 ]; then
        record create "$system" "$created"
        record create-sync "$system" "$created_synced"
        record revert "$system" "$reverted"
    fi
}

save_once() { # system, run label, counted
    local system=$1 label=$2 counted=$3 file offset size
    file=$WORK/$system-$label.save
    count_others
    local before
    before=$(last_tick "$system")
    timed "$system" "$file" client "$system" save "$VM" "$file"
    local saved=$RETURNED saved_synced=$SYNCED
    size=$(stat -c %s "$file")
    offset=$(log_size "$(serial_log "$system")")
    timed "$system" - client "$system" restore "$file"
    local restored=$RETURNED
    wait_running "$system" "$offset"
    check_ticks "$system" restore "$offset" "$before" 999999999
    rm -f "$file"
    say "  $(system_name "$system") $label: save ${saved}s (+sync ${saved_synced}s, $(mib "$size") MiB), restore ${restored}s"
    if [ "$counted" = 1 ]; then
        record save "$system" "$saved"
        record save-sync "$system" "$saved_synced"
        record restore "$system" "$restored"
        if [ "$system" = ox ]; then SIZES_OX+=("$size"); else SIZES_LV+=("$size"); fi
    fi
}

# both FUNCTION LABEL WHAT: WARMUP uncounted runs of each system, then RUNS runs each, alternating which
# goes first; notes the load average at the start.
both() {
    local fn=$1 label=$2 what=$3 run system order
    LOADS+=("$what: $(load)")
    say "$what: $WARMUP warm-up run(s) each, then $RUNS runs each"
    if [ "$WARMUP" = 1 ]; then
        for system in ox lv; do "$fn" "$system" "$label-warmup" 0; done
    fi
    for ((run = 1; run <= RUNS; run++)); do
        order=(ox lv)
        ((run % 2)) || order=(lv ox)
        for system in "${order[@]}"; do "$fn" "$system" "$label-$run" 1; done
    done
}

if wants snapshot; then
    both snapshot_once snap "snapshot-create-as + snapshot-revert"
fi
if wants save; then
    both save_once save "save + restore"
fi
if wants snapshot || wants save; then
    for system in ox lv; do client "$system" destroy "$VM" > /dev/null; done
fi

# ---------------------------------------------------------------------------------------------------------
# 3. clone of a shut-off domain with a 4 GiB qcow2 disk holding 1 GiB of random data
# ---------------------------------------------------------------------------------------------------------
CLONE_NOTE=
ORIG_INFO=
if wants clone; then
    say "making the original's disk: $CLONE_SIZE qcow2, $CLONE_DATA_MIB MiB of random data in 4 runs spread over it"
    raw=$WORK/orig.raw
    truncate -s "$CLONE_SIZE" "$raw"
    size_mib=$(($(stat -c %s "$raw") / 1048576))
    chunk=$((CLONE_DATA_MIB / 4))
    for part in 0 1 2 3; do
        dd if=/dev/urandom of="$raw" bs=1M count="$chunk" seek=$((part * size_mib / 4)) conv=notrunc status=none
    done
    qemu-img convert -f raw -O qcow2 "$raw" "$WORK/$ORIG.qcow2"
    rm -f "$raw"
    chmod 644 "$WORK/$ORIG.qcow2"
    ORIG_INFO=$(qemu-img info "$WORK/$ORIG.qcow2" | awk -F': ' '/virtual size|disk size|cluster_size/ { printf "%s%s: %s", sep, $1, $2; sep = ", " }')
    # The same definition, naming the same file, in both systems.
    domain_xml "$ORIG" "$WORK/$ORIG.qcow2" "$WORK/$ORIG.serial.log" > "$WORK/orig.xml"
    for system in ox lv; do client "$system" define "$WORK/orig.xml" > /dev/null; done

    # virt-clone manages the directory of the disk it clones as a libvirt storage pool (virtinst defines one
    # for it on its first run): its name, to refresh it after a run deleted the clone's file.
    CLONE_POOL=
    find_clone_pool() {
        local pool
        for pool in $("${VIRSH[@]}" pool-list --all --name); do
            [[ " $CLONE_POOLS_BEFORE " == *" $pool "* ]] && continue
            "${VIRSH[@]}" pool-dumpxml "$pool" | grep -q "<path>$WORK</path>" && echo "$pool" && return 0
        done
        return 0
    }
    clone_cmd() { # system, args...
        local system=$1
        shift
        if [ "$system" = ox ]; then
            "${OXVIRT[@]}" clone "$@"
        else
            virt-clone --connect qemu:///system "$@"
        fi
    }
    # clone_once SYSTEM LABEL COUNTED [--linked]: the new disk, named by --auto-clone after the clone, must
    # be WORK/COPY.qcow2 (or LINKED).
    clone_once() {
        local system=$1 label=$2 counted=$3 linked=${4:-} name=$COPY row=clone
        [ -z "$linked" ] || name=$LINKED row=clone-linked
        local file=$WORK/$name.qcow2
        count_others
        timed "$system" "$file" clone_cmd "$system" --original "$ORIG" --name "$name" --auto-clone $linked
        [ -f "$file" ] || die "$(system_name "$system") clone made no $file: $(cat "$WORK/last.out")"
        [ -e "$WORK/clone-$system$linked.out" ] || cp "$WORK/last.out" "$WORK/clone-$system$linked.out"
        [ -e "$WORK/clone-$system$linked.info" ] || qemu-img info "$file" > "$WORK/clone-$system$linked.info"
        say "  $(system_name "$system")${linked:+ $linked} $label: ${RETURNED}s (+sync ${SYNCED}s), $(mib "$(du -B1 "$file" | cut -f1)") MiB allocated"
        client "$system" undefine "$name" > /dev/null
        rm -f "$file"
        if [ "$system" = lv ]; then
            [ -n "$CLONE_POOL" ] || CLONE_POOL=$(find_clone_pool)
            [ -z "$CLONE_POOL" ] || "${VIRSH[@]}" pool-refresh "$CLONE_POOL" > /dev/null
        fi
        if [ "$counted" = 1 ]; then
            record "$row" "$system" "$RETURNED"
            record "$row-sync" "$system" "$SYNCED"
        fi
    }

    both clone_once clone clone
    say "oxvirt clone --linked: $RUNS runs"
    for ((run = 1; run <= RUNS; run++)); do clone_once ox "linked-$run" 1 --linked; done
    CLONE_NOTE="virt-clone defined the storage pool '${CLONE_POOL:-none}' for the work directory (removed at the end)"
fi
UPTIME_AT_END=$(uptime)
LOAD_AT_END=$(load)

# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------
OX_VERSION=$("${OXVIRT[@]}" version | sed '/^$/d' | paste -sd';' | sed 's/;/; /g')
LV_VERSION=$("${VIRSH[@]}" version | sed '/^$/d' | paste -sd';' | sed 's/;/; /g')
VIRTINST_VERSION=$(dpkg-query -W -f='${Version}' virtinst)
QEMU_VERSION=$(qemu-system-x86_64 --version | head -1)
QEMU_IMG_VERSION=$(qemu-img --version | head -1)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM_GIB=$(free -g | awk '/^Mem:/ { print $2 }')
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2> /dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2> /dev/null)" ]; then
    COMMIT="$COMMIT plus uncommitted changes"
fi

# cell KEY.SYSTEM: "median (min–max)" of that row's runs for that system, or "-" without runs.
cell() {
    local median low high
    [ -n "${T[$1]:-}" ] || { echo -; return 0; }
    # shellcheck disable=SC2086 # the run list is space separated on purpose
    read -r median low high < <(stats ${T[$1]})
    echo "$median ($low–$high)"
}
# row LABEL KEY: oxvirt's and libvirt's cells and the ratio of the medians ("-" where a side has no runs).
row() {
    local ox lv r=-
    ox=$(cell "$2.ox") lv=$(cell "$2.lv")
    [ "$ox" = - ] || [ "$lv" = - ] || r="**$(ratio "${ox%% *}" "${lv%% *}")**"
    printf '| %s | %s | %s | %s |\n' "$1" "$ox" "$lv" "$r"
}
size_row() {
    local ox lv
    [ ${#SIZES_OX[@]} -gt 0 ] || return 0
    read -r ox _ < <(stats "${SIZES_OX[@]}")
    read -r lv _ < <(stats "${SIZES_LV[@]}")
    printf '| save file size (MiB) | %s | %s | **%s** |\n' "$(mib "$ox")" "$(mib "$lv")" "$(ratio "$ox" "$lv")"
}
TABLE=$(
    echo "| operation, seconds: median (min–max) of $RUNS | oxvirt | libvirt | ratio oxvirt/libvirt (medians) |"
    echo "|---|---|---|---|"
    if wants snapshot; then
        row "\`snapshot-create-as DOM NAME\`, running guest, returns" create
        row "… and \`sync\` of the qcow2 disk after it" create-sync
        row "\`snapshot-revert DOM NAME\`, running to running" revert
    fi
    if wants save; then
        row "\`save DOM FILE\`, returns" save
        row "… and \`sync FILE\` after it" save-sync
        row "\`restore FILE\`" restore
        size_row
    fi
    if wants clone; then
        row "\`clone --original ORIG --name COPY --auto-clone\` (oxvirt clone / virt-clone), returns" clone
        row "… and \`sync\` of the new disk after it" clone-sync
        row "\`oxvirt clone ... --auto-clone --linked\` (virt-clone 4.1 has no linked clones), returns" clone-linked
        row "… and \`sync\` of the new overlay after it" clone-linked-sync
    fi
)
RAW=$(
    for key in create create-sync revert save save-sync restore clone clone-sync clone-linked clone-linked-sync; do
        [ -n "${T[$key.ox]:-}${T[$key.lv]:-}" ] || continue
        echo "- $key (s): oxvirt ${T[$key.ox]:--}; libvirt ${T[$key.lv]:--}"
    done
    [ ${#SIZES_OX[@]} -eq 0 ] || echo "- save file size (bytes): oxvirt ${SIZES_OX[*]}; libvirt ${SIZES_LV[*]}"
    echo "- other QEMU processes on the machine (not this benchmark's) at the start of each run, warm-ups included: ${OTHERS[*]}"
)
# Whether snapshot-revert kept the guest's QEMU process or started a new one, per system, over every run.
REVERT_PROCESS=
if wants snapshot; then
    for system in ox lv; do
        same=$(printf '%s\n' "${PID_NOTE[@]}" | grep -c "^$system:same" || true)
        new=$(printf '%s\n' "${PID_NOTE[@]}" | grep -c "^$system:new" || true)
        REVERT_PROCESS+="${REVERT_PROCESS:+; }$(system_name "$system"): the same QEMU process after $same revert(s), a new one after $new"
    done
fi
# printed FILE: a clone command's output without its progress meter: the "Allocating 'FILE'" and
# "Clone ..." lines, on one line.
printed() {
    tr '\r' '\n' < "$1" | sed -n "s/^\(Allocating '[^']*'\).*/\1/p; /^Clone /p" | uniq | paste -sd' '
}
CLONE_OUTPUT=
if wants clone; then
    CLONE_OUTPUT=$(
        echo "What each printed (first run, progress meters left out): oxvirt: \`$(printed "$WORK/clone-ox.out")\`;"
        echo "virt-clone: \`$(printed "$WORK/clone-lv.out")\`. The new disks (\`qemu-img info\`):"
        for system in ox lv; do
            echo "$(system_name "$system"): $(awk -F': ' '/file format|virtual size|disk size|cluster_size|preallocation/ { printf "%s%s: %s", sep, $1, $2; sep = ", " }' "$WORK/clone-$system.info");"
        done
        echo "oxvirt --linked: $(awk -F': ' '/file format|virtual size|disk size|backing file:/ { printf "%s%s: %s", sep, $1, $2; sep = ", " }' "$WORK/clone-ox--linked.info")."
    )
fi

echo
echo "$TABLE"
echo
echo "$RAW"
echo
[ -z "$GUEST_NOTE" ] || echo "guest: $GUEST_NOTE"
[ -z "$REVERT_PROCESS" ] || echo "snapshot-revert: $REVERT_PROCESS"
[ -z "$CLONE_OUTPUT" ] || echo "$CLONE_OUTPUT"
echo "uptime at start: $UPTIME_AT_START"
echo "uptime at end:   $UPTIME_AT_END"
echo "load at the start of each part: ${LOADS[*]}"

[ "$WRITE_DOC" = 1 ] || exit 0

SECTION=$WORK/section.md
cat > "$SECTION" << EOF
$TITLE

\`bash benches/snapshots.sh\` (RUNS=$RUNS, WARMUP=$WARMUP, DIRTY=$DIRTY, ROWS="$ROWS"), $(date -u '+%Y-%m-%d %H:%M UTC').
Release build of oxvirt (commit $COMMIT); Debian's libvirt with its default configuration, and virt-clone
$VIRTINST_VERSION against that libvirtd. Wall seconds from just before the command until it returned: median,
with the fastest and slowest run, of $RUNS runs each$([ "$WARMUP" = 1 ] && echo ", after one uncounted warm-up run each"). Each run has
both systems one after the other, and which goes first flips every run, so the machine's load falls on both
alike. Ratios are of the medians, oxvirt / libvirt (below 1: oxvirt is faster or smaller).

$TABLE

The "… and \`sync\`" rows add \`sync FILE\` (fsync of the file the command wrote) after the command
returned, so that a tool that fsyncs before returning and one that leaves the data in the page cache are
compared on the same footing; a \`sync\` that adds next to nothing means the tool had flushed the file
itself (oxvirt's \`save\` and \`clone\` fsync what they wrote before they return).

**The guest**: [benches/snapshots/domain.xml](../benches/snapshots/domain.xml), the same definition in
both systems but for its disk and serial log file (each its own): \`<domain type='qemu'>\` (TCG for both:
/dev/kvm here is not hardware KVM), 512 MiB, 1 vCPU, direct kernel boot of the test guest kit (kernel
$GUEST_KERNEL) with [benches/snapshots/guest/run.sh](../benches/snapshots/guest/run.sh) appended as the
lab script, and one empty 1 GiB qcow2 disk (virtio), where internal snapshots keep the memory state.
Before the first measurement the guest fills $DIRTY MiB of its memory with random data (a file in a
tmpfs: QEMU writes a zero page as a flag, random pages whole), then prints a tick on its serial console
every second; after every create, revert and restore the script waits (untimed) for a new tick: the guest
runs again. $GUEST_NOTE (the busybox guest with its kernel uses the rest). Both guests run the whole
time of parts 1 and 2, idle but for the ticks.

**Commands timed** (\`\$SOCK\` is the private oxvirtd's socket; DOM is \`$VM\`; \`virsh\` is
\`virsh -c qemu:///system\`):
- \`oxvirt --socket \$SOCK snapshot-create-as DOM snap-N\` vs \`virsh snapshot-create-as DOM snap-N\`, then
  \`snapshot-revert DOM snap-N\` with the same tool; untimed after it: \`snapshot-delete DOM snap-N\`.
- \`oxvirt --socket \$SOCK save DOM FILE\` vs \`virsh save DOM FILE\`, then \`restore FILE\` with the same
  tool; the file is deleted after the restore.
- \`oxvirt --socket \$SOCK clone --original $ORIG --name $COPY --auto-clone\` vs \`virt-clone --connect
  qemu:///system --original $ORIG --name $COPY --auto-clone\`, each making \`$COPY.qcow2\` beside the
  original's disk; untimed after it: \`undefine $COPY\` and the file deleted. The original is defined
  in both systems with the same XML, naming the same disk file: $ORIG_INFO. Its data is in the
  page cache for every counted run (the warm-up runs read it).
  \`oxvirt clone ... --linked\` makes a qcow2 overlay of the original instead of a copy.

$CLONE_OUTPUT

**How each does it** (not the same work). Snapshots: oxvirt runs QEMU's \`snapshot-save\` and
\`snapshot-load\` jobs over QMP in the guest's QEMU process (the guest's memory, CPU and device state
written into and read from the qcow2 disk, the CPUs paused meanwhile). libvirt 9.0 creates with the HMP
command \`savevm\` (through \`human-monitor-command\`; its QEMU driver has no \`snapshot-save\`), and
reverts a running guest by stopping its QEMU and starting a new one with \`-loadvm NAME\`. Seen in this
run (the guest's QEMU process id before and after each revert, warm-ups included): $REVERT_PROCESS.
Both save with a \`migrate\` of the paused guest to a file descriptor and restore with an incoming
migration into a new QEMU; both files hold the domain XML and the migration stream. libvirt also keeps its
snapshot and save-image metadata and runs QEMU as libvirt-qemu with its seccomp sandbox and DAC
relabelling (see the First VM section). virt-clone asks libvirt to copy the volume (\`vol-create-from\`:
\`qemu-img convert\`, run by libvirtd); oxvirt clone copies with oxvirt's own image code
(crates/images), keeping holes, and fsyncs the copy before it returns.

Every run, in order:

$RAW

**Machine**: $(nproc) cores ($CPU_MODEL), ${MEM_GIB} GiB (\`free -g\`), kernel $(uname -r), shared with other
work (other workers' builds, tests and guests: the last line of the runs above counts their QEMU processes).
\`uptime\` at the start: \`$UPTIME_AT_START\`; at the end: \`$UPTIME_AT_END\`; load average (1/5/15 min)
at the start of each part: $(printf '%s; ' "${LOADS[@]}" | sed 's/; $//'). TCG guests and the copies are
CPU-bound, so absolute times move with the load; the ratios, from runs interleaved in time, are the
figures to compare.

**Versions**: oxvirt: $OX_VERSION. libvirt: $LV_VERSION. virtinst $VIRTINST_VERSION. $QEMU_VERSION.
$QEMU_IMG_VERSION.

**Setup** (done by the script, as benches/first-vm.sh): \`virtlogd -d; virtlockd -d; libvirtd -d\` started
by hand (no systemd) and a private \`oxvirtd --socket \$SOCK --state-dir \$DIR --no-default-network\` in a
temporary directory under /var/tmp; all stopped at the end. No network is started ($NET_NOTE); the
domain has no interface. /dev/kvm is made root:kvm 0660 for the run when it is root-only (see First VM).
${CLONE_NOTE:+$CLONE_NOTE.}
EOF
write_doc_section "$TITLE" "$SECTION"
