#!/usr/bin/env bash
# Networking benchmark: iperf3 TCP throughput through an oxvirt network against a libvirt network, same guest,
# same network XML (benches/network/network.xml: NAT + DHCP on 192.168.150.0/24), same domain XML
# (benches/network/domain.xml: TCG, virtio NIC with <driver queues='N'/>, N vCPUs). Prints a table and
# writes the section "## Networking: iperf3" of docs/benchmarks.md. Ratios are oxvirt / libvirt (above 1:
# oxvirt is faster).
#
#   sudo bash benches/network.sh                            # RUNS=3 rounds, 10 s per iperf3 run, queues 1 and 4
#   RUNS=1 DURATION=3 WRITE_DOC=0 bash benches/network.sh    # quick run while developing, doc left alone
#   QUEUES="1" SKIP_BUILD=1 ...                              # only 1 queue; release binaries as they are
#
# What it measures, for each system (oxvirt's qemu engine, libvirt) and each queue count N:
#   (a) guest -> bridge: iperf3 client in a guest, server in the network's namespace on the bridge address;
#   (b) guest -> guest: iperf3 client in one guest, server in a second guest on the same network.
# Each round boots a server guest and a client guest per system and queue count; the client runs (a) then
# (b) once (iperf3 -c ... -t DURATION -O 1 -P N) and prints the receiver's total. Which system goes first
# flips every round. Reported: the median over RUNS rounds.
#
# Network rule: nothing touches the machine's own network namespace. The script creates two namespaces,
# oxbench-<random>-ox and oxbench-<random>-lv, runs oxvirtd in the first and virtlogd, virtlockd and libvirtd
# in the second (their networks, dnsmasq, TAPs and QEMU processes live there), checks that no interface
# appears in the machine's namespace, and deletes both namespaces at the end. libvirt also runs in a private
# mount namespace with its own empty /run/libvirt, /etc/libvirt/qemu, /var/lib/libvirt/{qemu,dnsmasq} and
# /var/log/libvirt/qemu: it sees none of the machine's definitions (so no autostarted "default" network),
# leaves no files behind, and does not clash with a libvirtd that other work runs at the same time.
#
# Needs root, QEMU, iperf3 and libvirt (installed if missing). On exit (also on failure) it destroys and
# undefines every guest and network it created, stops every daemon it started and deletes the namespaces.
set -euo pipefail
export LC_ALL=C

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
QUEUES=${QUEUES:-1 4}
WRITE_DOC=${WRITE_DOC:-1}
OMIT=1
PREFIX=oxbench-
SERVER_VM=${PREFIX}server
CLIENT_VM=${PREFIX}client
SERVER_MAC=52:54:00:0b:e0:02
CLIENT_MAC=52:54:00:0b:e0:03
BRIDGE_IP=192.168.150.1
SERVER_IP=192.168.150.2
NETWORK=oxbench
BRIDGE=oxbbr0
PACKAGES=(libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu iperf3)
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

