#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time each (default 60 s), starting from seed inputs made
# here: libvirt's conformance XML for the domain parser, small images made by qemu-img for the qcow2 parser,
# and the XML under fuzz/seeds/ (plus the benchmarks' network) for the network, pool and volume parsers.
# cargo-fuzz needs nightly features; the stable toolchain provides them with RUSTC_BOOTSTRAP=1.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz
cd "$repo"
seeds=$repo/target/fuzz-seeds
rm -rf "$seeds"
mkdir -p "$seeds/domain_xml" "$seeds/qcow2" "$seeds/network_xml" "$seeds/pool_xml" "$seeds/volume_xml"

conformance=$repo/../shared/conformance/libvirt-qemuxmlconf
cp "$repo"/examples/*.xml "$seeds/domain_xml/"
if [ -d "$conformance" ]; then cp "$conformance"/*.xml "$seeds/domain_xml/"; fi
for target in network_xml pool_xml volume_xml; do cp "$repo"/fuzz/seeds/$target/*.xml "$seeds/$target/"; done
cp "$repo"/benches/network/network.xml "$seeds/network_xml/bench.xml"

qemu-img create -q -f qcow2 "$seeds/qcow2/plain.qcow2" 1M
qemu-img create -q -f qcow2 -o cluster_size=512 "$seeds/qcow2/small-clusters.qcow2" 64K
qemu-img create -q -f qcow2 -o compat=0.10 "$seeds/qcow2/v2.qcow2" 1M
qemu-img create -q -f qcow2 -b plain.qcow2 -F qcow2 "$seeds/qcow2/overlay.qcow2" 1M
qemu-img create -q -f raw "$seeds/qcow2/raw.img" 4K

for target in $(RUSTC_BOOTSTRAP=1 cargo fuzz list); do
    corpus=$repo/target/fuzz-corpus/$target
    mkdir -p "$corpus"
    echo "fuzz: $target for ${seconds}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$corpus" "$seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 | tail -n 3
done
