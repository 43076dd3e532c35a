#!/usr/bin/env bash
# `oxvirt bench`'s nested target (docs/bench.md): the same workloads in an L2 guest under KVM inside an L1 guest.
# It reuses the native VMM's nested lab (benches/lib.sh): L1 = QEMU TCG -cpu max with kvm-amd loaded and
# oxvirt-vmm inside; L2 = an oxvirt-vmm microVM booted from the bench kit (scripts/bench-kit.sh), whose disk is
# L1's virtio disk, a file of the host's (raw, cache=none, aio=native), as the qemu target's disk is.
# The workloads' command lines come from `oxvirt bench --print-commands`, their figures are read by
# `oxvirt bench import-console`: the product's own definitions and parsers.
#
#   bash benches/bench-nested.sh                         # PROFILE=short; writes target/bench-nested.json
#   PROFILE=full BASE=run.json OUT=all.json bash benches/bench-nested.sh
#       BASE: a report of `oxvirt bench --json` (same profile) to add the "nested" column to
#   OXVIRT=path/to/oxvirt ...                            # default: the release build, built if missing
#   SKIP_BUILD=1 ...                                     # use oxvirt-vmm in $RELEASE as it is
#
# Everything runs in a temporary directory, removed at exit; L1's QEMU is killed on exit.
set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

say() { printf '[bench-nested] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
. benches/lib.sh

PROFILE=${PROFILE:-short}
OUT=${OUT:-target/bench-nested.json}
case $PROFILE in
    short) DISK_MIB=64 ;;
    full) DISK_MIB=1024 ;;
    *) die "unknown profile '$PROFILE' (known: short, full)" ;;
esac
[ -z "${BASE:-}" ] || [ -f "$BASE" ] || die "BASE=$BASE does not exist"

lab_begin bench-nested
build_lab "$BENCH_TARGET"
if [ -z "${OXVIRT:-}" ]; then
    OXVIRT=$RELEASE/oxvirt
    [ -x "$OXVIRT" ] || cargo build --release -q -p oxvirt-cli
fi
say "preparing the bench kit"
bash scripts/bench-kit.sh

root=$WORK/l1-root
lab_root "$root" benches/bench-nested/l1.sh
cp target/bench-kit/initramfs.img "$root/lab/l2/initramfs.img"
"$OXVIRT" bench --profile "$PROFILE" --print-commands /dev/vda > "$root/lab/workloads"
# Non-zero data: reads of holes would cost nothing.
{ yes oxvirt-bench || true; } | head -c "${DISK_MIB}M" > "$WORK/data.raw"
L1_EXTRA=(-drive "if=virtio,format=raw,file=$WORK/data.raw,cache=none,aio=native")
run_l1 "$root" "$WORK" 1 "$BENCH_TARGET/l1-bench-console.log"

sed -n '/^L2-CONSOLE-BEGIN$/,/^L2-CONSOLE-END$/p' "$BENCH_TARGET/l1-bench-console.log" > "$WORK/l2-console.log"
merge=()
[ -z "${BASE:-}" ] || merge=(--merge "$BASE")
"$OXVIRT" bench import-console "$WORK/l2-console.log" --target nested --profile "$PROFILE" "${merge[@]}" --json "$OUT"
say "report written to $OUT"
