#!/usr/bin/env bash
# Conformance with libvirt's own test data: the CI step (after the main tests) that needs data which is not in
# this repository.
#
# The data: libvirt's qemuxmlconf test cases (input domain XML, libvirt's normalized XML, the QEMU arguments
# libvirt generates), LGPL-2.1-or-later test files copied unchanged from libvirt's tests/qemuxmlconfdata; their
# provenance, commit by commit, is in INDEX.md beside them. They live in the project's shared folder, laid
# beside the repository: ../shared/conformance/libvirt-qemuxmlconf (CI has it there), or wherever
# $OXVIRT_LIBVIRT_CORPUS points. Without it this step fails and says so: a plain `cargo test` does not need it
# (the project's own cases, crates/domain/tests/data/cases, compared with a real libvirt 9.0, are there).
#
# What runs: the tests marked #[ignore] because they read the corpus:
#   - oxvirt-domain tests/conformance.rs: every input parses or is refused (never a panic); a parsed input
#     prints libvirt's normalized XML (compared as trees); libvirt's error cases are refused; round trips;
#   - oxvirt-domain tests/errors.rs: every truncation of every corpus input parses or fails, never panics;
#   - oxvirt-qemu tests/conformance.rs: oxvirt's QEMU command line against libvirt's .args, option by option.
# It prints the counts (docs/xml-support.md and the README publish them) and fails on any difference.
#
# Usage: scripts/conformance.sh   (cargo test arguments after -- are passed on, e.g. -- --test-threads=1)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
corpus=${OXVIRT_LIBVIRT_CORPUS:-$repo/../shared/conformance/libvirt-qemuxmlconf}
if [ ! -f "$corpus/INDEX.md" ]; then
    cat >&2 << EOF
conformance: libvirt's qemuxmlconf corpus is missing: no $corpus/INDEX.md.
  It is the project's shared folder, shared/conformance/libvirt-qemuxmlconf, laid beside the repository
  (CI lays it there; a developer machine has it at /work/shared). The files are libvirt's own test data
  (tests/qemuxmlconfdata in libvirt's repository, LGPL-2.1-or-later), listed with their commits in its
  INDEX.md. Put a copy at that path, or point OXVIRT_LIBVIRT_CORPUS at one.
EOF
    exit 1
fi
corpus=$(cd "$corpus" && pwd)
export OXVIRT_LIBVIRT_CORPUS=$corpus
[ "${1:-}" = "--" ] && shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "conformance: libvirt's qemuxmlconf corpus at $corpus ($(ls "$corpus"/*.xml | grep -vc '\.x86_64-latest\.xml$') inputs; provenance in its INDEX.md)"
status=0
cargo test --quiet -p oxvirt-domain --test conformance --test errors -- --ignored --nocapture "$@" > "$log" 2>&1 || status=$?
cargo test --quiet -p oxvirt-qemu --test conformance -- --ignored --nocapture "$@" >> "$log" 2>&1 || status=$?
# The lists (which case, with which reason), then the counts.
grep -v '^SUMMARY' "$log" | grep -Ev '^(running [0-9]+ tests?|\.+|i+)$' | grep -v '^$' || true
domain=$(grep '^SUMMARY: .* parsed-and-equal' "$log" || true)
qemu=$(grep '^SUMMARY: .*QEMU arguments' "$log" || true)
echo
echo "== conformance with libvirt's own test cases ($corpus)"
if [ -n "$domain" ]; then
    # SUMMARY: 52 cases: parsed-and-equal 19 / parsed-no-reference 6 / rejected-as-unsupported 22 /
    #          rejected-by-validation 0 / error-expected-and-got 5 / failures 0
    read -r total equal noref unsupported validation errors failures < <(
        echo "$domain" | sed -E 's/^SUMMARY: ([0-9]+) cases: parsed-and-equal ([0-9]+) \/ parsed-no-reference ([0-9]+) \/ rejected-as-unsupported ([0-9]+) \/ rejected-by-validation ([0-9]+) \/ error-expected-and-got ([0-9]+) \/ failures ([0-9]+)$/\1 \2 \3 \4 \5 \6 \7/'
    )
    err_cases=$(ls "$corpus"/*.x86_64-latest.err 2> /dev/null | wc -l)
    echo "domain XML, $total cases:"
    echo "  equal to libvirt's normalized output:        $equal"
    echo "  parsed, libvirt gives no output to compare:  $noref (round trip checked)"
    echo "  refused as unsupported:                      $unsupported"
    echo "  refused by validation:                       $validation"
    echo "  libvirt's error cases refused:               $errors of $err_cases"
    echo "  differing / wrongly accepted / panics:       $failures"
else
    echo "domain XML: the test printed no counts (it failed to build or panicked early, see above)"
fi
if [ -n "$qemu" ]; then
    echo "QEMU command lines: ${qemu#SUMMARY: }"
else
    echo "QEMU command lines: the test printed no counts (see above)"
fi
if [ "$status" -ne 0 ]; then
    echo "conformance: FAILED (exit status $status); the failing assertions are above" >&2
    exit "$status"
fi
echo "conformance: passed"
