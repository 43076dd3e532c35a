#!/usr/bin/env bash
# Benchmarks `oxvirt img` against qemu-img and writes the ratios to docs/benchmarks.md
# (section "Images"). Ratio = our time / qemu-img's time (below 1: we are faster).
#
#   bash benches/images.sh              # full run: convert 4 GiB (50% random data), create 8 GiB full
#   SIZE=1G PREALLOC_SIZE=1G bash benches/images.sh   # quick run while developing
#   REPEAT=N: runs per tool and operation (default 3; the best time counts)
#
# Needs qemu-img, and about 3 x SIZE + PREALLOC_SIZE of free space under $TMPDIR.
set -euo pipefail

SIZE=${SIZE:-4G}
PREALLOC_SIZE=${PREALLOC_SIZE:-8G}
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

cargo build --release -q -p oxvirt-images --bin oxvirt-img
OURS="$REPO/target/release/oxvirt-img"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

bytes() { qemu-img info --output json "$1" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p'; }

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# Source: a sparse raw image whose first half of every 128 MiB holds random data (50% data).
echo "preparing a $SIZE source image (50% random data)..." >&2
qemu-img create -q -f raw "$WORK/src.raw" "$SIZE"
TOTAL=$(bytes "$WORK/src.raw")
head -c $((64 << 20)) /dev/urandom > "$WORK/random.bin"
for ((off = 0; off < TOTAL; off += 128 << 20)); do
    dd if="$WORK/random.bin" of="$WORK/src.raw" bs=1M seek=$((off >> 20)) conv=notrunc status=none
done
rm "$WORK/random.bin"
cat "$WORK/src.raw" > /dev/null # warm the page cache for both tools alike

# seconds TOOL ARGS...: wall time of one run, after syncing pending writes.
seconds() {
    sync
    local start end
    start=$(date +%s.%N)
    "$@" > /dev/null
    sync
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}

results=()
REPEAT=${REPEAT:-3}
best() { # the smallest of the arguments
    printf '%s\n' "$@" | sort -g | head -1
}
measure() { # name, our command, qemu-img command, output file
    local name=$1 ours_cmd=$2 qemu_cmd=$3 out=$4
    local ours_times=() qemu_times=()
    for ((run = 0; run < REPEAT; run++)); do
        rm -f "$out" "$out.ours"
        ours_times+=("$(seconds bash -c "$ours_cmd")")
        mv "$out" "$out.ours"
        qemu_times+=("$(seconds bash -c "$qemu_cmd")")
        qemu-img compare -q "$out.ours" "$out" || { echo "$name: outputs differ" >&2; exit 1; }
    done
    rm -f "$out" "$out.ours"
    local t_ours t_qemu ratio
    t_ours=$(best "${ours_times[@]}")
    t_qemu=$(best "${qemu_times[@]}")
    ratio=$(echo "$t_ours / $t_qemu" | bc -l)
    results+=("$(printf '| %s | %.2f | %.2f | %.2f |' "$name" "$t_ours" "$t_qemu" "$ratio")")
    printf '%s: ours %.2fs qemu-img %.2fs ratio %.2f\n' "$name" "$t_ours" "$t_qemu" "$ratio" >&2
}

measure "convert raw -> qcow2, $SIZE, 50% random" \
    "$OURS convert -O qcow2 $WORK/src.raw $WORK/out.qcow2" \
    "qemu-img convert -O qcow2 $WORK/src.raw $WORK/out.qcow2" "$WORK/out.qcow2"
qemu-img convert -O qcow2 "$WORK/src.raw" "$WORK/src.qcow2"
cat "$WORK/src.qcow2" > /dev/null
measure "convert qcow2 -> raw, $SIZE, 50% random" \
    "$OURS convert -O raw $WORK/src.qcow2 $WORK/out.raw" \
    "qemu-img convert -O raw $WORK/src.qcow2 $WORK/out.raw" "$WORK/out.raw"
rm -f "$WORK/src.raw" "$WORK/src.qcow2"
measure "create qcow2 preallocation=full, $PREALLOC_SIZE" \
    "$OURS create -q -f qcow2 -o preallocation=full $WORK/out.full $PREALLOC_SIZE" \
    "qemu-img create -q -f qcow2 -o preallocation=full $WORK/out.full $PREALLOC_SIZE" "$WORK/out.full"

# Replace (or append) the "## Images" section of docs/benchmarks.md.
SECTION=$(mktemp)
{
    echo "## Images"
    echo
    echo "\`bash benches/images.sh\` (SIZE=$SIZE, PREALLOC_SIZE=$PREALLOC_SIZE), $(date -u +%Y-%m-%d), $(nproc) cores,"
    echo "release build, page cache warm, best of $REPEAT runs each, wall time including a final sync."
    echo "Ratio = oxvirt img time / qemu-img $(qemu-img --version | head -1 | awk '{print $3}') time."
    echo "Load average (1/5/15 min) $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
    echo "(above ~0.5 other work shared the machine and the numbers are noisy)."
    echo
    echo "| operation | oxvirt img (s) | qemu-img (s) | ratio |"
    echo "|---|---|---|---|"
    printf '%s\n' "${results[@]}"
    echo
} > "$SECTION"
DOC=docs/benchmarks.md
[ -f "$DOC" ] || printf '# Benchmarks\n\n' > "$DOC"
python3 - "$DOC" "$SECTION" <<'PY'
import re, sys
doc, section = sys.argv[1], open(sys.argv[2]).read()
text = open(doc).read()
pattern = re.compile(r"^## Images\n.*?(?=^## |\Z)", re.S | re.M)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
open(doc, "w").write(text)
PY
rm -f "$SECTION"
echo "wrote $DOC" >&2
