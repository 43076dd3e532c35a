#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time each (default 60 s), starting from seed inputs that
# are in this repository: the project's own domain XML cases and libvirt's normalized output of them
# (crates/domain/tests/data/cases, crates/domain/tests/data/libvirt-9.0) and examples/ for the domain parser,
# small images made here by qemu-img for the qcow2 parser, and the XML under fuzz/seeds/ (plus the benchmarks'
# network) for the network, pool, volume and secret parsers, and example URIs (fuzz/seeds/ssh_uri) for the
# oxvirt+ssh:// destination parser. An input a fuzzer once failed on goes into
# fuzz/seeds/TARGET/ (with a unit test of the fix), so every later run starts from it. libvirt's own qemuxmlconf inputs are added to the domain
# seeds when they are beside the repository (../shared/conformance/libvirt-qemuxmlconf, or
# $OXVIRT_LIBVIRT_CORPUS); nothing here needs them.
#
# All targets are built by one `cargo fuzz build` (one release build with the sanitizer, instead of one per
# target), then run OXVIRT_FUZZ_JOBS at a time (default: one per CPU core, at most 2): each libFuzzer process
# is single-threaded, so on 2 cores two targets side by side get as many executions as one after the other.
# cargo-fuzz needs nightly features; the stable toolchain provides them with RUSTC_BOOTSTRAP=1.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
jobs=${OXVIRT_FUZZ_JOBS:-$(($(nproc) < 2 ? 1 : 2))}
command -v cargo-fuzz > /dev/null || cargo install --quiet --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
cd "$repo"
seeds=$repo/target/fuzz-seeds
logs=$repo/target/fuzz-logs
rm -rf "$seeds" "$logs"
mkdir -p "$seeds/domain_xml" "$seeds/qcow2" "$seeds/network_xml" "$seeds/pool_xml" "$seeds/volume_xml" "$seeds/secret_xml" "$seeds/ssh_uri" "$logs"

# Domain XML: the project's own cases with libvirt's output of them, the libvirt 9.0 fixtures, the examples.
for f in crates/domain/tests/data/cases/*.xml crates/domain/tests/data/libvirt-9.0/*.xml \
    crates/domain/tests/data/libvirt-9.0/verdicts/*.xml examples/*.xml; do
    cp "$f" "$seeds/domain_xml/$(echo "${f#crates/domain/tests/data/}" | tr / _)"
done
conformance=${OXVIRT_LIBVIRT_CORPUS:-$repo/../shared/conformance/libvirt-qemuxmlconf}
if [ -d "$conformance" ]; then
    for f in "$conformance"/*.xml; do cp "$f" "$seeds/domain_xml/libvirt-qemuxmlconf_$(basename "$f")"; done
    echo "fuzz: domain_xml seeds include libvirt's qemuxmlconf inputs from $conformance"
fi
cp "$repo"/fuzz/seeds/domain_xml/*.xml "$seeds/domain_xml/"
for target in network_xml pool_xml volume_xml secret_xml; do cp "$repo"/fuzz/seeds/$target/*.xml "$seeds/$target/"; done
cp "$repo"/benches/network/network.xml "$seeds/network_xml/bench.xml"
cp "$repo"/fuzz/seeds/ssh_uri/*.txt "$seeds/ssh_uri/"

qemu-img create -q -f qcow2 "$seeds/qcow2/plain.qcow2" 1M
qemu-img create -q -f qcow2 -o cluster_size=512 "$seeds/qcow2/small-clusters.qcow2" 64K
qemu-img create -q -f qcow2 -o compat=0.10 "$seeds/qcow2/v2.qcow2" 1M
qemu-img create -q -f qcow2 -b plain.qcow2 -F qcow2 "$seeds/qcow2/overlay.qcow2" 1M
qemu-img create -q -f raw "$seeds/qcow2/raw.img" 4K

targets=$(cargo fuzz list)
for target in $targets; do
    [ -n "$(ls "$seeds/$target" 2> /dev/null)" ] || { echo "fuzz: no seeds for $target" >&2; exit 1; }
done
echo "fuzz: building $(echo $targets | wc -w) targets"
build_start=$(date +%s)
cargo fuzz build
echo "fuzz: built in $(($(date +%s) - build_start))s"

# run_one TARGET: the target for $seconds s from its corpus and seeds; its output in $logs/TARGET.log.
run_one() {
    local target=$1 corpus=$repo/target/fuzz-corpus/$1
    mkdir -p "$corpus"
    if cargo fuzz run "$target" "$corpus" "$seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 > "$logs/$target.log" 2>&1; then
        echo "fuzz: $target for ${seconds}s: $(grep -E '^Done [0-9]+ runs' "$logs/$target.log" || tail -n 1 "$logs/$target.log")"
    else
        echo "fuzz: $target FAILED, its output:"
        tail -n 60 "$logs/$target.log"
        return 1
    fi
}
export -f run_one
export repo seeds logs seconds
echo "fuzz: running each target for ${seconds}s, $jobs at a time"
status=0
runs_start=$(date +%s)
printf '%s\n' $targets | xargs -P "$jobs" -I{} bash -c 'run_one {}' || status=$?
echo "fuzz: ran in $(($(date +%s) - runs_start))s"
exit "$status"
