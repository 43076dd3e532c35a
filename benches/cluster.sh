#!/usr/bin/env bash
# The cluster's costs (docs/benchmarks.md, "Cluster: HA failover and start through the cluster"), in one run:
#   - HA failover: an `<oxvirt:ha/>` guest runs on one of three members (oxvirtd in network namespaces joined
#     by a bridge, etcd from Debian in another, as scripts/cluster-demo.sh and crates/cli/tests/cluster.rs
#     set them up); its host "dies" (SIGKILL to every process of that host's namespace: its oxvirtd and the
#     guest's QEMU); timed from the kill until another member's `host-list` says the dead host's lease
#     expired, until a survivor's `list` shows the guest running on another host, and until the guest printed
#     its boot marker there. The dead host's oxvirtd then comes back (untimed) and the next run kills the
#     host the guest runs on now. A poller counts the guest's QEMUs over the whole run: never two.
#   - `start` latency: `oxvirt start` of a cluster guest asked of host-a (placement, the request through
#     etcd, the chosen member's lock and start) against `oxvirt start` of the same guest defined on a single
#     oxvirtd without a cluster, alternating (which goes first flips every run); timed until the command
#     returned (the guest's QEMU runs) and until the guest's boot marker.
#
# Settings (environment): RUNS (5) failovers and starts of each kind, WARMUP (1: one uncounted start of each
# kind first), FAILOVER_TIMEOUT (s, 120), BOOT_TIMEOUT (s, 120), WRITE_DOC (1: write the section of
# docs/benchmarks.md), BENCH_NOTE (a sentence for the doc on what else ran on the machine), SKIP_BUILD (1: use
# the release binaries as they are), KEEP_WORK (1: keep the run's directory).
#
# Needs root, QEMU and etcd (Debian's etcd-server, installed if missing). Nothing is added to the machine's
# own network namespace (10.79.0.0/24 exists only inside the run's namespaces; the single host's oxvirtd runs
# without any network). On exit, also on failure, it kills every process of the run's namespaces, stops the
# single host's oxvirtd and its guests, deletes the namespaces and removes the run's directory (kept after a
# failure).
set -euo pipefail
export LC_ALL=C

RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
WRITE_DOC=${WRITE_DOC:-1}
FAILOVER_TIMEOUT=${FAILOVER_TIMEOUT:-120}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-120}
HA_NAME=clbench-ha
HA_UUID=5d0c8a4e-7b1f-4c3a-9e2d-6f4b8a1c3e11
# The started guests, by kind: solo (the single host's), cluster (placed from host-a) and remote (kept off
# the asking member by a spread group mate running there).
declare -A START_NAME=([solo]=clbench-start [cluster]=clbench-start [remote]=clbench-remote)
declare -A START_UUID=([solo]=5d0c8a4e-7b1f-4c3a-9e2d-6f4b8a1c3e13 [cluster]=5d0c8a4e-7b1f-4c3a-9e2d-6f4b8a1c3e12
    [remote]=5d0c8a4e-7b1f-4c3a-9e2d-6f4b8a1c3e15)
MATE_NAME=clbench-mate
MATE_UUID=5d0c8a4e-7b1f-4c3a-9e2d-6f4b8a1c3e14
KINDS=(solo cluster remote)
MEMBERS=(host-a host-b host-c)
# Each oxvirtd's guest users: disjoint, and used by no test or other bench.
declare -A USER_RANGE=([host-a]=3182000-3182099 [host-b]=3183000-3183099 [host-c]=3184000-3184099 [solo]=3185000-3185099)
TITLE="## Cluster: HA failover and start through the cluster"
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

