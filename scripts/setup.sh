#!/usr/bin/env bash
# Set-up shared by the README's two commands: the wasm target, the guest
# examples. Safe and quick to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# The daemon links libseccomp (containers' system call filter), found
# through pkg-config; containers are set up with iproute2 and nsenter, and
# kept from the host's own services by an nftables table. The etcd client
# is generated from etcd's protocol files at build time by protoc.
. scripts/need.sh
need pkg-config pkg-config lib:libseccomp libseccomp-dev ip iproute2 \
  nsenter util-linux nft nftables protoc protobuf-compiler

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
