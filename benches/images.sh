#!/usr/bin/env bash
# Benchmarks `oxvirt img` and the oxvirt-images library against qemu-img on the same files and
# writes the "## Images" section of docs/benchmarks.md. Ratio = oxvirt time / qemu-img time
# (below 1: we are faster). Median of RUNS runs per tool and row; the two tools alternate
# (which goes first flips every run).
#
#   bash benches/images.sh                       # the issue's sizes: convert 4G, create 8G
#   SIZE=1G PREALLOC_SIZE=1G RUNS=1 bash benches/images.sh   # quick run while developing
#   ROWS="convert create io" (default: all)      # which groups of rows to run
#   BENCH_DIR=/var/tmp                           # where the work files go (needs ~SIZE*3 +
#                                                # PREALLOC_SIZE*2 free; deleted at the end)
#
# Run as root to drop the page cache between runs (sync; echo 3 > /proc/sys/vm/drop_caches);
# otherwise the doc says it was not dropped.
set -euo pipefail

SIZE=${SIZE:-4G}
PREALLOC_SIZE=${PREALLOC_SIZE:-8G}
RUNS=${RUNS:-3}
ROWS=${ROWS:-"convert create io"}
# Random 4 KiB I/O: the step between requests is an odd number of 4 KiB blocks, so on a disk
# of 2^k blocks the requests visit distinct blocks scattered over the whole disk.
STEP=$((104729 * 4096))
WARM_READS=${WARM_READS:-500000}
COLD_READS=${COLD_READS:-20000}
WRITES=${WRITES:-50000}

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
cargo build --release -q -p oxvirt-cli
cargo build --release -q -p oxvirt-images --example io-bench
OXVIRT="$REPO/target/release/oxvirt"
IO_BENCH="$REPO/target/release/examples/io-bench"
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/oxvirt-images-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [ -w /proc/sys/vm/drop_caches ]; then
    DROPS=yes
else
    DROPS=no
    echo "not root: the page cache cannot be dropped between runs" >&2
