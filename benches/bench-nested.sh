#!/usr/bin/env bash
# A thin wrapper around `oxvirt bench --targets nested` (docs/bench.md): the same workloads in an L2 guest under
# KVM inside an L1 guest of oxvirtd's qemu engine, run against a private oxvirtd (release build) in a temporary
# directory. The method, the L1 script and the kit are the product's (crates/cli/src/bench/nested.rs,
# scripts/nested/bench-l1.sh, scripts/bench-kit.sh --nested).
#
#   bash benches/bench-nested.sh                          # PROFILE=short; writes target/bench-nested.json
#   PROFILE=full TARGETS=host,qemu,nested OUT=all.json bash benches/bench-nested.sh
#   SKIP_BUILD=1 ...                                      # use oxvirtd, oxvirt and oxvirt-vmm in $RELEASE as they are
#
# Everything runs in a temporary directory, removed at exit; oxvirtd is stopped on exit.
set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

say() { printf '[bench-nested] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
. benches/lib.sh

PROFILE=${PROFILE:-short}
TARGETS=${TARGETS:-nested}
OUT=${OUT:-target/bench-nested.json}

build_oxvirt
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -q -p oxvirt-vmm
fi
say "preparing the bench kit (with the nested target's L1)"
OXVIRT_VMM=$RELEASE/oxvirt-vmm bash scripts/bench-kit.sh --nested

make_work_dir /tmp/bench-nested.XXXXXX
OXVIRTD_PID=
cleanup() {
    stop_pid "$OXVIRTD_PID"
    stop_oxvirt_guests "$OX_STATE"
    rm -rf "$WORK"
}
trap cleanup EXIT
say "starting oxvirtd"
start_oxvirtd "$WORK/oxvirtd.log" "$WORK/oxvirtd" --socket "$OX_SOCKET" --state-dir "$OX_STATE" --no-default-network --log-level warn
"${OXVIRT[@]}" bench --profile "$PROFILE" --targets "$TARGETS" --kit target/bench-kit --dir "$WORK" --json "$OUT"
say "report written to $OUT"
