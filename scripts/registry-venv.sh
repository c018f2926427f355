#!/usr/bin/env bash
# The oras Python SDK and cryptography (pinned by tests/registry/requirements.txt)
# in target/registry-venv, for pushing wasm artifacts to a test registry and
# for its token issuer (scripts/registry-push.sh, scripts/registry.sh).
# Quick when the venv is already made from the same pins.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/registry-venv
if ! cmp -s tests/registry/requirements.txt "$venv/.installed"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/registry/requirements.txt
  cp tests/registry/requirements.txt "$venv/.installed"
fi
