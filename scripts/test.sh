#!/usr/bin/env bash
# Runs every check and test from a fresh clone: formatting, lints, the
# guest examples, unit tests, end-to-end tests, and one short benchmark run.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
cargo test --workspace

echo "== benchmarks (short runs)"
cargo bench -p mesh-host --bench instance_start --profile dev -- --quick
cargo bench -p mesh-host --bench cron_fire --profile dev -- --quick
