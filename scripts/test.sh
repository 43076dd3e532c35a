#!/usr/bin/env bash
# The whole test suite, as CI runs it: setup (packages, build, guest kit), lints, every test of the workspace
# (real QEMU guests under TCG, the nested KVM lab for the native VMM, the project's own XML cases against
# libvirt's references), the conformance step over libvirt's own test data (scripts/conformance.sh: it needs
# ../shared/conformance/libvirt-qemuxmlconf beside the repository), then bounded fuzzing of the parsers.
# Each stage's time is printed at the end.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

# CI builds everything from scratch once: incremental compilation only adds work there, and line tables are
# enough debug info for test failures' backtraces (a developer's own runs keep cargo's defaults, so that
# switching between this script and plain cargo does not rebuild everything).
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
    export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}
fi

start=$(date +%s)
stage_start=$start
times=()
stage_done() {
    local now
    now=$(date +%s)
    times+=("$(printf '%-38s %5ss' "$1" $((now - stage_start)))")
    stage_start=$now
}
report_times() {
    echo "== stage times"
    printf '  %s\n' "${times[@]}"
    printf '  %-38s %5ss\n' "total" $(($(date +%s) - start))
}
trap report_times EXIT

echo "== setup"
bash scripts/setup.sh
stage_done "setup (packages, build, guest kit)"

echo "== lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
stage_done "lints (fmt, clippy)"

echo "== tests"
# Guests run under TCG on 2 cores: a few tests at a time per binary keep every guest responsive. The binaries
# that run one long guest each (the nested labs, the image builder's) run beside the others
# instead of after them (scripts/test-lanes.py: the same binaries, arguments and working directories as
# `cargo test --workspace --no-fail-fast`, and a table of their times at the end).
python3 scripts/test-lanes.py -- --test-threads=4
stage_done "tests (every test binary, two lanes)"

echo "== conformance with libvirt's own test data"
bash scripts/conformance.sh
stage_done "conformance (scripts/conformance.sh)"

echo "== fuzzing (bounded)"
bash scripts/fuzz.sh "${OXVIRT_FUZZ_SECONDS:-30}"
stage_done "fuzzing (build + runs)"
