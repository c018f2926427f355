#!/usr/bin/env bash
# Pushes a container image or a wasm component to a registry started by
# scripts/registry.sh (either mode), as user alice (or bob).
#
#   scripts/registry-push.sh DIR image FILE REPO:TAG [alice|bob]
#       FILE: an oci-archive tar (target/test-images/busybox.tar, node-image.tar),
#       a docker-archive tar (target/test-images/busybox-docker.tar), or an OCI
#       layout directory (target/test-images/busybox-oci, tag `latest`); pushed
#       with skopeo, which fetches bearer tokens itself in token mode.
#   scripts/registry-push.sh DIR wasm FILE.wasm REPO:TAG [alice|bob]
#       a CNCF wasm artifact (config application/vnd.wasm.config.v0+json, one
#       application/wasm layer), with tests/registry/push_wasm.py (oras).
#
# Prints `digest=sha256:...`, the pushed manifest's digest.
# The commands it runs, for reference (ADDR from DIR/address):
#   skopeo copy --dest-cert-dir DIR/certs.d --dest-creds alice:PASS oci-archive:FILE docker://ADDR/REPO:TAG
#   skopeo copy ... docker-archive:FILE docker://ADDR/REPO:TAG
#   skopeo copy ... oci:LAYOUT:latest docker://ADDR/REPO:TAG
#   PY tests/registry/push_wasm.py ADDR REPO:TAG FILE.wasm --ca DIR/ca.crt --user alice --password PASS
# PY: $MESH_REGISTRY_PYTHON, else target/registry-venv/bin/python, else python3.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
die() { echo "registry-push.sh: $*" >&2; exit 1; }
[ $# -ge 4 ] && [ $# -le 5 ] || die "usage: $0 DIR image|wasm FILE REPO:TAG [alice|bob]"
dir="$1" kind="$2" file="$3" ref="$4" user="${5:-alice}"
[ -s "$dir/address" ] || die "no registry in $dir (scripts/registry.sh start $dir basic|token)"
addr="$(cat "$dir/address")"
case "$user" in
  alice) password="$(cat "$dir/password")" ;;
  bob) password="$(cat "$dir/password.bob")" ;;
  *) die "user must be alice or bob" ;;
esac

case "$kind" in
  image)
    if [ -d "$file" ] && [ -f "$file/oci-layout" ]; then
      src="oci:$file:latest"
    elif tar tf "$file" 2>/dev/null | grep -x 'oci-layout' >/dev/null; then
      src="oci-archive:$file"
    elif tar tf "$file" 2>/dev/null | grep -x 'manifest.json' >/dev/null; then
      src="docker-archive:$file"
    else
      die "$file is neither an OCI layout, an oci-archive nor a docker-archive"
    fi
    digest_file="$(mktemp)"
    trap 'rm -f "$digest_file"' EXIT
    skopeo copy --quiet --dest-cert-dir "$dir/certs.d" --dest-creds "$user:$password" \
      --digestfile "$digest_file" "$src" "docker://$addr/$ref"
    echo "digest=$(cat "$digest_file")"
    ;;
  wasm)
    if [ -n "${MESH_REGISTRY_PYTHON:-}" ]; then py="$MESH_REGISTRY_PYTHON"
    elif [ -x "$root/target/registry-venv/bin/python" ]; then py="$root/target/registry-venv/bin/python"
    else py=python3
    fi
    "$py" "$root/tests/registry/push_wasm.py" "$addr" "$ref" "$file" \
      --ca "$dir/ca.crt" --user "$user" --password "$password"
    ;;
  *) die "kind must be image or wasm" ;;
esac
