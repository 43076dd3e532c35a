#!/usr/bin/env bash
# API under load: how long `GET /v1/version` takes on an idle oxvirtd and while CLIENTS threads keep posting
# maximal XML bodies (benches/api-under-load/load.py says which). With BASELINE=REV (a git revision), the same
# is measured for oxvirtd built from REV, side by side. Writes the section "## API under load" of
# docs/benchmarks.md.
#
#   bash benches/api-under-load.sh                      # this tree only
#   BASELINE=e567214 bash benches/api-under-load.sh     # and the daemon before the hardening, for comparison
#   SECONDS_LOADED=10 WRITE_DOC=0 bash ...              # quick run, doc left alone
#
# Each daemon runs from a private temporary directory (socket, state, --no-default-network) and is stopped at
# the end; nothing else on the machine is touched.
set -euo pipefail
export LC_ALL=C

CLIENTS=${CLIENTS:-4}
SECONDS_LOADED=${SECONDS_LOADED:-20}
WRITE_DOC=${WRITE_DOC:-1}
BASELINE=${BASELINE:-}
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

say() { printf '[api-under-load] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
source benches/lib.sh

WORK=$(mktemp -d /tmp/api-under-load.XXXXXX)
DAEMON_PID=
cleanup() {
    stop_pid "$DAEMON_PID"
    if [ -n "$BASELINE" ] && [ -d "$WORK/baseline" ]; then git worktree remove --force "$WORK/baseline" > /dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

say "building oxvirtd (release)"
cargo build --release -q -p oxvirt-daemon
cp target/release/oxvirtd "$WORK/oxvirtd-current"
DAEMONS=(current)
if [ -n "$BASELINE" ]; then
    say "building oxvirtd at $BASELINE (release)"
    git worktree add -q --detach "$WORK/baseline" "$BASELINE"
    (cd "$WORK/baseline" && CARGO_TARGET_DIR=$REPO/target/baseline cargo build --release -q -p oxvirt-daemon)
    cp target/baseline/release/oxvirtd "$WORK/oxvirtd-baseline"
    DAEMONS+=(baseline)
fi

# run_one NAME KIND: one daemon, one body kind; prints load.py's JSON (or a JSON note if the daemon died).
run_one() {
    local name=$1 kind=$2 dir=$WORK/$1-$2 i
    mkdir -p "$dir"
    "$WORK/oxvirtd-$name" --socket "$dir/sock" --state-dir "$dir/state" --no-default-network \
        --log-level warn 2> "$dir/daemon.log" &
    DAEMON_PID=$!
    for ((i = 0; i < 100; i++)); do [ -S "$dir/sock" ] && break; sleep 0.1; done
    [ -S "$dir/sock" ] || die "oxvirtd ($name) did not create its socket: $(tail -3 "$dir/daemon.log")"
    python3 benches/api-under-load/load.py "$dir/sock" --kind "$kind" --clients "$CLIENTS" \
        --seconds "$SECONDS_LOADED" > "$dir/result.json" || true
    if ! pid_alive "$DAEMON_PID"; then
        printf '{"kind": "%s", "died": %s}\n' "$kind" "$(tail -1 "$dir/daemon.log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')"
    else
        cat "$dir/result.json"
    fi
    stop_pid "$DAEMON_PID"
    DAEMON_PID=
}

RESULTS=$WORK/results.jsonl
: > "$RESULTS"
for name in "${DAEMONS[@]}"; do
    for kind in wide legal; do
        say "$name: version latency, idle and under $CLIENTS clients posting '$kind' bodies for ${SECONDS_LOADED}s"
        printf '{"daemon": "%s", "result": %s}\n' "$name" "$(run_one "$name" "$kind")" >> "$RESULTS"
    done
done

SECTION=$WORK/section.md
python3 - "$RESULTS" "$CLIENTS" "$SECONDS_LOADED" "${BASELINE:-}" > "$SECTION" <<'PY'
import json, platform, subprocess, sys, time
rows = [json.loads(line) for line in open(sys.argv[1])]
clients, seconds, baseline = sys.argv[2], sys.argv[3], sys.argv[4]
def fmt(v):
    return "-" if v is None else f"{v:.1f}"
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print("## API under load")
print()
print(f"`bash benches/api-under-load.sh`{' with BASELINE=' + baseline if baseline else ''}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
      f"oxvirtd release build of {commit}{' against ' + baseline if baseline else ''}; {cpu}, {__import__('os').cpu_count()} CPUs, load average at the end "
      f"{open('/proc/loadavg').read().split()[0]}.")
print()
print(f"`GET /v1/version` every 50 ms, idle (5 s) and while {clients} client threads post XML bodies back to back to "
      f"`/v1/domains`, `/v1/networks` and `/v1/pools` ({seconds} s). `wide`: one element with 60,000 attributes "
      "(about 1 MiB; over the 64-attribute limit). `legal`: 4 MiB of elements with 60 attributes each, under every "
      "limit, so all of it is parsed before the first unknown attribute is refused. A probe that gets no answer "
      "within 10 s counts as 10 s. Body status 0: the connection ended without an HTTP reply.")
print()
print("| daemon | bodies | version idle p50 / p99 (ms) | version loaded p50 / p99 / max (ms) | loaded / idle p99 | bodies answered (status: count) | body p50 (ms) |")
print("|---|---|---|---|---|---|---|")
for row in rows:
    r = row["result"]
    if "died" in r:
        print(f"| {row['daemon']} | {r['kind']} | - | daemon died: {r['died']} | - | - | - |")
        continue
    idle, loaded = r["idle"], r["loaded"]
    ratio = loaded["p99_ms"] / idle["p99_ms"] if idle["p99_ms"] and loaded["p99_ms"] else None
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r["body_statuses"].items()))
    print(f"| {row['daemon']} | {r['kind']} | {fmt(idle['p50_ms'])} / {fmt(idle['p99_ms'])} | "
          f"{fmt(loaded['p50_ms'])} / {fmt(loaded['p99_ms'])} / {fmt(loaded['max_ms'])} | "
          f"{fmt(ratio)} | {r['bodies_answered']} ({statuses}) | {fmt(r['body_p50_ms'])} |")
print()
PY
cat "$SECTION"
if [ "$WRITE_DOC" = 1 ]; then write_doc_section "## API under load" "$SECTION"; fi
