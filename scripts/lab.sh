#!/usr/bin/env bash
# Runs the oxvirt-vmm nested lab: real KVM inside a QEMU TCG guest (see docs/native-vmm.md, "Tests").
# Usage: scripts/lab.sh [extra cargo test args]; the L1 console log is kept in target/lab-console.log.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export OXVIRT_LAB_LOG=${OXVIRT_LAB_LOG:-$repo/target/lab-console.log}
exec cargo test -p oxvirt-vmm --test lab "$@"
