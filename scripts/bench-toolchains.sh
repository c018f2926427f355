#!/usr/bin/env bash
# Throughput of components from other toolchains, measured in one run:
# the JavaScript component with its own handler (reused instances), the
# fetch-event one (detected as not reusable: fresh per request), the same
# reusable one forced fresh, the Python one (reused), and the fetch-event
# one under `wasmtime serve` 48 (fresh per request, the peer). wrk against
# `GET /` of each; prints req/s, p50, p99 and the ratios.
#
#   scripts/bench-toolchains.sh          # 10s per target
#   DURATION=3s scripts/bench-toolchains.sh
#
# Not part of CI. Needs what scripts/toolchains.sh needs, wrk (installed
# with apt-get when missing) and wasmtime-cli 48 (WASMTIME, or
# /opt/wasmtime-48/bin/wasmtime, or installed with cargo).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS="${CONNS:-16}"
DURATION="${DURATION:-10s}"

scripts/setup.sh >/dev/null
scripts/toolchains.sh >/dev/null
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
WASMTIME="${WASMTIME:-/opt/wasmtime-48/bin/wasmtime}"
if ! "$WASMTIME" --version 2>/dev/null | grep -q '^wasmtime 48\.'; then
  cargo install --locked --quiet --root target/wasmtime-48 wasmtime-cli@48.0.8
  WASMTIME=target/wasmtime-48/bin/wasmtime
fi
cargo build --release -q -p mesh-cli
mesh="$PWD/target/release/mesh"
other="$PWD/guest-examples/target/other"

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

export MESH_DATA_DIR="$tmp/data"
unset MESH_API_URL MESH_TOKEN
"$mesh" up --data-dir "$MESH_DATA_DIR" --api 127.0.0.1:0 --http 127.0.0.1:0 >"$tmp/mesh.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do [ -s "$MESH_DATA_DIR/daemon.json" ] && break; sleep 0.1; done
mesh_url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http_url"].rstrip("/"))' "$MESH_DATA_DIR/daemon.json")
wt_port=$(free_port)
"$WASMTIME" serve -Scli --addr "127.0.0.1:$wt_port" "$other/jshello.wasm" >"$tmp/wasmtime.log" 2>&1 &
pids+=($!)

"$mesh" svc create -n jsreused --instances 4 -- "$other/jshandler.wasm" >/dev/null
"$mesh" svc create -n jsdetected --instances 4 -- "$other/jshello.wasm" >/dev/null
"$mesh" svc create -n jsfresh --instances 4 --fresh-per-request -- jshandler >/dev/null
"$mesh" svc create -n pyreused --instances 4 -- "$other/pyhello.wasm" >/dev/null
for s in jsreused jsdetected jsfresh pyreused; do
  "$mesh" svc publish -n "$s" --endpoint "$s" >/dev/null
done

wait_ok() { # URL HOST
  for _ in $(seq 240); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "Host: $2" "$1/")" = 200 ] && return 0
    sleep 0.5
  done
  echo "no 200 from $1 (Host: $2)" >&2
  tail -20 "$tmp/mesh.log" >&2
  exit 1
}
wait_ok "http://127.0.0.1:$wt_port" "127.0.0.1:$wt_port"
for s in jsreused jsdetected jsfresh pyreused; do wait_ok "$mesh_url" "$s.localhost"; done

declare -A rps p50 p99
bench() { # NAME URL HOST
  wrk -t2 -c"$CONNS" -d2s -H "Host: $3" "$2/" >/dev/null
  local out
  out=$(wrk -t2 -c"$CONNS" -d"$DURATION" --latency -H "Host: $3" "$2/")
  if echo "$out" | grep -q "Non-2xx"; then
    echo "$1: some answers were not 2xx:" >&2
    echo "$out" >&2
    exit 1
  fi
  rps[$1]=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
  p50[$1]=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99[$1]=$(echo "$out" | awk '$1 == "99%" {print $2}')
  printf '%-34s %10s req/s  p50 %-9s p99 %s\n' "$1" "${rps[$1]}" "${p50[$1]}" "${p99[$1]}"
}
echo "== wrk -t2 -c$CONNS -d$DURATION GET / (4 instances each in mesh)"
bench "wasmtime serve, js fetch-event" "http://127.0.0.1:$wt_port" "127.0.0.1:$wt_port"
bench "mesh, js handler (reused)" "$mesh_url" jsreused.localhost
bench "mesh, js fetch-event (detected)" "$mesh_url" jsdetected.localhost
bench "mesh, js handler (--fresh-per-request)" "$mesh_url" jsfresh.localhost
bench "mesh, python (reused)" "$mesh_url" pyreused.localhost
"$mesh" svc ls | grep -E "SERVING|jsdetected" || true
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
echo "== reused js / detected-fresh js: $(ratio "${rps[mesh, js handler (reused)]}" "${rps[mesh, js fetch-event (detected)]}")"
echo "== detected-fresh js in mesh / wasmtime serve: $(ratio "${rps[mesh, js fetch-event (detected)]}" "${rps[wasmtime serve, js fetch-event]}")"
