#!/usr/bin/env bash
# Live migration, oxvirt vs libvirt (docs/benchmarks.md, "Live migration: oxvirt vs libvirt"): the same
# 512 MiB TCG guest (benches/migration/domain.xml; the test guest kit with benches/migration/guest/run.sh,
# which rewrites a 256 MiB buffer in its RAM pass after pass) migrated live between two daemons of each
# system on this machine, side by side in one run:
#   - oxvirt: two oxvirtd (their own state directories, sockets and QEMU user ranges, as
#     crates/cli/tests/migration.rs runs them): `oxvirt migrate --live --persistent --bandwidth B DOM
#     oxvirt+unix:///.../oxvirtd.sock`;
#   - libvirt (Debian's): two libvirtd, each with its virtlogd and virtlockd, in a mount namespace of its own
#     where /etc/libvirt (a copy, with a host_uuid of its own: libvirt refuses to migrate to its own host),
#     /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt are directories of the run:
#     `virsh migrate --live --persistent --bandwidth B DOM qemu+unix:///system?socket=... --migrateuri
#     unix:///...` (the migration stream on a Unix socket too: no network at all).
# Each migration, in plain and --auto-converge mode: the command's wall time, the tool's "Total downtime" and
# "Memory processed" from `domjobinfo` (libvirt: `domjobinfo --completed`) on the source, and whether it
# converged within MIGRATE_TIMEOUT seconds (if not: `domjobabort`, the guest goes on on the source). After
# each migration the guest must run on the destination with its workload's pass counter going on (the same
# RAM: a new boot would start it again from 1); the source's definition (kept shut off, the same in both
# systems) is undefined, and the next migration goes back. Which system goes first flips every run.
#
# Settings (environment): RUNS (5) counted migrations per system and mode, WARMUP (1: one uncounted plain
# migration per system first), MODES ("plain auto-converge"), BANDWIDTH (MiB/s, the same `--bandwidth` for
# both: 1000), MIGRATE_TIMEOUT (s, 180), GUEST_TIMEOUT (s, 300), WRITE_DOC (1: write the section of
# docs/benchmarks.md), SKIP_BUILD (1: use the release binaries as they are), KEEP_WORK (1: keep the run's
# directory).
#
# Needs root, QEMU, and no libvirtd/virtlogd/virtlockd already running (as the other side-by-side benches).
# On exit, also on failure, it destroys and undefines every domain it made, stops the six libvirt daemons,
# the two oxvirtd and any QEMU whose command line names the run's directory, ends the mount namespaces (their
# holder processes) and removes the run's directory (kept after a failure). It never starts a network.
set -euo pipefail
export LC_ALL=C

RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
WRITE_DOC=${WRITE_DOC:-1}
MODES=${MODES:-plain auto-converge}
BANDWIDTH=${BANDWIDTH:-1000}
MIGRATE_TIMEOUT=${MIGRATE_TIMEOUT:-180}
GUEST_TIMEOUT=${GUEST_TIMEOUT:-300}
STALL_TIMEOUT=${STALL_TIMEOUT:-60}
PREFIX=migbench-
VM=${PREFIX}vm
OX_UUID=5d0c8a4e-7b1f-4c3a-9e2d-6f4b8a1c3e01
LV_UUID=5d0c8a4e-7b1f-4c3a-9e2d-6f4b8a1c3e02
# The two oxvirtd's guest users: disjoint (two hosts' would be), and used by no test.
OX_USER_RANGES=(3176000-3176099 3177000-3177099)
TITLE="## Live migration: oxvirt vs libvirt"
LIBVIRT_PACKAGES=(libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-utils cpio util-linux)
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