say() { printf '[cluster %s] %s\n' "$(date -u +%T.%3N)" "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
source benches/lib.sh

[ "$(id -u)" = 0 ] || die "run as root (network namespaces)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
[[ $WARMUP =~ ^[01]$ ]] || die "WARMUP must be 0 or 1, not '$WARMUP'"
for setting in FAILOVER_TIMEOUT BOOT_TIMEOUT; do
    [[ ${!setting} =~ ^[1-9][0-9]*$ ]] || die "$setting must be a positive number of seconds, not '${!setting}'"
done

install_missing etcd-server
build_oxvirt_and_guest_kit
make_work_dir /var/tmp/cluster-bench.XXXXXX
# shellcheck source=scripts/cluster-lab.sh
source scripts/cluster-lab.sh
TAG=oxclb$$
ETCD_URL=http://10.79.0.1:2379
declare -A DAEMON_PID # member or solo -> its oxvirtd's pid
POLLER=

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    say "cleaning up"
    stop_pid "${POLLER:-}"
    if pid_alive "${DAEMON_PID[solo]:-}"; then
        OXVIRT=("$WORK/oxvirt" --socket "$WORK/solo/oxvirtd.sock")
        remove_oxvirt_domains clbench-
        stop_pid "${DAEMON_PID[solo]}"
    fi
    stop_oxvirt_guests "$WORK/solo/state"
    cluster_lab_remove
    finish_work "$status"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

socket_of() { echo "$WORK/$1/oxvirtd.sock"; }
ox() { # ox HOST ARGS...: the oxvirt client of that member (or of solo)
    local host=$1
    shift
    "$WORK/oxvirt" --socket "$(socket_of "$host")" "$@"
}

# ---------------------------------------------------------------------------------------------------------
# Setup: etcd, three members, one single host
# ---------------------------------------------------------------------------------------------------------
cluster_lab_switch "$TAG"
cluster_lab_plug "$TAG-etcd" vetcd 10.79.0.1
say "starting etcd"
cluster_lab_etcd "$TAG-etcd" "$ETCD_URL" "$WORK/etcd" "$WORK/etcd.log" || die "etcd did not start"

# launch MEMBER: (re)starts that member's oxvirtd in its namespace and waits until it answers.
launch() {
    local host=$1
    OXVIRT=("$WORK/oxvirt" --socket "$(socket_of "$host")")
    start_oxvirtd "$WORK/$host/oxvirtd.log.$((${LAUNCHES[$host]:-0} + 1))" ip netns exec "$TAG-$host" "$WORK/oxvirtd" \
        --socket "$(socket_of "$host")" --state-dir "$WORK/$host/state" --no-default-network --log-level warn \
        --qemu-user-range "${USER_RANGE[$host]}" --cluster "etcd=$ETCD_URL" --host-name "$host"
    LAUNCHES[$host]=$((${LAUNCHES[$host]:-0} + 1))
    DAEMON_PID[$host]=$OXVIRTD_PID
    disown "$OXVIRTD_PID" # SIGKILLed on purpose: no "Killed" line from bash
}
declare -A LAUNCHES
for i in 0 1 2; do
    host=${MEMBERS[$i]}
    cluster_lab_plug "$TAG-$host" "v$host" "10.79.0.$((11 + i))"
    mkdir -p "$WORK/$host"
    say "starting oxvirtd $host"
    launch "$host"
done
mkdir -p "$WORK/solo"
say "starting the single host's oxvirtd (no cluster)"
OXVIRT=("$WORK/oxvirt" --socket "$(socket_of solo)")
start_oxvirtd "$WORK/solo/oxvirtd.log" "$WORK/oxvirtd" --socket "$(socket_of solo)" --state-dir "$WORK/solo/state" \
    --no-default-network --log-level warn --qemu-user-range "${USER_RANGE[solo]}"
DAEMON_PID[solo]=$OXVIRTD_PID

# up_count ASKER: how many members ASKER's host-list shows up.
up_count() { ox "$1" host-list 2> /dev/null | grep -cE '^ host-[abc] +up ' || true; }
# wait_until SECONDS COMMAND...: until COMMAND succeeds (every 0.1 s); fails after SECONDS.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}
all_up() { [ "$(up_count host-a)" = 3 ]; }
wait_until 90 all_up || die "three members never showed up: $(ox host-a host-list 2>&1)"
say "three members up"

# The guests: the kit's kernel and initramfs, one serial log per guest.
KIT=${OXVIRT_GUEST_KIT_DIR:-target/guest-kit}
cp "$KIT/vmlinuz" "$KIT/initramfs.img" "$WORK/"
chmod 644 "$WORK/vmlinuz" "$WORK/initramfs.img"
GUEST_KERNEL=$(cat "$KIT/version")
serial_log() { echo "$WORK/$1.serial.log"; }
# guest_xml NAME UUID METADATA
guest_xml() {
    sed -e "s|@NAME@|$1|" -e "s|@UUID@|$2|" -e "s|@METADATA@|$3|" -e "s|@SERIAL_LOG@|$(serial_log "$2")|" \
        -e "s|@KERNEL@|$WORK/vmlinuz|" -e "s|@INITRD@|$WORK/initramfs.img|" benches/cluster/domain.xml
}
PLACEMENT_NS="xmlns:oxvirt='urn:oxvirt:domain:1.0'"
guest_xml "$HA_NAME" "$HA_UUID" "<oxvirt:placement $PLACEMENT_NS><oxvirt:ha/></oxvirt:placement>" > "$WORK/ha.xml"
SPREAD="<oxvirt:placement $PLACEMENT_NS group='clbench' policy='spread'/>"
guest_xml "${START_NAME[cluster]}" "${START_UUID[cluster]}" "" > "$WORK/cluster.xml"
guest_xml "${START_NAME[remote]}" "${START_UUID[remote]}" "$SPREAD" > "$WORK/remote.xml"
guest_xml "$MATE_NAME" "$MATE_UUID" "$SPREAD" > "$WORK/mate.xml"
guest_xml "${START_NAME[solo]}" "${START_UUID[solo]}" "" > "$WORK/solo.xml"
for file in ha cluster remote mate; do ox host-a define --cluster "$WORK/$file.xml" > /dev/null; done
ox solo define "$WORK/solo.xml" > /dev/null

# A start (not an incoming migration) truncates the guest's serial log, so each timed start or failover
# empties it first and waits for the boot marker in it.
forget_boots() { : > "$(serial_log "$1")"; }
has_booted() { grep -aq OXVIRT-GUEST-BOOTED "$(serial_log "$1")" 2> /dev/null; }
# host_of ASKER NAME: the host ASKER's list shows NAME running on (empty if none).
host_of() { ox "$1" list 2> /dev/null | awk -v n="$2" '$2 == n && $3 == "running" { print $4 }'; }
stopped_everywhere() { [ -z "$(host_of host-a "$1")" ] && ox host-a list --all 2> /dev/null | grep -Eq " $1 +shut off +- *\$"; }

# ---------------------------------------------------------------------------------------------------------
# start latency: through the cluster vs a single host
# ---------------------------------------------------------------------------------------------------------
declare -A T # "KIND.FIGURE" -> the runs' values, space-separated
record() { T[$1.$2]+="${T[$1.$2]:+ }$3"; }
declare -A PLACED # kind -> the hosts its counted starts ran the guest on
declare -A ASKER=([solo]=solo [cluster]=host-a)

# The remote kind's asker: the host its spread group mate runs on (placement keeps the guest off it).
say "starting $MATE_NAME, the spread group mate"
ox host-a start "$MATE_NAME" > /dev/null
ASKER[remote]=$(host_of host-a "$MATE_NAME")
[ -n "${ASKER[remote]}" ] || die "$MATE_NAME does not run: $(ox host-a list --all 2>&1)"

# start_once KIND COUNTED: one timed start and stop of KIND's guest, asked of KIND's asker.
start_once() {
    local kind=$1 counted=$2 name=${START_NAME[$1]} uuid=${START_UUID[$1]} asker=${ASKER[$1]} t0 returned booted runner
    forget_boots "$uuid"
    t0=$EPOCHREALTIME
    ox "$asker" start "$name" > "$WORK/start.out" 2>&1 || die "$kind start failed: $(cat "$WORK/start.out")"
    returned=$(seconds_since "$t0")
    wait_until "$BOOT_TIMEOUT" has_booted "$uuid" || die "$kind start: no boot marker within $BOOT_TIMEOUT s"
    booted=$(seconds_since "$t0")
    runner=solo
    if [ "$kind" != solo ]; then
        runner=$(host_of host-a "$name")
        [ -n "$runner" ] || die "the cluster guest does not run after its start: $(ox host-a list --all 2>&1)"
        [ "$kind" != remote ] || [ "$runner" != "$asker" ] || die "the spread guest was placed beside its mate on $runner"
    fi
    say "  $kind start (asked of $asker): returned after ${returned}s, booted after ${booted}s (on $runner)"
    ox "$runner" destroy "$name" > /dev/null
    if [ "$kind" != solo ]; then
        # The host's cluster loop removes its copy and releases the lock within one renewal.
        wait_until 30 stopped_everywhere "$name" || die "the cluster guest's lock stayed after destroy: $(ox host-a list --all 2>&1)"
    fi
    if [ "$counted" = 1 ]; then
        record "$kind" returned "$returned"
        record "$kind" booted "$booted"
        PLACED[$kind]+="${PLACED[$kind]:+ }$runner"
    fi
}

LOADS=("$(load)")
if [ "$WARMUP" = 1 ]; then
    say "one uncounted start of each kind"
    for kind in "${KINDS[@]}"; do start_once "$kind" 0; done
fi
say "$RUNS starts of each kind"
for ((run = 1; run <= RUNS; run++)); do
    # Which kind goes first turns every run.
    for ((i = 0; i < ${#KINDS[@]}; i++)); do start_once "${KINDS[$(((run + i) % ${#KINDS[@]}))]}" 1; done
done
ox "$(host_of host-a "$MATE_NAME")" destroy "$MATE_NAME" > /dev/null
wait_until 30 stopped_everywhere "$MATE_NAME" || die "$MATE_NAME's lock stayed after destroy"

# ---------------------------------------------------------------------------------------------------------
# HA failover
# ---------------------------------------------------------------------------------------------------------
# "[q]emu": the pattern must not match another pgrep of it (the poller's and a check's run at once).
ha_qemus() { pgrep -f -- "[q]emu-system.*$HA_UUID" || true; }
two_ha_qemus() { [ "$(ha_qemus | grep -c .)" -ge 2 ]; }
# The poller: the most QEMUs of the HA guest seen at once on the machine, every 0.1 s, in a file.
MOST_FILE=$WORK/most-qemus
echo 0 > "$MOST_FILE"
(
    most=0
    while :; do
        pids=$(ha_qemus)
        n=$(echo "$pids" | grep -c . || true)
        if [ "$n" -gt "$most" ]; then
            most=$n
            echo "$most" > "$MOST_FILE"
            for pid in $pids; do
                echo "$pid $(readlink "/proc/$pid/ns/net") $(tr '\0' ' ' < "/proc/$pid/cmdline" | cut -c1-300)"
            done > "$WORK/most-qemus.processes" 2> /dev/null
        fi
        sleep 0.1
    done
) &
POLLER=$!

say "starting the HA guest"
forget_boots "$HA_UUID"
ox host-a start "$HA_NAME" > /dev/null
wait_until "$BOOT_TIMEOUT" has_booted "$HA_UUID" || die "the HA guest did not boot"
VICTIMS=()
NEW_HOSTS=()
for ((run = 1; run <= RUNS; run++)); do
    LOADS+=("$(load)")
    victim=$(host_of host-a "$HA_NAME")
    [ -z "$victim" ] && victim=$(host_of host-b "$HA_NAME")
    [ -n "$victim" ] || die "the HA guest runs nowhere: $(ox host-a list --all 2>&1)"
    survivor=host-a
    [ "$victim" != host-a ] || survivor=host-b
    forget_boots "$HA_UUID"
    say "failover $run: killing $victim (its oxvirtd and QEMU)"
    t0=$EPOCHREALTIME
    for pid in $(cluster_lab_pids "$TAG-$victim"); do kill -KILL "$pid" 2> /dev/null || true; done
    expired='' running='' booted='' new_host=''
    deadline=$((SECONDS + FAILOVER_TIMEOUT))
    while [ -z "$booted" ] || [ -z "$expired" ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "failover $run: the guest did not run again within $FAILOVER_TIMEOUT s: $(ox "$survivor" list --all 2>&1)"
        if [ -z "$expired" ] && ox "$survivor" host-list 2> /dev/null | grep -Eq "^ $victim +lease expired"; then
            expired=$(seconds_since "$t0")
        fi
        if [ -z "$running" ]; then
            new_host=$(host_of "$survivor" "$HA_NAME")
            if [ -n "$new_host" ] && [ "$new_host" != "$victim" ]; then running=$(seconds_since "$t0"); fi
        fi
        if [ -n "$running" ] && has_booted "$HA_UUID"; then booted=$(seconds_since "$t0"); fi
        sleep 0.1
    done
    say "  lease expired after ${expired}s, running on $new_host after ${running}s, booted after ${booted}s"
    record failover expired "$expired"
    record failover running "$running"
    record failover booted "$booted"
    VICTIMS+=("$victim")
    NEW_HOSTS+=("$new_host")
    for pid in $(cluster_lab_pids "$TAG-$victim"); do while pid_alive "$pid"; do sleep 0.05; done; done
    say "  $victim comes back"
    launch "$victim"
    wait_until 60 all_up || die "$victim did not rejoin"
    # The host back never starts the guest again: 12 s are more than three of its renewals, each of which
    # reconciles (as crates/cli/tests/cluster.rs waits).
    if wait_until 12 two_ha_qemus; then die "after $victim came back, two QEMUs of the HA guest run: $(ha_qemus)"; fi
done
kill "$POLLER" 2> /dev/null || true
wait "$POLLER" 2> /dev/null || true
MOST=$(cat "$MOST_FILE")
[ "$MOST" = 1 ] || die "the poller saw $MOST QEMUs of the HA guest at once: $(cat "$WORK/most-qemus.processes")"
LOADS+=("$(load)")
UPTIME_AT_END=$(uptime)

# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2> /dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2> /dev/null)" ]; then
    COMMIT="$COMMIT plus uncommitted changes"
fi
OX_VERSION=$(ox solo version | sed '/^$/d' | paste -sd';' | sed 's/;/; /g')
QEMU_VERSION=$(qemu-system-x86_64 --version | head -1)
ETCD_VERSION=$(etcd --version 2> /dev/null | head -1)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
CPUS=$(nproc)
MEM_GIB=$(free -g | awk '/^Mem:/ { print $2 }')
KERNEL=$(uname -r)

# cell KIND FIGURE: "median (min-max)".
cell() { read -r m lo hi <<< "$(stats ${T[$1.$2]})"; echo "$m ($lo-$hi)"; }
median_of() { stats ${T[$1.$2]} | cut -d' ' -f1; }
TABLE=$(
    echo "| \`oxvirt start\` (s, median (min-max) of $RUNS) | returned (the guest's QEMU runs) | ratio | the guest printed its boot marker | ratio |"
    echo "|---|---|---|---|---|"
    for kind in solo cluster remote; do
        case $kind in
            solo) label="single host (no cluster)" ;;
            cluster) label="cluster guest, asked of host-a (placed on: ${PLACED[cluster]})" ;;
            remote) label="cluster guest placed on another member than the one asked (${ASKER[remote]}; placed on: ${PLACED[remote]})" ;;
        esac
        printf '| %s | %s | %s | %s | %s |\n' "$label" "$(cell "$kind" returned)" \
            "$(ratio "$(median_of "$kind" returned)" "$(median_of solo returned)")" "$(cell "$kind" booted)" \
            "$(ratio "$(median_of "$kind" booted)" "$(median_of solo booted)")"
    done
)
FAILOVER_TABLE=$(
    echo "| from the SIGKILL of the guest's host until (s) | median (min-max) of $RUNS |"
    echo "|---|---|"
    printf '| a survivor'"'"'s `host-list` shows the host'"'"'s lease expired | %s |\n' "$(cell failover expired)"
    printf '| a survivor'"'"'s `list` shows the guest running on another host | %s |\n' "$(cell failover running)"
    printf '| the guest printed its boot marker there | %s |\n' "$(cell failover booted)"
)
RAW=$(
    for key in "${!T[@]}"; do echo "- $key: ${T[$key]}"; done | sort
    echo "- failovers (killed host -> new host): $(for i in "${!VICTIMS[@]}"; do printf '%s->%s ' "${VICTIMS[$i]}" "${NEW_HOSTS[$i]}"; done)"
)
echo
echo "$TABLE"
echo
echo "$FAILOVER_TABLE"
echo
echo "$RAW"
echo "uptime at end: $UPTIME_AT_END"

[ "$WRITE_DOC" = 1 ] || exit 0

SECTION=$WORK/section.md
cat > "$SECTION" << EOF
$TITLE

\`bash benches/cluster.sh\` (RUNS=$RUNS, WARMUP=$WARMUP), $(date -u '+%Y-%m-%d %H:%M UTC'). Release build of
oxvirt (commit $COMMIT). Three oxvirtd members in network namespaces joined by a bridge, etcd from Debian in
another (docs/cluster.md), and a fourth oxvirtd without \`--cluster\` (the single host), all on this one
machine. The guest: [benches/cluster/domain.xml](../benches/cluster/domain.xml) (TCG, 1 vCPU, 256 MiB, direct
kernel boot of the test guest kit, kernel $GUEST_KERNEL, no disk, no network).

**\`start\` through the cluster against a single host.** Timed from just before \`oxvirt start NAME\` until it
returned, and until the guest printed its boot marker on its serial log; then, untimed, \`destroy\` on the host
that ran it (and, for the cluster, until its lock was released). Three kinds, $RUNS runs of each, the kind that
goes first turning every run$([ "$WARMUP" = 1 ] && echo ", after one uncounted start of each"): the single host's plain definition; a cluster
guest asked of host-a's socket: the member reads the hosts, running guests and definitions from etcd, ranks
the hosts (placement), and when it is first itself (as it was in these runs: the members share one machine's
free memory, and the asker ranks with the freshest record of its own), takes the guest's lock, defines its
local copy and starts it; and a cluster guest of a \`spread\` group whose mate runs on the member asked
(${ASKER[remote]}), so it goes to another member: the request and its answer go through etcd
(\`/oxvirt/requests/HOST/UUID\`, polled every 0.5 s by the chosen host), which then does the same. Ratios are
of the medians, against the single host.
$TABLE

**HA failover** of an \`<oxvirt:ha/>\` guest: its host "dies" (SIGKILL to every process of its network namespace:
its oxvirtd and the guest's QEMU, at once); the figures are read by polling every 0.1 s a surviving member's
\`host-list\` and \`list\`, and the guest's serial log (one file whatever host runs it). The dead host's oxvirtd
then comes back (untimed; it must not start the guest again: checked for 12 s, more than three of its
renewals) and the next run kills the host the guest runs on then. A poller counted the guest's QEMUs on the
machine every 0.1 s over all runs: at most $MOST at once.

$FAILOVER_TABLE

**What bounds the failover** (docs/cluster.md, "High availability"): the lease's TTL (10 s after the host's
last renewal, which is at most 3.3 s before the kill), then the next renewal of a surviving member (every
3.3 s), which sees a wanted HA guest without a lock, takes the lock and starts it; then the guest's own boot
(TCG). So the restart lands between about 7 and 14 s after the kill, plus the start.

**Machine**: $CPU_MODEL, $CPUS CPUs, $MEM_GIB GiB, kernel $KERNEL; load average (1/5/15 min) at the start, before
each failover and at the end: ${LOADS[*]}.${BENCH_NOTE:+ $BENCH_NOTE} The absolute times are TCG's on this machine
under that load; the starts' ratio is what to read.
**Versions**: oxvirt: $OX_VERSION. $QEMU_VERSION. $ETCD_VERSION.

Raw runs (in order, s):

$RAW
EOF
write_doc_section "$TITLE" "$SECTION"