say() { printf '[network] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
source benches/lib.sh

[ "$(id -u)" = 0 ] || die "run as root (namespaces, bridges and libvirt's qemu:///system need it)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive number of seconds, not '$DURATION'"
for q in $QUEUES; do [[ $q =~ ^[1-8]$ ]] || die "QUEUES must list queue counts from 1 to 8, not '$q'"; done

# ---------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2> /dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi

build_oxvirt_and_guest_kit

make_work_dir /tmp/oxbench-network.XXXXXX
mkdir -p "$WORK/logs"
VIRSH=() # set once libvirt's private mount namespace exists (below)
LV_HOLDER_PID=
SUFFIX=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
NS_OX=${PREFIX}$SUFFIX-ox
NS_LV=${PREFIX}$SUFFIX-lv
OXVIRTD_PID=
declare -a IPERF_SERVER_PIDS=()
NAMESPACES_MADE=()
HOST_LINKS_BEFORE=$(ip -o link show | awk -F': ' '{ print $2 }' | sort)

# ---------------------------------------------------------------------------------------------------------
# Cleanup: runs on every exit, also after a failure or Ctrl-C.
# ---------------------------------------------------------------------------------------------------------
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    say "cleaning up"
    local pid name ns
    for pid in "${IPERF_SERVER_PIDS[@]}"; do stop_pid "$pid"; done
    if pid_alive "$LV_HOLDER_PID" && pid_alive "$(pid_from_file "$WORK/libvirtd.pid")"; then
        for name in $SERVER_VM $CLIENT_VM; do
            "${VIRSH[@]}" destroy "$name" > /dev/null 2>&1
            "${VIRSH[@]}" undefine "$name" > /dev/null 2>&1
        done
        "${VIRSH[@]}" net-destroy "$NETWORK" > /dev/null 2>&1
        "${VIRSH[@]}" net-undefine "$NETWORK" > /dev/null 2>&1
    fi
    if pid_alive "$OXVIRTD_PID"; then
        for name in $SERVER_VM $CLIENT_VM; do
            "${OXVIRT[@]}" destroy "$name" > /dev/null 2>&1
        done
        "${OXVIRT[@]}" net-destroy "$NETWORK" > /dev/null 2>&1
        stop_pid "$OXVIRTD_PID"
    fi
    stop_oxvirt_guests "$OX_STATE"
    stop_libvirt_daemons "$WORK"
    stop_pid "$LV_HOLDER_PID" # the last process of libvirt's mount namespace: its private mounts go with it
    # Whatever still runs in our namespaces (a dnsmasq or QEMU whose owner failed to stop it) was started
    # by this run: stop it, then delete the namespaces.
    for ns in "${NAMESPACES_MADE[@]}"; do
        for pid in $(ip netns pids "$ns" 2> /dev/null); do stop_pid "$pid"; done
        ip netns del "$ns"
    done
    restore_kvm_mode
    finish_work "$status"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------------------
# The guest: the test guest kit plus a cpio with iperf3, its libraries and the role script
# ---------------------------------------------------------------------------------------------------------
extra=$WORK/extra-root
mkdir -p "$extra/lab" "$extra/usr/bin" "$extra/lib64" "$extra/lib/x86_64-linux-gnu"
install -m 755 benches/network/guest/run.sh "$extra/lab/run.sh"
install -m 755 benches/network/guest/udhcpc.script "$extra/lab/udhcpc.script"
cp -L /usr/bin/iperf3 "$extra/usr/bin/iperf3"
for library in $(ldd /usr/bin/iperf3 | awk '/=> \// { print $3 } /^\t\/lib64\// { print $1 }'); do
    case $library in
        /lib64/*) cp -L "$library" "$extra/lib64/" ;;
        *) cp -L "$library" "$extra/lib/x86_64-linux-gnu/" ;;
    esac
done
[ -e "$extra/lib64/ld-linux-x86-64.so.2" ] || die "ldd did not name the dynamic loader of /usr/bin/iperf3"
(cd "$extra" && find . -mindepth 1 | cpio -o -H newc --quiet | gzip -1) > "$WORK/extra.cpio.gz"
cat target/guest-kit/initramfs.img "$WORK/extra.cpio.gz" > "$WORK/initramfs.img"
cp target/guest-kit/vmlinuz "$WORK/vmlinuz"
chmod 644 "$WORK/vmlinuz" "$WORK/initramfs.img"
GUEST_KERNEL=$(cat target/guest-kit/version)

# domain_xml NAME VCPUS QUEUES MAC SERIAL_LOG CMDLINE
domain_xml() {
    sed -e "s|@NAME@|$1|" -e "s|@VCPUS@|$2|" -e "s|@QUEUES@|$3|" -e "s|@MAC@|$4|" \
        -e "s|@SERIAL_LOG@|$5|" -e "s|@CMDLINE@|$6|" \
        -e "s|@KERNEL@|$WORK/vmlinuz|" -e "s|@INITRD@|$WORK/initramfs.img|" benches/network/domain.xml
}

# ---------------------------------------------------------------------------------------------------------
# Namespaces and daemons
# ---------------------------------------------------------------------------------------------------------
for ns in "$NS_OX" "$NS_LV"; do
    ip netns add "$ns"
    NAMESPACES_MADE+=("$ns")
    ip netns exec "$ns" ip link set lo up
done
say "namespaces $NS_OX (oxvirt) and $NS_LV (libvirt)"

give_kvm_to_libvirt

# libvirtd, virtlogd and virtlockd also get a private mount namespace (made by a holder process in the
# namespace) in which their runtime, configuration, state and log directories are private: /run/libvirt is a
# tmpfs, and /etc/libvirt/qemu, /var/lib/libvirt/qemu, /var/lib/libvirt/dnsmasq and /var/log/libvirt/qemu are
# empty directories of this run bind-mounted over the real ones. So this libvirt sees no definition of the
# machine (in particular not the autostarted "default" network: its /etc/libvirt/qemu/networks/autostart is
# empty), leaves nothing in the machine's libvirt directories, and neither disturbs nor is disturbed by a
# libvirtd that other work runs on this machine at the same time (its sockets are in the private /run/libvirt).
ip netns exec "$NS_LV" unshare --mount --propagation private sleep infinity &
LV_HOLDER_PID=$!
for ((i = 0; i < 100; i++)); do
    [ "$(cat "/proc/$LV_HOLDER_PID/comm" 2> /dev/null)" = sleep ] && break
    sleep 0.05
done
[ "$(readlink "/proc/$LV_HOLDER_PID/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ] ||
    die "could not make a private mount namespace for libvirt"
LV_NS=(nsenter --target "$LV_HOLDER_PID" --mount --net)
LV_PRIVATE=$WORK/libvirt-private
for dir in /etc/libvirt/qemu /var/lib/libvirt/qemu /var/lib/libvirt/dnsmasq /var/log/libvirt/qemu; do
    private=$LV_PRIVATE${dir//\//_}
    mkdir -p "$private"
    chown --reference="$dir" "$private"
    chmod --reference="$dir" "$private"
    "${LV_NS[@]}" mount --bind "$private" "$dir"
done
mkdir -p "${LV_PRIVATE}_etc_libvirt_qemu/networks/autostart"
"${LV_NS[@]}" mount -t tmpfs -o mode=0755 oxbench-libvirt-run /run/libvirt
VIRSH=("${LV_NS[@]}" virsh -c qemu:///system)

say "starting virtlogd, virtlockd, libvirtd in $NS_LV (private mount namespace of pid $LV_HOLDER_PID)"
start_libvirt_daemons "$WORK" "${LV_NS[@]}"
[ -z "$("${VIRSH[@]}" net-list --name | grep -v '^$' || true)" ] || die "libvirt has an active network already"

say "starting oxvirtd in $NS_OX"
start_oxvirtd "$WORK/logs/oxvirtd.log" ip netns exec "$NS_OX" "$WORK/oxvirtd" --no-default-network \
    --socket "$OX_SOCKET" --state-dir "$OX_STATE" --log-level warn

# Each daemon must really live in its namespace: its network's bridge must be there and nowhere else.
in_namespace_of() { [ "$(readlink "/proc/$1/ns/net")" = "$(ip netns exec "$2" readlink /proc/self/ns/net)" ]; }
in_namespace_of "$OXVIRTD_PID" "$NS_OX" || die "oxvirtd is not in $NS_OX"
in_namespace_of "$(pid_from_file "$WORK/libvirtd.pid")" "$NS_LV" || die "libvirtd is not in $NS_LV"
in_namespace_of "$(pid_from_file "$WORK/virtlogd.pid")" "$NS_LV" || die "virtlogd is not in $NS_LV"
[ "$(readlink "/proc/$(pid_from_file "$WORK/libvirtd.pid")/ns/mnt")" = "$(readlink "/proc/$LV_HOLDER_PID/ns/mnt")" ] ||
    die "libvirtd is not in its private mount namespace"

say "defining and starting network $NETWORK in both"
"${OXVIRT[@]}" net-define "$REPO/benches/network/network.xml" > /dev/null
"${OXVIRT[@]}" net-start "$NETWORK" > /dev/null
"${VIRSH[@]}" net-define "$REPO/benches/network/network.xml" > /dev/null
"${VIRSH[@]}" net-start "$NETWORK" > /dev/null
for ns in "$NS_OX" "$NS_LV"; do
    ip netns exec "$ns" ip -4 -o addr show dev "$BRIDGE" | grep -q "inet $BRIDGE_IP/24" ||
        die "no $BRIDGE with $BRIDGE_IP in $ns"
done
HOST_LINKS_AFTER=$(ip -o link show | awk -F': ' '{ print $2 }' | sort)
NEW_HOST_LINKS=$(comm -13 <(echo "$HOST_LINKS_BEFORE") <(echo "$HOST_LINKS_AFTER") | tr '\n' ' ')
[ -z "$NEW_HOST_LINKS" ] || die "new interfaces in the machine's own namespace: $NEW_HOST_LINKS"

# The iperf3 server of test (a), in each namespace, on the bridge address.
for ns in "$NS_OX" "$NS_LV"; do
    ip netns exec "$ns" iperf3 -s -B "$BRIDGE_IP" > "$WORK/logs/iperf3-server-$ns.log" 2>&1 &
    IPERF_SERVER_PIDS+=($!)
done

# ---------------------------------------------------------------------------------------------------------
# One round: boot the server guest, then the client guest, which measures and powers off
# ---------------------------------------------------------------------------------------------------------
client() { # system (ox|lv), args...
    local system=$1
    shift
    if [ "$system" = ox ]; then "${OXVIRT[@]}" "$@"; else "${VIRSH[@]}" "$@"; fi
}

wait_for_line() { # file pattern timeout_seconds
    local deadline=$((${EPOCHREALTIME%.*} + $3))
    until grep -qas "$2" "$1"; do
        ((${EPOCHREALTIME%.*} < deadline)) || return 1
        sleep 0.2
    done
}

# The QEMU process of a running domain (to record the network part of its command line).
qemu_pid_of() { # system name
    if [ "$1" = ox ]; then
        local uuid
        uuid=$("${OXVIRT[@]}" domuuid "$2")
        pid_from_file "$OX_STATE/run/$uuid/qemu.pid"
    else
        pid_from_file "/proc/$LV_HOLDER_PID/root/run/libvirt/qemu/$2.pid"
    fi
}
network_args_of() { # pid: the -netdev and virtio-net -device arguments
    tr '\0' '\n' < "/proc/$1/cmdline" | awk 'prev == "-netdev" || (prev == "-device" && /virtio-net/) { print prev " " $0 } { prev = $0 }'
}

declare -A RESULT QEMU_NET GUEST_SAW FAILED
run_round() { # system queues round
    local system=$1 queues=$2 round=$3 tag="$1-q$2-r$3" server_log client_log timeout cmdline
    server_log=$WORK/logs/$tag-server.log
    client_log=$WORK/logs/$tag-client.log
    rm -f "$server_log" "$client_log"
    domain_xml "$SERVER_VM" "$queues" "$queues" "$SERVER_MAC" "$server_log" \
        "console=ttyS0 panic=-1 quiet oxbench.role=server" > "$WORK/server.xml"
    cmdline="console=ttyS0 panic=-1 quiet oxbench.role=client oxbench.targets=$BRIDGE_IP,$SERVER_IP"
    cmdline+=" oxbench.runs=1 oxbench.time=$DURATION oxbench.omit=$OMIT oxbench.streams=$queues"
    domain_xml "$CLIENT_VM" "$queues" "$queues" "$CLIENT_MAC" "$client_log" "$cmdline" > "$WORK/client.xml"
    client "$system" define "$WORK/server.xml" > /dev/null
    client "$system" define "$WORK/client.xml" > /dev/null

    # A system that cannot start the guest at all (e.g. a configuration it does not support) is reported
    # as such in the table, and the benchmark goes on with the other configurations.
    if ! client "$system" start "$SERVER_VM" > /dev/null 2> "$WORK/start-error"; then
        FAILED[$system.$queues]=$(tr '\n' ' ' < "$WORK/start-error" | sed 's/ *$//')
        say "  $tag: the server guest did not start: ${FAILED[$system.$queues]}"
        client "$system" undefine "$SERVER_VM" > /dev/null
        client "$system" undefine "$CLIENT_VM" > /dev/null
        return 0
    fi
    wait_for_line "$server_log" OXBENCH-SERVER-READY 300 ||
        die "$tag: the server guest did not get ready in 300 s (log: $(tail -5 "$server_log" 2> /dev/null))"
    client "$system" start "$CLIENT_VM" > /dev/null
    [ -n "${QEMU_NET[$system.$queues]:-}" ] || QEMU_NET[$system.$queues]=$(network_args_of "$(qemu_pid_of "$system" "$CLIENT_VM")")
    timeout=$((300 + 2 * (DURATION + OMIT + 30)))
    wait_for_line "$client_log" OXVIRT-LAB-EXIT "$timeout" ||
        die "$tag: the client guest did not finish in $timeout s (log: $(tail -5 "$client_log" 2> /dev/null))"
    GUEST_SAW[$system.$queues]=$(grep -a -o 'vcpus=[0-9]* queues=[0-9]*' "$client_log" | head -1)
    local target what mbps
    for target in "$BRIDGE_IP:bridge" "$SERVER_IP:guest"; do
        what=${target#*:}
        mbps=$(grep -a "OXBENCH-RESULT target=${target%%:*} " "$client_log" | sed 's/.*mbps=//' | tr -d '\r')
        [ -n "$mbps" ] || die "$tag: no result for the $what test (log: $(grep -a OXBENCH "$client_log" | tail -5))"
        RESULT[$system.$queues.$what]+=" $mbps"
        say "  $tag: guest -> $what ${mbps} Mbit/s"
    done

    client "$system" destroy "$SERVER_VM" > /dev/null
    client "$system" destroy "$CLIENT_VM" > /dev/null 2>&1 || true # normally already off
    for ((i = 0; i < 100; i++)); do
        client "$system" list --name | grep -q "^$PREFIX" || break
        sleep 0.1
    done
    client "$system" undefine "$SERVER_VM" > /dev/null
    client "$system" undefine "$CLIENT_VM" > /dev/null
}

# ---------------------------------------------------------------------------------------------------------
# Measure
# ---------------------------------------------------------------------------------------------------------
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
START_TIME=$(date -u '+%Y-%m-%d %H:%M UTC')
ORDER_LOG=()
for ((round = 1; round <= RUNS; round++)); do
    for queues in $QUEUES; do
        order=(ox lv)
        ((round % 2)) || order=(lv ox)
        for system in "${order[@]}"; do
            say "round $round/$RUNS, $queues queue(s), $system"
            run_round "$system" "$queues" "$round"
        done
        ORDER_LOG+=("round $round, $queues queue(s): ${order[*]}")
    done
done
LOAD_AT_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
name_of() { if [ "$1" = ox ]; then echo oxvirt; else echo libvirt; fi; }

TABLE="| test | queues (= vCPUs = streams) | oxvirt (Mbit/s) | libvirt (Mbit/s) | ratio oxvirt/libvirt |
|---|---|---|---|---|"
RAW=""
cell() { # system queues what: the median, or why there is none
    if [ -n "${FAILED[$1.$2]:-}" ]; then
        echo "guest does not start (below)"
    else
        # shellcheck disable=SC2086 # the run list is space separated on purpose
        median ${RESULT[$1.$2.$3]}
    fi
}
runs_of() { # system queues what
    local runs=${RESULT[$1.$2.$3]:-}
    runs=${runs# }
    if [ -n "${FAILED[$1.$2]:-}" ]; then echo "no run"; else echo "${runs// /, }"; fi
}
for what in bridge guest; do
    for queues in $QUEUES; do
        ox=$(cell ox "$queues" "$what")
        lv=$(cell lv "$queues" "$what")
        quotient="—"
        [[ ! $ox =~ ^[0-9.]+$ || ! $lv =~ ^[0-9.]+$ ]] || quotient=$(ratio "$ox" "$lv")
        label="guest → bridge address"
        [ "$what" = bridge ] || label="guest → guest"
        TABLE+=$'\n'"| $label | $queues | $ox | $lv | $quotient |"
        RAW+="- $label, $queues queue(s): oxvirt $(runs_of ox "$queues" "$what"); libvirt $(runs_of lv "$queues" "$what")"$'\n'
    done
done
# How far apart single runs are, against the gap between the systems: min-max per system, and in how many
# rounds (same round = same minutes of machine load) oxvirt was ahead.
SPREAD=""
for what in bridge guest; do
    for queues in $QUEUES; do
        [ -z "${FAILED[ox.$queues]:-}${FAILED[lv.$queues]:-}" ] || continue
        read -r -a ox_runs <<< "${RESULT[ox.$queues.$what]}"
        read -r -a lv_runs <<< "${RESULT[lv.$queues.$what]}"
        ahead=0
        for ((i = 0; i < ${#ox_runs[@]}; i++)); do
            awk -v a="${ox_runs[i]}" -v b="${lv_runs[i]}" 'BEGIN { exit !(a > b) }' && ahead=$((ahead + 1))
        done
        label="guest → bridge address"
        [ "$what" = bridge ] || label="guest → guest"
        SPREAD+="- $label, $queues queue(s): oxvirt $(printf '%s\n' "${ox_runs[@]}" | sort -g | sed -n '1p;$p' | paste -sd-)"
        SPREAD+=", libvirt $(printf '%s\n' "${lv_runs[@]}" | sort -g | sed -n '1p;$p' | paste -sd-) Mbit/s;"
        SPREAD+=" oxvirt ahead in $ahead of ${#ox_runs[@]} rounds"$'\n'
    done
done

FAILURES=""
for queues in $QUEUES; do
    for system in ox lv; do
        [ -z "${FAILED[$system.$queues]:-}" ] ||
            FAILURES+="- **$(name_of $system), $queues queue(s): the guest does not start.** \`start\` said: \`${FAILED[$system.$queues]}\`"$'\n'
    done
done
# The known cause of oxvirt's multiqueue failure (crates/net creates the TAP device without
# IFF_MULTI_QUEUE, and QEMU cannot open a single-queue TAP N times); said only while it happens.
if grep -q 'queues":[2-9].*could not configure /dev/net/tun' <<< "${FAILED[*]}"; then
    FAILURES+=$(cat << 'TEXT'
  Why: the network layer of oxvirtd (`crates/net/src/tap.rs`) creates the persistent TAP device with
  `IFF_TAP|IFF_NO_PI|IFF_VNET_HDR` only; QEMU, told `queues=N` with `ifname=`, opens that TAP N times
  with `IFF_MULTI_QUEUE`, which the kernel refuses (EINVAL) for a TAP created without the flag. libvirt
  creates the TAP with `IFF_MULTI_QUEUE` and hands QEMU N file descriptors (`fds=` below). So oxvirt's
  `<driver queues='N'/>` with N > 1 cannot start any guest today; the fix belongs in crates/net (create the
  TAP with `IFF_MULTI_QUEUE` when the interface has more than one queue).
TEXT
    )$'\n'
fi

GUEST_VIEW=""
QEMU_VIEW=""
for queues in $QUEUES; do
    for system in ox lv; do
        if [ -n "${FAILED[$system.$queues]:-}" ]; then
            GUEST_VIEW+="- $(name_of $system), $queues queue(s): no guest started"$'\n'
            QEMU_VIEW+="- $(name_of $system), $queues queue(s): QEMU did not start"$'\n'
            continue
        fi
        GUEST_VIEW+="- $(name_of $system), $queues queue(s): the client guest saw ${GUEST_SAW[$system.$queues]:-?} (online CPUs, RX queues of eth0)"$'\n'
        QEMU_VIEW+="- $(name_of $system), $queues queue(s):"$'\n'
        while IFS= read -r line; do
            QEMU_VIEW+="  \`$line\`"$'\n'
        done <<< "${QEMU_NET[$system.$queues]:-}"
    done
done

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2> /dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain 2> /dev/null | head -1)" ]; then COMMIT+=" plus uncommitted changes"; fi
OX_VERSION=$("${OXVIRT[@]}" version 2> /dev/null | grep -v '^$' | tr '\n' ';' | sed 's/;$//; s/;/; /g')
LV_VERSION=$("${VIRSH[@]}" version 2> /dev/null | grep -v '^$' | tr '\n' ';' | sed 's/;$//; s/;/; /g')
QEMU_VERSION=$(qemu-system-x86_64 --version | head -1)
IPERF_VERSION=$(iperf3 --version | head -1)
BUSY=$(awk -v a="${LOAD_AT_START%% *}" -v b="${LOAD_AT_END%% *}" 'BEGIN { print (a >= 1.5 || b >= 1.5) }')
LOAD_NOTE=""
[ "$BUSY" = 0 ] || LOAD_NOTE=" The machine was busy with other work during the run (1-minute load of 1.5 or more on $(nproc) cores): absolute numbers are lower and noisier than on an idle machine; the ratios are the figures to compare, and even they carry this noise."

echo
echo "$TABLE"
echo
printf '%s' "$RAW"
[ -z "$FAILURES" ] || printf '\n%s' "$FAILURES"
echo
printf '%s' "$GUEST_VIEW"
echo
printf '%s' "$QEMU_VIEW"
echo
echo "load average at start: $LOAD_AT_START; at end: $LOAD_AT_END"

[ "$WRITE_DOC" = 1 ] || exit 0

SECTION=$WORK/section.md
cat > "$SECTION" << EOF
## Networking: iperf3

\`bash benches/network.sh\` (RUNS=$RUNS, DURATION=$DURATION, QUEUES="$QUEUES"), $START_TIME. Release build of
oxvirt (commit $COMMIT), its QEMU engine; Debian's libvirt with its default configuration. The guests run
under TCG (this machine has no hardware KVM), so absolute throughput is low: the ratios are what this
measures. Each figure is the median over $RUNS rounds of iperf3's receiver total (TCP, ${DURATION} s measured
after ${OMIT} s omitted for slow start); in every round each system boots its two guests afresh, and which
system goes first flips every round.

$TABLE

Every run (Mbit/s, in round order):

$RAW${FAILURES:+
$FAILURES}
**Reading the numbers**: both systems run the same QEMU binary with the same data path: QEMU's userspace
virtio-net (no vhost) on a TAP device in a Linux bridge, the same CPU model (qemu64, libvirt's default and
oxvirt's), machine type (i440fx 7.2), memory and vCPU count, in the same cgroups. Their command lines differ
outside the data path (libvirt starts QEMU paused with \`-S\` and resumes it over QMP, adds \`-sandbox\` and a
memory-backend object and runs QEMU as libvirt-qemu; oxvirt adds a pvpanic device) and in how the TAP reaches
QEMU (libvirt passes open file descriptors, oxvirt the TAP's name: below). With one queue, then, a
difference between the systems would point at the host side (bridge, firewall rules, TAP set-up), not at
QEMU. Single runs, lowest-highest, and same-round comparisons:

$SPREAD
On a shared, loaded machine one system's own runs can differ by more than the gap between the two medians;
then the table shows no difference between the systems, only the noise.

**What runs**: one network definition ([benches/network/network.xml](../benches/network/network.xml): NAT,
bridge \`$BRIDGE\` $BRIDGE_IP/24, dnsmasq DHCP with the two guests' addresses reserved by MAC) and one
domain definition ([benches/network/domain.xml](../benches/network/domain.xml): \`<domain type='qemu'>\`,
256 MiB, N vCPUs, virtio NIC \`<interface type='network'>\` with \`<driver queues='N'/>\`), identical for
both systems. N queues go with N vCPUs (the guest's virtio-net driver enables min(queues, online CPUs)
queue pairs) and \`iperf3 -P N\` (N parallel TCP streams, so that several queues carry traffic). The guest is
the test guest kit (kernel $GUEST_KERNEL, busybox) with an extra cpio appended to its initramfs: iperf3
($IPERF_VERSION) with its shared libraries and [benches/network/guest/run.sh](../benches/network/guest/run.sh),
which takes a DHCP lease with busybox \`udhcpc\` and plays the role named on the kernel command line.
- (a) guest → bridge address: \`iperf3 -c $BRIDGE_IP -t $DURATION -O $OMIT -P N -f m\` in the client guest,
  against \`iperf3 -s -B $BRIDGE_IP\` run by the script in the network's namespace.
- (b) guest → guest: \`iperf3 -c $SERVER_IP -t $DURATION -O $OMIT -P N -f m\` in the client guest, against
  \`iperf3 -s -B $SERVER_IP\` in a second guest on the same network.

What the client guest saw (from its console):

$GUEST_VIEW
QEMU's network arguments as each system started the client guest (from \`/proc/PID/cmdline\`):

$QEMU_VIEW
Neither system uses vhost-net: this machine has no \`/dev/vhost-net\` (libvirt tries it and falls back to
QEMU's userspace virtio-net; oxvirt asks for it only with \`<driver name='vhost'/>\`).

**Commands** (\`\$SOCK\` is the private oxvirtd's socket; both tools run in the machine's namespace and
reach their daemon over its Unix socket):
- oxvirt: \`oxvirt --socket \$SOCK net-define network.xml; oxvirt --socket \$SOCK net-start $NETWORK\`, then per
  round \`oxvirt --socket \$SOCK define server.xml / define client.xml / start $SERVER_VM\` (wait for its
  \`OXBENCH-SERVER-READY\`) \`/ start $CLIENT_VM\` (wait for \`OXVIRT-LAB-EXIT\`) \`/ destroy / undefine\`.
- libvirt: the same with \`virsh -c qemu:///system\` (\`net-define\`, \`net-start\`, \`define\`, \`start\`,
  \`destroy\`, \`undefine\`).

**Isolation** (the network rule): the script creates two namespaces, \`oxbench-<random>-ox\` and
\`oxbench-<random>-lv\`. \`ip netns exec NS oxvirtd --no-default-network --socket \$SOCK --state-dir \$DIR\`
runs in the first; \`virtlogd -d\`, \`virtlockd -d\` and \`libvirtd -d\` (no systemd here) run in the second,
entered with \`nsenter --target HOLDER --mount --net\` where HOLDER is \`ip netns exec NS unshare --mount
--propagation private sleep infinity\`. So each system's bridge, dnsmasq, firewall rules, TAPs and QEMU
processes live in its own namespace. The script checks that each daemon's network namespace is the one it
made, that \`$BRIDGE\` with $BRIDGE_IP is in each namespace, and that no interface appeared in the machine's
own namespace. libvirt's mount namespace has a tmpfs on /run/libvirt and empty directories of the run
bind-mounted over /etc/libvirt/qemu, /var/lib/libvirt/qemu, /var/lib/libvirt/dnsmasq and
/var/log/libvirt/qemu: this libvirtd sees no definition of the machine's (so not the autostarted \`default\`
network either: nothing to disable), leaves no file behind, and cannot be disturbed by another libvirtd that
other work starts on this machine meanwhile (a first attempt of this run failed exactly so: another
benchmark's libvirtd took over /run/libvirt/libvirt-sock). virsh runs inside that mount namespace too.
/dev/kvm is made root:kvm 0660 for the run when it is root-only (as in the first-VM benchmark). Everything
(guests, networks, daemons, namespaces) is removed at exit, also on failure.

**Machine**: $(nproc) cores ($CPU_MODEL), kernel $(uname -r); load average (1/5/15 min) $LOAD_AT_START at the
start and $LOAD_AT_END at the end.$LOAD_NOTE

**Versions**: oxvirt: $OX_VERSION. libvirt: $LV_VERSION. $QEMU_VERSION.

**The native engine** (\`oxvirt-vmm\`, chosen with \`<oxvirt:engine name='native'/>\` in a \`<domain type='kvm'>\`,
see docs/native-vmm.md) is not measured: it needs hardware KVM, and this machine's \`/dev/kvm\` is
\`kvm_pvm\` (no vmx/svm flag; oxvirtd refuses to start a native domain here, by design). It runs only in the
nested lab (real KVM inside a TCG guest), where every packet would also cross the emulated L1 and the
numbers would not compare with the ones above. It also has one queue pair per NIC (\`<driver queues>\`
above 1 and vhost are refused at define time).
EOF

DOC=$REPO/docs/benchmarks.md
[ -f "$DOC" ] || printf '# Benchmarks\n\nEach section is written by the script it names; re-run the script to refresh it.\n' > "$DOC"
TITLE="## Networking: iperf3"
awk -v title="$TITLE" -v section="$SECTION" '
    function put_section(  line) { while ((getline line < section) > 0) print line; close(section) }
    $0 == title { put_section(); skipping = 1; done = 1; next }
    skipping && /^## / { skipping = 0; print "" }
    !skipping { print; last = $0 }
    END { if (!done) { if (last != "") print ""; put_section() } }
' "$DOC" > "$WORK/benchmarks.md"
cp "$WORK/benchmarks.md" "$DOC"
say "wrote \"$TITLE\" in docs/benchmarks.md"
