#!/usr/bin/env bash
# Define scaling: how long one `define` takes with no domain stored and with COUNT (2,000) stored.
# A define checks the new definition's MAC addresses against every stored and running domain; this
# shows whether that check (or anything else in a define) grows with the number of domains.
#
#   bash benches/define-scaling.sh                      # release build, COUNT=2000, PROBES=9
#   SKIP_BUILD=1 bash benches/define-scaling.sh         # use target/release/oxvirtd as it is
#   OXVIRTD=/path/to/oxvirtd bash benches/define-scaling.sh   # another build (e.g. an older commit's)
#
# What it does: starts oxvirtd (release) on a fresh state directory in /tmp, with its own socket, no default
# network and no periodic backups. Every request is one HTTP POST /v1/domains over the Unix socket with curl
# (the daemon's own time plus one connection; no CLI process in the measurement); the reported time is
# curl's time_total. A probe is: define a domain `probe-N` (one <interface> with a MAC, like the stored ones),
# then undefine it; the median of PROBES probes is reported, at 0 stored domains and again after COUNT
# domains `scale-N` were defined. Nothing starts a guest: no kernel or disk is needed. On exit the daemon is
# stopped and its directory deleted.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

COUNT=${COUNT:-2000}
PROBES=${PROBES:-9}
say() { echo "define-scaling: $*" >&2; }
die() {
    say "$*"
    exit 1
}

command -v curl > /dev/null || die "needs curl"
if [ -n "${OXVIRTD:-}" ]; then
    binary=$OXVIRTD
elif [ "${SKIP_BUILD:-0}" = 1 ]; then
    binary=target/release/oxvirtd
else
    say "building oxvirtd (release)"
    cargo build --release -q -p oxvirt-daemon
    binary=target/release/oxvirtd
fi
[ -x "$binary" ] || die "$binary is missing"

work=$(mktemp -d /tmp/oxvirt-define-scaling.XXXXXX)
socket=$work/oxvirtd.sock
daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2> /dev/null; then
        kill "$daemon_pid" 2> /dev/null || true
        wait "$daemon_pid" 2> /dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# No periodic backup in the middle of the measurement (builds from before backups lack the flag).
extra=()
if "$binary" --help | grep -q -- --backup-interval; then extra=(--backup-interval 0); fi
"$binary" --socket "$socket" --state-dir "$work/state" --no-default-network "${extra[@]}" \
    --log-level warn 2> "$work/oxvirtd.log" &
daemon_pid=$!
for _ in $(seq 300); do
    curl -sf --unix-socket "$socket" http://oxvirtd/v1/version > /dev/null 2>&1 && break
    kill -0 "$daemon_pid" 2> /dev/null || die "oxvirtd exited: $(cat "$work/oxvirtd.log")"
    sleep 0.1
done
curl -sf --unix-socket "$socket" http://oxvirtd/v1/version > /dev/null || die "oxvirtd does not answer"

# body NAME INDEX: the JSON request of a definition with one interface whose MAC is derived from INDEX.
body() {
    local mac
    mac=$(printf '52:54:00:%02x:%02x:%02x' $(($2 >> 16 & 255)) $(($2 >> 8 & 255)) $(($2 & 255)))
    printf '{"xml":"<domain type='"'"'qemu'"'"'><name>%s</name><memory unit='"'"'MiB'"'"'>64</memory><vcpu>1</vcpu><os><type arch='"'"'x86_64'"'"' machine='"'"'pc'"'"'>hvm</type><kernel>/nonexistent/vmlinuz</kernel></os><devices><interface type='"'"'user'"'"'><mac address='"'"'%s'"'"'/><model type='"'"'virtio'"'"'/></interface><serial type='"'"'pty'"'"'/></devices></domain>"}' "$1" "$mac"
}

# define NAME INDEX: prints curl's time_total (seconds); fails unless the daemon answered 200.
define() {
    local out
    out=$(body "$1" "$2" | curl -s -o "$work/reply" -w '%{http_code} %{time_total}' --unix-socket "$socket" \
        -X POST -H 'Content-Type: application/json' --data-binary @- http://oxvirtd/v1/domains)
    [ "${out% *}" = 200 ] || die "define $1: HTTP ${out% *}: $(cat "$work/reply")"
    echo "${out#* }"
}

undefine() {
    curl -sf -o /dev/null --unix-socket "$socket" -X DELETE "http://oxvirtd/v1/domains/$1" || die "undefine $1"
}

# probe: the median time (ms) of PROBES defines of a fresh domain, each undefined again.
probe() {
    local i times=()
    for ((i = 0; i < PROBES; i++)); do
        times+=("$(define "probe-$i" $((0xf00000 + i)))")
        undefine "probe-$i"
    done
    printf '%s\n' "${times[@]}" | sort -g | awk '{ t[NR] = $1 } END { printf "%.1f\n", t[int((NR + 1) / 2)] * 1000 }'
}

say "oxvirtd: $binary ($("$binary" --version)); machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
at_zero=$(probe)
say "define with 0 stored domains: ${at_zero} ms (median of $PROBES)"
start=$(date +%s.%N)
for ((n = 1; n <= COUNT; n++)); do
    define "scale-$n" "$n" > /dev/null
    if ((n % 500 == 0)); then say "$n defined"; fi
done
bulk=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
at_count=$(probe)
say "define with $COUNT stored domains: ${at_count} ms (median of $PROBES)"

cat << EOF
| stored domains | one define (ms, median of $PROBES) |
|---|---|
| 0 | $at_zero |
| $COUNT | $at_count |

Defining the $COUNT domains took $bulk s in all (one curl process per request).
Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg).
EOF
