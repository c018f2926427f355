#!/usr/bin/env bash
# Runs every check and test from a fresh clone: formatting, lints, the
# guest examples, unit tests, end-to-end tests, and one short benchmark run.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# The queue-worker tests talk to a real Redis server; the terminal tests
# drive `mesh service run` in tmux; the HTTPS tests use curl.
# The container bench compares with runc. The cluster tests start a real
# etcd cluster (Debian's etcd-server) and ask it things with etcdctl. The
# dashboard tests drive Debian's chromium with playwright-core (pinned by
# tests/dashboard/package-lock.json; it downloads no browser).
# The registry tests run Debian's docker-registry on loopback over TLS
# (scripts/registry.sh) and push to it with skopeo and, for wasm artifacts,
# the oras Python SDK (pinned by tests/registry/requirements.txt).
. scripts/need.sh
need redis-server redis-server tmux tmux curl curl runc runc \
  etcd etcd-server etcdctl etcd-client chromium chromium \
  docker-registry docker-registry htpasswd apache2-utils skopeo skopeo openssl openssl \
  wrk wrk pebble pebble
echo "== oras and cryptography (pinned) for the registry tests"
scripts/registry-venv.sh
echo "== playwright-core for the dashboard tests"
(cd tests/dashboard && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== layers (imports point downward only)"
python3 scripts/check-layers.py

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo fmt --manifest-path guest-examples/Cargo.toml --all -- --check
cargo clippy --release --target wasm32-wasip2 --manifest-path guest-examples/Cargo.toml \
    --target-dir guest-examples/target -- -D warnings

echo "== components from other toolchains (componentize-js, componentize-py; pinned)"
scripts/toolchains.sh

echo "== container images (busybox and node, from Debian packages, offline)"
scripts/images.sh

echo "== cargo test"
cargo test --workspace

echo "== fuzz: property tests of the parsers and API bodies, longer"
FUZZ_CASES="${FUZZ_CASES:-20000}" cargo test -p mesh-host --test fuzz -- --nocapture 2>&1 |
  grep -E '^fuzz |test result|panicked|FAILED'

echo "== benchmarks (short runs)"
cargo bench -p mesh-host --bench instance_start --profile dev -- --quick
cargo bench -p mesh-host --bench cron_fire --profile dev -- --quick
cargo bench -p mesh-host --bench container_start --profile dev
# The issues' own benchmarks, one round each on the debug build (the full
# runs are scenarios 11 and 12 of scripts/bench.sh, on the release build).
bench_out="$(mktemp -d)"
ROUNDS=1 python3 scripts/bench-registry.py target/debug/mesh target/test-images/busybox.tar \
  guest-examples/target/wasm32-wasip2/release/app.wasm "$bench_out/registry.env"
python3 scripts/bench-rollout.py target/debug/mesh \
  guest-examples/target/wasm32-wasip2/release/app.wasm "$bench_out/rollout.env" 1
rm -rf "$bench_out"
