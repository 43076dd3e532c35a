#!/usr/bin/env bash
# The remote API under load (issue 17): oxvirtd with 100 defined guests serves `GET /v1/domains` and
# `GET /metrics` over TLS on loopback to 200 concurrent keep-alive clients (two wrk runs side by side, 100
# connections each, a read-only token) for SECONDS_LOADED seconds. Reports requests per second, p50/p90/p99
# latency and errors (socket errors and non-2xx answers, which must be 0) per route, and writes the section
# "## Remote API under load (TLS)" of docs/benchmarks.md.
#
#   bash benches/remote-load.sh                        # 100 guests, 200 clients, 30 s
#   SECONDS_LOADED=5 WRITE_DOC=0 bash benches/remote-load.sh   # quick run, doc left alone
#
# libvirt has no HTTP API to put beside it (its remote protocol is XDR over TLS, driven by its own client
# library), so this measures oxvirtd alone; the ratio reported is the loaded latency over an idle request's.
# Everything runs from a private temporary directory (socket, state, certificate) on 127.0.0.1 and is
# stopped at the end; the guests are defined, never started.
set -euo pipefail
export LC_ALL=C

GUESTS=${GUESTS:-100}
CLIENTS=${CLIENTS:-200}
SECONDS_LOADED=${SECONDS_LOADED:-30}
WRITE_DOC=${WRITE_DOC:-1}
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

say() { printf '[remote-load] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
source benches/lib.sh

install_missing wrk curl
build_oxvirt
make_work_dir /tmp/remote-load.XXXXXX
OXVIRTD_PID=
cleanup() {
    stop_pid "$OXVIRTD_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=https://127.0.0.1:$PORT
say "oxvirtd on $URL"
start_oxvirtd "$WORK/oxvirtd.log" "$WORK/oxvirtd" --socket "$OX_SOCKET" --state-dir "$OX_STATE" \
    --no-default-network --log-level warn --listen "127.0.0.1:$PORT"

say "defining $GUESTS guests"
for ((i = 0; i < GUESTS; i++)); do
    cat > "$WORK/guest.xml" <<XML
<domain type='qemu'>
  <name>load-$i</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
</domain>
XML
    "${OXVIRT[@]}" define "$WORK/guest.xml" > /dev/null
done
TOKEN=$("${OXVIRT[@]}" token create --role read-only --name remote-load | grep -o 'oxv_[A-Za-z0-9_-]*' | head -1)
[ -n "$TOKEN" ] || die "oxvirt token create printed no token"

# Checked once before the load: the route answers with every guest over TLS with the token.
listed=$(curl -sk -H "Authorization: Bearer $TOKEN" "$URL/v1/domains" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
[ "$listed" = "$GUESTS" ] || die "GET /v1/domains listed $listed domains, not $GUESTS"

# idle_ms ROUTE: the median of 20 sequential requests on an idle daemon (one connection each, as curl makes).
idle_ms() {
    local i
    for ((i = 0; i < 20; i++)); do
        curl -sk -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $TOKEN" "$URL$1"
    done | sort -n | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] * 1000 }'
}
IDLE_DOMAINS=$(idle_ms /v1/domains)
IDLE_METRICS=$(idle_ms /metrics)

HALF=$((CLIENTS / 2))
say "$CLIENTS clients ($HALF on each route) for ${SECONDS_LOADED}s"
wrk -t2 -c"$HALF" -d"${SECONDS_LOADED}s" --timeout 10s --latency -H "Authorization: Bearer $TOKEN" \
    "$URL/v1/domains" > "$WORK/domains.txt" 2>&1 &
W1=$!
wrk -t2 -c"$HALF" -d"${SECONDS_LOADED}s" --timeout 10s --latency -H "Authorization: Bearer $TOKEN" \
    "$URL/metrics" > "$WORK/metrics.txt" 2>&1 &
W2=$!
wait "$W1" "$W2"
pid_alive "$OXVIRTD_PID" || die "oxvirtd died under load: $(tail -3 "$WORK/oxvirtd.log")"
curl -skf -o /dev/null -H "Authorization: Bearer $TOKEN" "$URL/v1/version" || die "oxvirtd stopped answering after the load"

SECTION=$WORK/section.md
python3 - "$WORK" "$GUESTS" "$CLIENTS" "$SECONDS_LOADED" "$IDLE_DOMAINS" "$IDLE_METRICS" "$("$WORK/oxvirtd" --version 2>&1 | head -1)" "$(wrk -v 2>&1 | head -1)" > "$SECTION" <<'PY'
import os, re, subprocess, sys, time
work, guests, clients, seconds, idle_domains, idle_metrics, oxvirtd_version, wrk_version = sys.argv[1:9]

def ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

def parse(path):
    out = open(path).read()
    latency = {p: ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0, sum(map(int, socket.groups())) if socket else 0)
    return latency, requests, rps, errors, out

commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print("## Remote API under load (TLS)")
print()
print(f"`bash benches/remote-load.sh`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, oxvirtd release build of "
      f"{commit} ({oxvirtd_version}); {wrk_version.split(' [')[0]}; {cpu}, {os.cpu_count()} CPUs, load average at the end "
      f"{open('/proc/loadavg').read().split()[0]}.")
print()
print(f"{guests} guests defined (not running); {clients} concurrent keep-alive TLS clients on loopback, half on each route "
      f"(`wrk -t2 -c{int(clients) // 2} -d{seconds}s --latency -H 'Authorization: Bearer <read-only token>'`, both at "
      f"once), {seconds} s. Idle: the median of 20 sequential `curl` requests before the load (a new TLS connection "
      "each, so it includes the handshake the loaded clients made only once). Errors: socket errors and answers "
      "other than 2xx.")
print()
print("| route | idle (ms) | requests | req/s | p50 (ms) | p90 (ms) | p99 (ms) | errors (non-2xx, socket) |")
print("|---|---|---|---|---|---|---|---|")
failed = False
for route, name, idle in (("/v1/domains", "domains", idle_domains), ("/metrics", "metrics", idle_metrics)):
    latency, requests, rps, errors, _ = parse(os.path.join(work, name + ".txt"))
    failed |= sum(errors) > 0
    print(f"| `GET {route}` | {idle} | {requests} | {rps:.0f} | {latency['50']:.1f} | {latency['90']:.1f} | "
          f"{latency['99']:.1f} | {errors[0]}, {errors[1]} |")
print()
if failed:
    sys.exit("errors under load: see the table")
PY
cat "$SECTION"
if [ "$WRITE_DOC" = 1 ]; then write_doc_section "## Remote API under load (TLS)" "$SECTION"; fi
