#!/usr/bin/env bash
# The whole test suite, as CI runs it: setup (packages, build, guest kit), lints, every test of the workspace
# (real QEMU guests under TCG, the nested KVM lab for the native VMM), then bounded fuzzing of the parsers.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

bash scripts/setup.sh

echo "== lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== tests"
# Guests run under TCG on 2 cores: a few suites at a time keep every guest responsive.
cargo test --workspace --no-fail-fast -- --test-threads=4

echo "== fuzzing (bounded)"
bash scripts/fuzz.sh "${OXVIRT_FUZZ_SECONDS:-60}"
