#!/usr/bin/env bash
# Set-up shared by the README's two commands: the wasm target, the guest
# examples. Safe and quick to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# RUSTUP_AUTO_INSTALL=0 on our machines: rust-toolchain.toml's target is not
# added by itself.
rustup target add wasm32-wasip2 >/dev/null

cargo build --release --target wasm32-wasip2 --manifest-path guest-examples/Cargo.toml