say() { printf '[migration %s] %s\n' "$(date -u +%T.%3N)" "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
source benches/lib.sh

check_root_runs_warmup
[[ $BANDWIDTH =~ ^[1-9][0-9]*$ ]] || die "BANDWIDTH must be a positive number of MiB/s, not '$BANDWIDTH'"
[[ $MIGRATE_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "MIGRATE_TIMEOUT must be a positive number of seconds, not '$MIGRATE_TIMEOUT'"
for mode in $MODES; do
    [[ $mode =~ ^(plain|auto-converge)$ ]] || die "MODES: unknown mode '$mode' (known: plain, auto-converge)"
done

# ---------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------
start_libvirt_side build_oxvirt_and_guest_kit /var/tmp/migration-bench.XXXXXX "${LIBVIRT_PACKAGES[@]}"

declare -A OX_PIDS    # side (a|b) -> oxvirtd's pid
declare -A NS_HOLDERS # side -> the pid of the process that holds libvirt's mount namespace
RUN_LIBVIRT_MADE=0    # 1 if the script made /run/libvirt (a mount point for the namespaces)

# Every QEMU whose command line names the run's directory: both systems' guests, whatever daemon started them.
our_qemus() {
    local pid
    for pid in $(pgrep -x qemu-system-x86 2> /dev/null); do
        if tr '\0' ' ' < "/proc/$pid/cmdline" 2> /dev/null | grep -qF "$WORK/"; then echo "$pid"; fi
    done
}

cleanup() {
    local status=$? side pid
    trap - EXIT INT TERM
    set +e
    say "cleaning up"
    for side in a b; do
        VIRSH=(virsh -c "$(lv_uri "$side")")
        if pid_alive "$(pid_from_file "$WORK/lv-$side/libvirtd.pid")"; then remove_libvirt_domains "$PREFIX"; fi
        OXVIRT=("$WORK/oxvirt" --socket "$(ox_socket "$side")")
        if pid_alive "${OX_PIDS[$side]:-}"; then
            remove_oxvirt_domains "$PREFIX"
            stop_pid "${OX_PIDS[$side]}"
        fi
        stop_oxvirt_guests "$WORK/ox-$side/state"
    done
    for pid in $(our_qemus); do stop_pid "$pid"; done
    for side in a b; do
        [ -d "$WORK/lv-$side" ] && stop_libvirt_daemons "$WORK/lv-$side"
        stop_pid "${NS_HOLDERS[$side]:-}"
    done
    restore_kvm_mode
    [ "$RUN_LIBVIRT_MADE" = 0 ] || rmdir /run/libvirt 2> /dev/null
    finish_work "$status"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ox_socket() { echo "$WORK/ox-$1/oxvirtd.sock"; }
lv_uri() { echo "qemu+unix:///system?socket=$WORK/lv-$1/run/libvirt-sock"; }
other() { if [ "$1" = a ]; then echo b; else echo a; fi; }
system_name() { if [ "$1" = ox ]; then echo oxvirt; else echo libvirt; fi; }
# client SYSTEM SIDE ARGS...: the system's client, talking to that side's daemon.
client() {
    local system=$1 side=$2
    shift 2
    if [ "$system" = ox ]; then
        "$WORK/oxvirt" --socket "$(ox_socket "$side")" "$@"
    else
        virsh -c "$(lv_uri "$side")" "$@"
    fi
}

# The checkout the binaries were copied from, as the run starts.
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2> /dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2> /dev/null)" ]; then
    COMMIT="$COMMIT plus uncommitted changes"
fi
UPTIME_AT_START=$(uptime)
LOAD_START=$(load)

# The guest: the test guest kit plus the workload; each system its own copies of the files (each gives them
# to its own guest user), at one path both of its daemons reach.
kit_with_lab_script benches/migration/guest/run.sh
serial_log() { echo "$WORK/$1.serial.log"; }
for system in ox lv; do
    cp "$WORK/vmlinuz" "$WORK/$system-vmlinuz"
    cp "$WORK/initramfs.img" "$WORK/$system-initramfs.img"
    truncate -s 64M "$WORK/$system-vda.raw"
    chmod 644 "$WORK/$system-vmlinuz" "$WORK/$system-initramfs.img" "$WORK/$system-vda.raw"
    uuid=$OX_UUID
    [ "$system" = ox ] || uuid=$LV_UUID
    sed -e "s|@NAME@|$VM|" -e "s|@UUID@|$uuid|" -e "s|@SERIAL_LOG@|$(serial_log "$system")|" \
        -e "s|@KERNEL@|$WORK/$system-vmlinuz|" -e "s|@INITRD@|$WORK/$system-initramfs.img|" \
        -e "s|@DISK@|$WORK/$system-vda.raw|" benches/migration/domain.xml > "$WORK/$system-vm.xml"
done

# oxvirt: two oxvirtd, as crates/cli/tests/migration.rs runs them.
for side in a b; do
    mkdir -p "$WORK/ox-$side"
    OXVIRT=("$WORK/oxvirt" --socket "$(ox_socket "$side")")
    say "starting oxvirtd $side"
    start_oxvirtd "$WORK/ox-$side/oxvirtd.log" "$WORK/oxvirtd" --socket "$(ox_socket "$side")" \
        --state-dir "$WORK/ox-$side/state" --no-default-network --log-level "${OX_LOG_LEVEL:-warn}" \
        --qemu-user-range "${OX_USER_RANGES[$([ "$side" = a ] && echo 0 || echo 1)]}"
    OX_PIDS[$side]=$OXVIRTD_PID
done

# libvirt: two instances, each in a mount namespace of its own (held by a sleeping process) where its
# configuration, run, state, cache and log directories are the run's.
give_kvm_to_libvirt
keep_libvirt_networks_down
if [ ! -d /run/libvirt ]; then
    mkdir -p /run/libvirt
    RUN_LIBVIRT_MADE=1
fi
for side in a b; do
    dir=$WORK/lv-$side
    mkdir -p "$dir/run" "$dir/lib" "$dir/cache" "$dir/log/qemu"
    cp -a /etc/libvirt "$dir/etc"
    cp -a /var/lib/libvirt/. "$dir/lib/"
    cp -a /var/cache/libvirt/. "$dir/cache/"
    # Two hosts in libvirt's eyes: it refuses a migration whose destination has its own host UUID.
    printf '\n# benches/migration.sh: one of two libvirtd on this machine\nhost_uuid = "%s"\n' \
        "$(cat /proc/sys/kernel/random/uuid)" >> "$dir/etc/libvirtd.conf"
    # No cgroups: both instances would name the guest's cgroup alike (machine/qemu-ID-NAME) on the same
    # cgroup tree; oxvirt's guests get none either (docs/cgroups.md: only with <cputune>-like settings).
    printf '\n# benches/migration.sh: two libvirtd share the cgroup tree\ncgroup_controllers = [ ]\n' >> "$dir/etc/qemu.conf"
    unshare --mount --propagation private sleep infinity &
    NS_HOLDERS[$side]=$!
    for ((i = 0; i < 100; i++)); do
        [ "$(readlink "/proc/${NS_HOLDERS[$side]}/ns/mnt" 2> /dev/null)" != "$(readlink /proc/self/ns/mnt)" ] && break
        sleep 0.05
    done
    nsenter -t "${NS_HOLDERS[$side]}" -m sh -e -c "
        mount --bind '$dir/etc' /etc/libvirt
        mount --bind '$dir/run' /run/libvirt
        mount --bind '$dir/lib' /var/lib/libvirt
        mount --bind '$dir/cache' /var/cache/libvirt
        mount --bind '$dir/log' /var/log/libvirt"
    say "starting virtlogd, virtlockd, libvirtd $side (own mount namespace)"
    VIRSH=(virsh -c "$(lv_uri "$side")")
    DAEMONS_STARTED=1
    start_libvirt_daemons "$dir" nsenter -t "${NS_HOLDERS[$side]}" -m
    for net in $("${VIRSH[@]}" net-list --name 2> /dev/null); do
        die "libvirt network '$net' is active: refusing to go on"
    done
done
# libvirt's destination QEMU (user libvirt-qemu) listens on the migration socket: a directory it may write.
mkdir -p "$WORK/lv-mig"
chown libvirt-qemu "$WORK/lv-mig"
chmod 700 "$WORK/lv-mig"

# ---------------------------------------------------------------------------------------------------------
# The guest's workload
# ---------------------------------------------------------------------------------------------------------
# The guest's last pass (0 before the first).
last_pass() { { grep -a -o 'OXMIG pass [0-9]*' "$(serial_log "$1")" 2> /dev/null || true; } | awk '{ n = $3 } END { print n + 0 }'; }
# progressed SYSTEM N SECONDS: whether the guest reports a pass above N within SECONDS.
progressed() {
    local deadline=$((${EPOCHREALTIME%.*} + $3))
    until (($(last_pass "$1") > $2)); do
        ((${EPOCHREALTIME%.*} < deadline)) || return 1
        sleep 0.05
    done
}
# wait_pass SYSTEM N: waits until the guest reported a pass above N (GUEST_TIMEOUT: a boot included).
wait_pass() {
    progressed "$1" "$2" "$GUEST_TIMEOUT" ||
        die "$(system_name "$1"): the guest made no pass above $2 within ${GUEST_TIMEOUT}s; its console: $(tail -c 600 "$(serial_log "$1")" | tr -d '\0')"
}

declare -A AT   # system -> the side its guest runs on
GUEST_ERROR_PATTERN='Oops|BUG:|Kernel panic|general protection fault|invalid opcode'
guest_errors() { grep -aqE "$GUEST_ERROR_PATTERN" "$(serial_log "$1")"; }
declare -A GUEST_ERRORS # system -> the migrations after which the guest's kernel reported an error
declare -A DAMAGED      # mode.system -> how many counted migrations did that
# boot_guest SYSTEM SIDE: starts the defined guest there, and waits until its workload made a pass.
boot_guest() {
    : > "$(serial_log "$1")"
    client "$1" "$2" start "$VM" > /dev/null
    AT[$1]=$2
    wait_pass "$1" 1
}
declare -A RATE # system -> the workload's rewrite rate before the first migration, MiB/s
say "booting the guest in both systems"
for system in ox lv; do
    client "$system" a define "$WORK/$system-vm.xml" > /dev/null
    boot_guest "$system" a
    # QEMU's command line, for the record (the two systems' differ in what each daemon adds).
    for pid in $(our_qemus); do
        if tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "$WORK/$system-vmlinuz"; then
            tr '\0' ' ' < "/proc/$pid/cmdline" > "$WORK/$system-qemu.cmdline"
        fi
    done
    # The workload's speed: passes over about 10 s, from one pass's report to another's.
    first=$(last_pass "$system") t0=$EPOCHREALTIME
    wait_pass "$system" "$first"
    first=$(last_pass "$system") t0=$EPOCHREALTIME
    until awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { exit !(b - a >= 10) }'; do
        wait_pass "$system" "$(last_pass "$system")"
    done
    passes=$(($(last_pass "$system") - first))
    RATE[$system]=$(awk -v p="$passes" -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", p * 256 / (b - a) }')
    say "  $(system_name "$system"): the workload rewrites its 256 MiB at about ${RATE[$system]} MiB/s"
done

# ---------------------------------------------------------------------------------------------------------
# The migrations
# ---------------------------------------------------------------------------------------------------------
declare -A T # T[mode.system.figure] = the runs' values, space separated (figure: total, downtime, memory)
declare -A NOT_CONVERGED
record() { T[$1.$2.$3]+="${T[$1.$2.$3]:+ }$4"; }
job_value() { awk -F': *' -v key="$1" '$1 == key { print $2 + 0; exit }'; } # "Total downtime" etc.
OTHERS=() # other QEMU processes on the machine (not this benchmark's) before each migration
count_others() { OTHERS+=("$( (pgrep -x qemu-system-x86 || true) | grep -vxF -f <(our_qemus; echo none) | grep -c . || true)"); }
LOADS=("start: $LOAD_START")
N=0 # migrations so far (names libvirt's stream sockets)

# migrate_once SYSTEM MODE COUNTED: the guest migrated live from the side it runs on to the other.
migrate_once() {
    local system=$1 mode=$2 counted=$3 from to flags pid t0 total= before job downtime memory elapsed aborted=0 deadline damage
    from=${AT[$system]} to=$(other "${AT[$system]}")
    N=$((N + 1))
    flags=(--live --persistent --bandwidth "$BANDWIDTH")
    [ "$mode" = plain ] || flags+=(--auto-converge)
    if [ "$system" = ox ]; then
        flags+=("$VM" "oxvirt+unix://$(ox_socket "$to")")
    else
        # --unsafe: libvirt cannot know that its two "hosts" share this machine's local file system.
        flags+=("$VM" "$(lv_uri "$to")" --migrateuri "unix://$WORK/lv-mig/$N.sock" --unsafe)
    fi
    count_others
    # The workload runs right now: a new pass since the last one seen (a guest that stopped making
    # passes since its last move is started again first, untimed).
    if ! progressed "$system" "$(last_pass "$system")" "$STALL_TIMEOUT" || guest_errors "$system"; then
        say "  $(system_name "$system"): the guest stalled or complained since its last move: restarting it on $from"
        client "$system" "$from" destroy "$VM" > /dev/null
        boot_guest "$system" "$from"
    fi
    before=$(last_pass "$system")
    deadline=$((${EPOCHREALTIME%.*} + MIGRATE_TIMEOUT))
    say "  $(system_name "$system") $mode $from->$to: migrate"
    t0=$EPOCHREALTIME
    client "$system" "$from" migrate "${flags[@]}" > "$WORK/migrate.out" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2> /dev/null; do
        if ((${EPOCHREALTIME%.*} >= deadline)) && [ "$aborted" = 0 ]; then
            say "  $(system_name "$system") $mode: not converged within ${MIGRATE_TIMEOUT}s: domjobabort"
            client "$system" "$from" domjobinfo "$VM" > "$WORK/$system-unconverged.job" 2>&1 || true
            client "$system" "$from" domjobabort "$VM" > /dev/null 2>&1 || true
            aborted=1
        fi
        sleep 0.02
    done
    total=$(seconds_since "$t0")
    if ! wait "$pid"; then
        [ "$aborted" = 1 ] || die "$(system_name "$system") $mode: \`migrate ${flags[*]}\` failed: $(cat "$WORK/migrate.out")"
        [ "$(client "$system" "$from" domstate "$VM" | head -1)" = running ] || die "$(system_name "$system"): after the abort the guest does not run on the source"
        if [ "$counted" = 1 ]; then NOT_CONVERGED[$mode.$system]=$((${NOT_CONVERGED[$mode.$system]:-0} + 1)); fi
        say "  $(system_name "$system") $mode: aborted after ${total}s; it had: $(tr '\n' ';' < "$WORK/$system-unconverged.job")"
        return 0
    fi
    if [ "$system" = ox ]; then
        job=$(client ox "$from" domjobinfo "$VM")
    else
        job=$(client lv "$from" domjobinfo --completed "$VM")
    fi
    downtime=$(job_value "Total downtime" <<< "$job")
    memory=$(job_value "Memory processed" <<< "$job")
    elapsed=$(job_value "Time elapsed" <<< "$job")
    [ -n "$downtime" ] && [ -n "$memory" ] || die "$(system_name "$system"): domjobinfo after the migration lacks the downtime or the memory processed: $job"
    # The guest runs on the destination, with the same RAM: its pass counter goes on above where it was.
    [ "$(client "$system" "$to" domstate "$VM" | head -1)" = running ] || die "$(system_name "$system"): the guest does not run on the destination after the migration"
    client "$system" "$from" undefine "$VM" > /dev/null
    AT[$system]=$to
    say "  $(system_name "$system") $mode $from->$to: ${total}s, downtime ${downtime} ms, memory ${memory} MiB"
    # The guest goes on, and its kernel did not notice: a stall or an oops after the move means its state
    # arrived damaged.
    damage=
    progressed "$system" "$before" "$STALL_TIMEOUT" || damage="no pass of its workload within ${STALL_TIMEOUT}s"
    if guest_errors "$system"; then
        damage="${damage:+$damage, }$(grep -a -m1 -o -E "($GUEST_ERROR_PATTERN).{0,60}" "$(serial_log "$system")" | tr -d '\r')"
    fi
    if [ -n "$damage" ]; then
        tr -d '\0' < "$(serial_log "$system")" > "$WORK/guest-error-$system-$N.log"
        say "  $(system_name "$system") $mode: THE GUEST WAS DAMAGED by the migration ($WORK/guest-error-$system-$N.log): $damage"
        GUEST_ERRORS[$system]+="${GUEST_ERRORS[$system]:+; }migration $N ($mode): $damage"
        if [ "$counted" = 1 ]; then DAMAGED[$mode.$system]=$((${DAMAGED[$mode.$system]:-0} + 1)); fi
        say "  restarting the guest on $to"
        client "$system" "$to" destroy "$VM" > /dev/null
        boot_guest "$system" "$to"
    fi
    if [ "$counted" = 1 ]; then
        record "$mode" "$system" total "$total"
        record "$mode" "$system" downtime "$downtime"
        record "$mode" "$system" memory "$memory"
        record "$mode" "$system" elapsed "$elapsed"
        echo "$job" > "$WORK/job-$system-$mode-$N.txt"
    fi
}

if [ "$WARMUP" = 1 ]; then
    say "one uncounted migration each"
    for system in ox lv; do migrate_once "$system" plain 0; done
fi
say "$RUNS runs of: $MODES, each system (bandwidth $BANDWIDTH MiB/s)"
for ((run = 1; run <= RUNS; run++)); do
    LOADS+=("run $run: $(load)")
    order=(ox lv)
    ((run % 2)) || order=(lv ox)
    for mode in $MODES; do
        for system in "${order[@]}"; do migrate_once "$system" "$mode" 1; done
    done
done
LOADS+=("end: $(load)")
UPTIME_AT_END=$(uptime)

# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------
OX_VERSION=$(client ox a version | sed '/^$/d' | paste -sd';' | sed 's/;/; /g')
LV_VERSION=$(client lv a version | sed '/^$/d' | paste -sd';' | sed 's/;/; /g')
QEMU_VERSION=$(qemu-system-x86_64 --version | head -1)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
CPUS=$(nproc)
MEM_GIB=$(free -g | awk '/^Mem:/ { print $2 }')
KERNEL=$(uname -r)

cell() { # MODE.SYSTEM.FIGURE DECIMALS: "median (min–max)"
    local median low high
    [ -n "${T[$1]:-}" ] || { echo -; return 0; }
    # shellcheck disable=SC2086 # the run list is space separated on purpose
    read -r median low high < <(TIME_DECIMALS=$2 stats ${T[$1]})
    echo "$median ($low–$high)"
}
row() { # label, mode, figure, decimals
    local ox lv r=-
    ox=$(cell "$2.ox.$3" "$4") lv=$(cell "$2.lv.$3" "$4")
    [ "$ox" = - ] || [ "$lv" = - ] || awk -v l="${lv%% *}" 'BEGIN { exit !(l == 0) }' || r="**$(ratio "${ox%% *}" "${lv%% *}")**"
    printf '| %s | %s | %s | %s |\n' "$1" "$ox" "$lv" "$r"
}
converged() { # mode system
    echo "$((RUNS - ${NOT_CONVERGED[$1.$2]:-0}))/$RUNS"
}
flag_of() { if [ "$1" = plain ]; then echo "--live"; else echo "--live --auto-converge"; fi; }
TABLE=$(
    echo "| median (min–max) of the converged runs | oxvirt | libvirt | ratio oxvirt/libvirt (medians) |"
    echo "|---|---|---|---|"
    for mode in $MODES; do
        f=$(flag_of "$mode")
        row "\`migrate $f\`: wall time of the command (s)" "$mode" total 2
        row "… the job's own \"Time elapsed\" (ms)" "$mode" elapsed 0
        row "… Total downtime, as the tool reports it (ms)" "$mode" downtime 0
        row "… Memory processed (MiB)" "$mode" memory 1
        printf '| … runs converged within %s s | %s | %s | |\n' "$MIGRATE_TIMEOUT" "$(converged "$mode" ox)" "$(converged "$mode" lv)"
        printf '| … runs after which the guest stalled or its kernel reported an error | %s | %s | |\n' "${DAMAGED[$mode.ox]:-0}/$RUNS" "${DAMAGED[$mode.lv]:-0}/$RUNS"
    done
)
RAW=$(
    for key in "${!T[@]}"; do echo "- $key: ${T[$key]}"; done | sort
    echo "- other QEMU processes on the machine (not this benchmark's) before each migration, warm-ups included: ${OTHERS[*]}"
    for system in ox lv; do
        [ -z "${GUEST_ERRORS[$system]:-}" ] || echo "- $(system_name "$system"): the guest was damaged after: ${GUEST_ERRORS[$system]} (and restarted each time)"
    done
)

echo
echo "$TABLE"
echo
echo "$RAW"
echo
echo "workload rate before the first migration (MiB/s): oxvirt ${RATE[ox]}, libvirt ${RATE[lv]}"
echo "uptime at start: $UPTIME_AT_START"
echo "uptime at end:   $UPTIME_AT_END"

[ "$WRITE_DOC" = 1 ] || exit 0

SECTION=$WORK/section.md
cat > "$SECTION" << EOF
$TITLE

\`bash benches/migration.sh\` (RUNS=$RUNS, WARMUP=$WARMUP, BANDWIDTH=$BANDWIDTH, MIGRATE_TIMEOUT=$MIGRATE_TIMEOUT),
$(date -u '+%Y-%m-%d %H:%M UTC'). Release build of oxvirt (commit $COMMIT); Debian's libvirt. A 512 MiB TCG guest
whose workload rewrites a 256 MiB buffer in its RAM without pause, migrated live between two daemons of each
system on this one machine, back and forth ($RUNS counted migrations per system and mode$([ "$WARMUP" = 1 ] && echo ", after one uncounted
plain one each")); each run has both systems one after the other, which goes first flips every run. Ratios are
of the medians, oxvirt / libvirt (below 1: oxvirt is lower).

$TABLE

**The guest**: [benches/migration/domain.xml](../benches/migration/domain.xml), the same definition in both
systems but for its file paths and UUID: \`<domain type='qemu'>\` (TCG for both: /dev/kvm here is not hardware
KVM), machine \`pc\`, 1 vCPU, 512 MiB, no balloon, no network, a 64 MiB raw disk with \`cache='none'\` (idle),
direct kernel boot of the test guest kit (kernel $GUEST_KERNEL) with
[benches/migration/guest/run.sh](../benches/migration/guest/run.sh) as its lab script: a 256 MiB file in a
tmpfs filled with random bytes (not zeros, which QEMU sends as a flag), then rewritten in place by \`dd\`, pass
after pass. Measured from the host after the first boot (passes over 10 s), it rewrote the buffer at about
${RATE[ox]} MiB/s (oxvirt's guest, measured while it ran alone) and ${RATE[lv]} MiB/s (libvirt's, measured while
oxvirt's ran too); during the migrations both guests run all the time, whichever system migrates. After every
migration the script checks that the guest runs on the destination and that its pass counter (in its RAM) goes on
where it was within ${STALL_TIMEOUT} s, and that its kernel printed no oops: a guest that fails either counts as
damaged (the table's last row of each mode) and is started again, untimed, before it moves on.

**Commands timed** (wall time from just before the command until it returned; DOM is \`$VM\`; A and B are
the two daemons of a system, and each migration goes from the one the guest runs on to the other):
- \`oxvirt --socket A.sock migrate --live --persistent --bandwidth $BANDWIDTH [--auto-converge] DOM oxvirt+unix://B.sock\`
- \`virsh -c 'qemu+unix:///system?socket=A/libvirt-sock' migrate --live --persistent --bandwidth $BANDWIDTH
  [--auto-converge] DOM 'qemu+unix:///system?socket=B/libvirt-sock' --migrateuri unix:///WORK/lv-mig/N.sock --unsafe\`
  (\`--unsafe\`: libvirt refuses "Migration without shared storage is unsafe" for a disk on a local file
  system, even with \`cache='none'\`; it cannot know that both of its "hosts" are this machine)

and then, untimed, \`oxvirt domjobinfo DOM\` / \`virsh domjobinfo --completed DOM\` on the source (the figures
above), and \`undefine DOM\` there (both keep the definition shut off on the source). A migration still
running after $MIGRATE_TIMEOUT s would be aborted (\`domjobabort\`) and counted as not converged.

**What the figures are, and are not.** The same \`--bandwidth\` for both: without it oxvirt leaves QEMU's
default limit (32 MiB/s, docs/migration.md) and libvirt lifts it (libvirt sets QEMU's limit to its maximum at
each guest's start), which would compare the defaults rather than the migrations. "Total downtime" is not
measured alike: oxvirt shows QEMU's own \`downtime\` from the source's \`query-migrate\` (from pausing the guest
until the source QEMU sent the last of its state), while libvirt 9.0 measures its own from the moment the
source paused the guest until the destination resumed it (both of its daemons' clocks, here one), which also
holds the destination's loading of the state and the finish handshake. "Memory processed" is QEMU's
\`ram.transferred\` in both (pages of zeros count as a few bytes). The stream: oxvirt's daemons connect a Unix
socket and hand each QEMU its end (\`fd:\`); libvirt's destination QEMU listens on the \`unix:\` socket and the
source libvirtd connects and hands its QEMU the descriptor. Neither encrypts or tunnels it.

**The libvirt setup**: two libvirtd (each with its own virtlogd and virtlockd) in mount namespaces of their own
(\`unshare --mount\`), where \`/etc/libvirt\` (a copy of Debian's, plus a \`host_uuid\` of its own, without which
libvirt refuses "to migrate guest to the same host", and \`cgroup_controllers = [ ]\`, since both would create
the guest's cgroup at the same path), \`/run/libvirt\`, \`/var/lib/libvirt\`, \`/var/cache/libvirt\` and
\`/var/log/libvirt\` are directories of the run; otherwise Debian's defaults (QEMU as libvirt-qemu, DAC, its
mount namespace per QEMU). The oxvirt setup: two oxvirtd with their own state directories, sockets and
\`qemu_user_range\`s (${OX_USER_RANGES[*]}), as crates/cli/tests/migration.rs runs them.

**Machine**: $CPU_MODEL, $CPUS CPUs, $MEM_GIB GiB, kernel $KERNEL; load average (1/5/15 min) at the start, before each run
and at the end: ${LOADS[*]}. Other QEMU processes on the machine (not this benchmark's) before each migration:
${OTHERS[*]}. TCG on 2 cores: each guest's vCPU and QEMU's migration thread are host threads competing for
the same 2 cores with the other guest and, in this run, with other work on the machine; the absolute times
are TCG's and this machine's, the ratios are what to read.
**Versions**: oxvirt: $OX_VERSION. libvirt: $LV_VERSION. $QEMU_VERSION.

Raw runs (in order; total in s, elapsed and downtime in ms, memory in MiB):

$RAW
EOF
write_doc_section "$TITLE" "$SECTION"
