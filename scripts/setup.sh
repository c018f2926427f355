#!/usr/bin/env bash
# Set-up shared by the README's two commands: the wasm target, the guest
# examples. Safe and quick to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# The daemon links libseccomp (containers' system call filter), found
# through pkg-config; containers are set up with iproute2 and nsenter, and
# kept from the host's own services by an nftables table.
missing=""
pkg-config --exists libseccomp 2>/dev/null || missing="$missing libseccomp-dev"
command -v pkg-config >/dev/null || missing="$missing pkg-config"
command -v ip >/dev/null || missing="$missing iproute2"
command -v nsenter >/dev/null || missing="$missing util-linux"
command -v nft >/dev/null || missing="$missing nftables"
if [ -n "$missing" ]; then
  echo "== installing$missing"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  # shellcheck disable=SC2086
  $sudo apt-get install -y $missing >/dev/null 2>&1 ||
    { $sudo apt-get update >/dev/null && $sudo apt-get install -y $missing >/dev/null; }
fi

# RUSTUP_AUTO_INSTALL=0 on our machines: rust-toolchain.toml's target is not
# added by itself.
rustup target add wasm32-wasip2 wasm32-wasip1 >/dev/null

# Always into guest-examples/target (tests, benches and the demo look
# there), even when CARGO_TARGET_DIR points the host build elsewhere.
cargo build --release --target wasm32-wasip2 --manifest-path guest-examples/Cargo.toml \
    --target-dir guest-examples/target
# One example is a classic core module, as many toolchains still emit.
cargo build --release --target wasm32-wasip1 --manifest-path guest-examples/Cargo.toml \
    --target-dir guest-examples/target -p classic
