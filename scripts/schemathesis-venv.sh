#!/usr/bin/env bash
# Installs schemathesis (PyPI) into a virtualenv cached outside the clone, keyed by its version, for
# crates/cli/tests/openapi.rs (the property test of the API against its OpenAPI document). Prints the
# venv's directory. Idempotent: a complete venv (its stamp file written last) is left alone; a
# half-made one (an interrupted install) is made again.
set -euo pipefail
version=4.32.5
venv="${OXVIRT_CACHE:-/var/cache/oxvirt}/venv-schemathesis-$version"
if [ ! -e "$venv/.complete" ]; then
    printf 'setup: installing schemathesis %s into %s\n' "$version" "$venv" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
    touch "$venv/.complete"
fi
echo "$venv"