fi
drop_caches() {
    sync
    if [ "$DROPS" = yes ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}
warm() { cat "$@" > /dev/null; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

LOAD_START=$(load)
MACHINE_NPROC=$(nproc)
MACHINE_MEM=$(free -g | awk '/^Mem:/ {print $2 " GiB total, " $7 " GiB available"}')
MACHINE_DF=$(df -h --output=source,fstype,size,avail "$WORK" | tail -1 | awk '{print $1 " (" $2 "), " $3 " size, " $4 " free"}')
MACHINE_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')

# seconds CMD...: wall time of one run, including a final sync of what it wrote.
seconds() {
    local start end
    start=$(date +%s.%N)
    "$@" > /dev/null
    sync
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
list() { printf '%.2f ' "$@" | sed 's/ $//'; }

results=()
runs_log=()
# measure NAME PREPARE OURS QEMU [CHECK] [COUNT]: PREPARE (untimed) runs before every timed run,
# followed by a cache drop when COLD=1; CHECK (untimed) after every timed run. With COUNT,
# the table also shows requests per second.
measure() {
    local name=$1 prepare=$2 ours=$3 qemu=$4 check=${5:-} count=${6:-}
    local ours_t=() qemu_t=() row_load run tool
    row_load=$(load)
    for ((run = 0; run < RUNS; run++)); do
        for tool in $( ((run % 2 == 0)) && echo "ours qemu" || echo "qemu ours"); do
            bash -c "$prepare"
            if [ "${COLD:-0}" = 1 ]; then drop_caches; else sync; fi
            if [ "$tool" = ours ]; then
                ours_t+=("$(seconds bash -c "$ours")")
            else
                qemu_t+=("$(seconds bash -c "$qemu")")
            fi
            if [ -n "$check" ]; then bash -c "$check" || { echo "$name: $tool's output differs" >&2; exit 1; }; fi
        done
    done
    local mo mq ratio rate=""
    mo=$(median "${ours_t[@]}")
    mq=$(median "${qemu_t[@]}")
    ratio=$(echo "$mo / $mq" | bc -l)
    if [ -n "$count" ]; then
        rate=$(printf ' | %.0f | %.0f' "$(echo "$count / $mo" | bc -l)" "$(echo "$count / $mq" | bc -l)")
    fi
    results+=("$(printf '| %s | %.2f | %.2f | **%.2f**%s | %s |' "$name" "$mo" "$mq" "$ratio" "$rate" "$row_load")")
    runs_log+=("- $name: oxvirt $(list "${ours_t[@]}"); qemu-img $(list "${qemu_t[@]}")")
    printf '%s: oxvirt %.2fs qemu-img %.2fs ratio %.2f (load %s)\n' "$name" "$mo" "$mq" "$ratio" "$row_load" >&2
}

# The source: a sparse raw image where a random half of the 64 KiB clusters holds random data.
echo "preparing a $SIZE source image (half of the 64 KiB clusters random data)..." >&2
qemu-img create -q -f raw "$WORK/src.raw" "$SIZE"
python3 - "$WORK/src.raw" <<'PY'
import os, random, sys
path = sys.argv[1]
size = os.path.getsize(path)
rng = random.Random(42)
clusters = size // 65536
with open(path, "r+b") as f:
    for c in sorted(rng.sample(range(clusters), clusters // 2)):
        f.seek(c * 65536)
        f.write(os.urandom(65536))
PY
qemu-img convert -O qcow2 "$WORK/src.raw" "$WORK/src.qcow2"

convert_rows=() create_rows=() io_rows=()
if [[ " $ROWS " == *" convert "* ]]; then
    COLD=1 measure "convert raw → qcow2, $SIZE, 50% random data" \
        "rm -f $WORK/out.qcow2" \
        "$OXVIRT img convert -O qcow2 $WORK/src.raw $WORK/out.qcow2" \
        "qemu-img convert -O qcow2 $WORK/src.raw $WORK/out.qcow2" \
        "qemu-img compare -q $WORK/out.qcow2 $WORK/src.raw && rm $WORK/out.qcow2"
    COLD=1 measure "convert qcow2 → raw, $SIZE, 50% random data" \
        "rm -f $WORK/out.raw" \
        "$OXVIRT img convert -O raw $WORK/src.qcow2 $WORK/out.raw" \
        "qemu-img convert -O raw $WORK/src.qcow2 $WORK/out.raw" \
        "qemu-img compare -q $WORK/out.raw $WORK/src.raw && rm $WORK/out.raw"
fi
if [[ " $ROWS " == *" create "* ]]; then
    measure "create -f qcow2 -o preallocation=full, $PREALLOC_SIZE" \
        "rm -f $WORK/full.qcow2" \
        "$OXVIRT img create -q -f qcow2 -o preallocation=full $WORK/full.qcow2 $PREALLOC_SIZE" \
        "qemu-img create -q -f qcow2 -o preallocation=full $WORK/full.qcow2 $PREALLOC_SIZE"
    measure "create -f raw -o preallocation=full, $PREALLOC_SIZE" \
        "rm -f $WORK/full.raw" \
        "$OXVIRT img create -q -f raw -o preallocation=full $WORK/full.raw $PREALLOC_SIZE" \
        "qemu-img create -q -f raw -o preallocation=full $WORK/full.raw $PREALLOC_SIZE"
    rm -f "$WORK/full.qcow2" "$WORK/full.raw"
fi
if [[ " $ROWS " == *" io "* ]]; then
    bench_args="-s 4096 -S $STEP"
    for fmt in raw qcow2; do
        measure "4k random read, $fmt, $SIZE, page cache warm (-t writeback)" \
            "cat $WORK/src.$fmt > /dev/null" \
            "$IO_BENCH -f $fmt $bench_args -c $WARM_READS $WORK/src.$fmt" \
            "qemu-img bench -f $fmt -t writeback -d 1 $bench_args -c $WARM_READS $WORK/src.$fmt" \
            "" "$WARM_READS"
    done
    for fmt in raw qcow2; do
        COLD=1 measure "4k random read, $fmt, $SIZE, cache dropped (ours buffered, qemu-img -t none)" \
            "true" \
            "$IO_BENCH -f $fmt $bench_args -c $COLD_READS $WORK/src.$fmt" \
            "qemu-img bench -f $fmt -t none -d 1 $bench_args -c $COLD_READS $WORK/src.$fmt" \
            "" "$COLD_READS"
    done
    for fmt in raw qcow2; do
        measure "4k random write, new $SIZE $fmt (allocating), -t writeback + flush + sync" \
            "rm -f $WORK/w.$fmt && qemu-img create -q -f $fmt $WORK/w.$fmt $SIZE" \
            "$IO_BENCH -w -f $fmt $bench_args -c $WRITES $WORK/w.$fmt" \
            "qemu-img bench -w -f $fmt -t writeback -d 1 $bench_args -c $WRITES $WORK/w.$fmt" \
            "" "$WRITES"
    done
    rm -f "$WORK"/w.*
fi
LOAD_END=$(load)

# Replace (or append) the "## Images" section of docs/benchmarks.md.
SECTION=$(mktemp)
QEMU_VERSION=$(qemu-img --version | head -1)
{
    echo "## Images"
    echo
    echo "\`bash benches/images.sh\` (SIZE=$SIZE, PREALLOC_SIZE=$PREALLOC_SIZE, RUNS=$RUNS), $(date -u '+%Y-%m-%d %H:%M') UTC."
    echo "oxvirt: release build (\`target/release/oxvirt img\`; 4k I/O through the library with"
    echo "\`target/release/examples/io-bench\`, crates/images/examples/io-bench.rs). $QEMU_VERSION."
    echo "Times are wall seconds of the whole command plus a final \`sync\`, **median of $RUNS runs**;"
    echo "the tools alternate (which goes first flips every run). Ratio = oxvirt / qemu-img (below 1:"
    echo "oxvirt is faster). Page cache dropped (\`sync; echo 3 > /proc/sys/vm/drop_caches\`) before"
    echo "every run of the convert rows and of the \"cache dropped\" rows: $DROPS (the create rows"
    echo "write new files; the warm-read rows read the source once, untimed, before each run)."
    echo
    echo "| operation | oxvirt (s) | qemu-img (s) | ratio | load avg at start of row |"
    echo "|---|---|---|---|---|"
    for r in "${results[@]}"; do
        case "$r" in *"4k random"*) ;; *) echo "$r" ;; esac
    done
    echo
    echo "Random 4 KiB I/O, same pattern on both sides: request i at offset (i × $STEP) mod the disk"
    echo "size (qemu-img bench's \`-S\` step; $STEP bytes = 104729 blocks of 4 KiB, odd, so every"
    echo "request hits a different block scattered over the disk), queue depth 1 (our API is"
    echo "synchronous: \`qemu-img bench -d 1\`). Reads use the $SIZE source images above (half data,"
    echo "half holes). Writes go to a freshly created empty image each run; both tools flush at the end."
    echo
    echo "| operation | oxvirt (s) | qemu-img (s) | ratio | oxvirt req/s | qemu-img req/s | load avg at start of row |"
    echo "|---|---|---|---|---|---|---|"
    for r in "${results[@]}"; do
        case "$r" in *"4k random"*) echo "$r" ;; esac
    done
    echo
    echo "Every run (seconds, in order):"
    echo
    printf '%s\n' "${runs_log[@]}"
    echo
    echo "**Machine**: $MACHINE_NPROC cores ($MACHINE_CPU), memory $MACHINE_MEM (\`free -g\`);"
    echo "work files on $MACHINE_DF; kernel $(uname -r). Load average (1/5/15 min) $LOAD_START at"
    echo "the start, $LOAD_END at the end: the machine was shared with other work, so absolute"
    echo "times are noisy; compare the ratios."
    echo
    echo "**Commands** (\`\$W\` = the work directory, \`STEP=$STEP\`):"
    echo
    echo "- source: \`qemu-img create -f raw \$W/src.raw $SIZE\`, then random 64 KiB of"
    echo "  /dev/urandom written into a random half of its 64 KiB clusters (python, seed 42);"
    echo "  \`qemu-img convert -O qcow2 \$W/src.raw \$W/src.qcow2\`"
    echo "- \`oxvirt img convert -O qcow2 \$W/src.raw \$W/out.qcow2\` vs \`qemu-img convert -O qcow2 ...\` (and -O raw from src.qcow2); outputs checked with \`qemu-img compare\`"
    echo "- \`oxvirt img create -q -f qcow2 -o preallocation=full \$W/full.qcow2 $PREALLOC_SIZE\` vs \`qemu-img create -q -f qcow2 -o preallocation=full ...\` (and -f raw)"
    echo "- \`io-bench -f FMT -s 4096 -S \$STEP -c N \$W/src.FMT\` vs \`qemu-img bench -f FMT -t writeback|none -d 1 -s 4096 -S \$STEP -c N \$W/src.FMT\`"
    echo "  (N = $WARM_READS warm reads, $COLD_READS cold reads); writes: \`-w -c $WRITES\` on a new \`qemu-img create -f FMT \$W/w.FMT $SIZE\`"
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
echo "wrote the Images section of $DOC" >&2
