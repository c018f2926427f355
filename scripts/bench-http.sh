#!/usr/bin/env bash
# HTTP benchmark: the example `app` component's wasi:http handler served by
# `wasmtime serve` (the baseline) and by the mesh ingress, next to nginx
# (one worker returning a constant: the box's HTTP ceiling): service `hello`
# (4 reused instances, at hello.localhost) and service `fresh` (4 instances,
# --fresh-per-request, at fresh.localhost: a new store per request, as
# `wasmtime serve` does for p2 components). Runs wrk against `/` on each and
# prints req/s, p50, p99 and the ratios to wasmtime serve.
#
# Then the intra-DNS hop: mesh's `hello` instance calls `payments` N times
# by name (http://finance-payments/payments, in-process, reused and fresh
# instances) and N times over loopback TCP to a second `wasmtime serve`
# running payments.wasm; the guest times the calls (GET /hop) and the
# script prints microseconds per call and the ratios.
#
#   scripts/bench-http.sh            # 10s measured run per target
#   scripts/bench-http.sh --quick    # 3s smoke run
#
# Env: CONNS (default 32), DURATION (default 10s; --quick sets 3s),
#      RESULTS (a file to write the figures to as KEY=VALUE lines),
#      WASMTIME_ROOT (default /opt/wasmtime-48; wasmtime-cli 48.0.8 is
#      installed there with `cargo install` if it is not already).
# Needs: a Rust toolchain, python3, curl; wrk is installed with apt-get if
# missing. Exits non-zero if either target does not answer GET / with 200.
set -euo pipefail
cd "$(dirname "$0")/.."

WASMTIME_VERSION=48.0.8
WASMTIME_ROOT="${WASMTIME_ROOT:-/opt/wasmtime-48}"
CONNS="${CONNS:-32}"
DURATION="${DURATION:-10s}"

for arg in "$@"; do
  case "$arg" in
    --quick) DURATION=3s ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

# ---------------------------------------------------------------- tools ----
scripts/setup.sh

. scripts/need.sh
need wrk wrk nginx nginx-light

wasmtime="$WASMTIME_ROOT/bin/wasmtime"
if ! "$wasmtime" --version 2>/dev/null | grep -q " $WASMTIME_VERSION\b"; then
  echo "== installing wasmtime-cli $WASMTIME_VERSION into $WASMTIME_ROOT (takes a while)"
  cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked --root "$WASMTIME_ROOT"
fi
"$wasmtime" --version

echo "== cargo build --release -p mesh-cli"
cargo build --release -p mesh-cli
mesh="$PWD/target/release/mesh"
app="$PWD/guest-examples/target/wasm32-wasip2/release/app.wasm"

# ------------------------------------------------------------- servers ----
tmp="$(mktemp -d "${TMPDIR:-/tmp}/mesh-bench-http.XXXXXX")"
data_dir="$tmp/data"
wasmtime_pid=""
payments_pid=""
mesh_pid=""

nginx_pid=""

cleanup() {
  local rc=$?
  for pid in $wasmtime_pid $payments_pid $mesh_pid $nginx_pid; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $wasmtime_pid $payments_pid $mesh_pid $nginx_pid; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Prints the tail of a server log (before the temp dir goes away).
show_log() {
  echo "---- last lines of $1 ----" >&2
  tail -n 30 "$2" >&2 || true
  echo "----" >&2
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wasmtime serve: the baseline.
wasmtime_port="$(free_port)"
wasmtime_url="http://127.0.0.1:$wasmtime_port"
echo "== wasmtime serve on $wasmtime_url"
"$wasmtime" serve -Scli --addr "127.0.0.1:$wasmtime_port" "$app" >"$tmp/wasmtime.log" 2>&1 &
wasmtime_pid=$!
payments="$PWD/guest-examples/target/wasm32-wasip2/release/payments.wasm"
payments_port="$(free_port)"
"$wasmtime" serve -Scli --addr "127.0.0.1:$payments_port" "$payments" >"$tmp/payments.log" 2>&1 &
payments_pid=$!

# nginx: one worker returning a constant, the box's HTTP ceiling.
nginx_port="$(free_port)"
nginx_url="http://127.0.0.1:$nginx_port"
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx;
  proxy_temp_path $tmp/nginx;
  fastcgi_temp_path $tmp/nginx;
  uwsgi_temp_path $tmp/nginx;
  scgi_temp_path $tmp/nginx;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nginx_port;
    location / { return 200 "hello from nginx\n"; }
  }
}
CONF
echo "== nginx (1 worker, constant answer) on $nginx_url"
nginx -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" >"$tmp/nginx.log" 2>&1 &
nginx_pid=$!

# mesh: its own data dir; clients find it through MESH_DATA_DIR only.
unset MESH_API_URL MESH_TOKEN
export MESH_DATA_DIR="$data_dir"
mkdir -p "$data_dir"
echo "== mesh up (data in $data_dir)"
"$mesh" up --data-dir "$data_dir" --api 127.0.0.1:0 --http 127.0.0.1:0 >"$tmp/mesh.log" 2>&1 &
mesh_pid=$!
for _ in $(seq 300); do
  [ -s "$data_dir/daemon.json" ] && break
  if ! kill -0 "$mesh_pid" 2>/dev/null; then
    show_log "mesh up" "$tmp/mesh.log"
    echo "mesh up exited before writing daemon.json" >&2
    exit 1
  fi
  sleep 0.1
done
if [ ! -s "$data_dir/daemon.json" ]; then
  show_log "mesh up" "$tmp/mesh.log"
  echo "no $data_dir/daemon.json after 30s" >&2
  exit 1
fi
mesh_url="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["http_url"].rstrip("/"))' "$data_dir/daemon.json")"
mesh_host="hello.localhost"
echo "== mesh ingress at $mesh_url (Host: $mesh_host)"

# The loopback baseline of the hop is a local server: open it to guests.
"$mesh" env update default --reach "127.0.0.1/32" >/dev/null
"$mesh" svc create -n hello --instances 4 -- "$app" server
"$mesh" svc publish -n hello --endpoint hello
"$mesh" svc create -n fresh --instances 4 --fresh-per-request -- "$app" server
"$mesh" svc publish -n fresh --endpoint fresh
"$mesh" svc create --stack finance -n payments --instances 4 -- "$payments"
"$mesh" svc create --stack finance -n payfresh --instances 4 --fresh-per-request -- payments

# ----------------------------------------------------------- readiness ----
# wait_ok NAME URL HOST LOG PID: until GET URL/ answers 200 (60s at most).
wait_ok() {
  local name="$1" url="$2" host="$3" log="$4" pid="$5" code=""
  local -a hdr=()
  [ -n "$host" ] && hdr=(-H "Host: $host")
  for _ in $(seq 120); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${hdr[@]}" "$url/" || true)"
    [ "$code" = 200 ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  show_log "$name" "$log"
  echo "$name did not answer GET $url/ with 200 (last status: ${code:-none})" >&2
  return 1
}

failed=0
wait_ok "nginx" "$nginx_url" "" "$tmp/nginx.log" "$nginx_pid" || failed=1
wait_ok "wasmtime serve" "$wasmtime_url" "" "$tmp/wasmtime.log" "$wasmtime_pid" || failed=1
wait_ok "mesh" "$mesh_url" "$mesh_host" "$tmp/mesh.log" "$mesh_pid" || failed=1
wait_ok "mesh fresh" "$mesh_url" "fresh.localhost" "$tmp/mesh.log" "$mesh_pid" || failed=1
if [ "$failed" -ne 0 ]; then
  exit 1
fi

# ----------------------------------------------------------------- wrk ----
# Latency as printed by wrk (e.g. 812.00us, 1.23ms, 1.01s) -> milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n
  }'
}

# bench NAME URL HOST: warm-up, then the measured run; sets the globals
# rps, p50, p99 (ms) and errs (non-2xx/3xx + socket errors).
bench() {
  local name="$1" url="$2" host="$3" out
  local -a hdr=()
  [ -n "$host" ] && hdr=(-H "Host: $host")
  echo "== $name: warm-up (wrk -t2 -c16 -d2s)"
  wrk -t2 -c16 -d2s "${hdr[@]}" "$url/" >/dev/null
  echo "== $name: wrk -t2 -c$CONNS -d$DURATION --latency $url/"
  out="$(wrk -t2 -c"$CONNS" -d"$DURATION" --latency "${hdr[@]}" "$url/")"
  echo "$out" | sed 's/^/  /'
  rps="$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')"
  p50="$(echo "$out" | awk '$1 == "50%" {print $2}')"
  p99="$(echo "$out" | awk '$1 == "99%" {print $2}')"
  errs="$(echo "$out" | awk '
    /Non-2xx or 3xx responses:/ {n += $NF}
    /Socket errors:/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) n += $i}
    END {print n + 0}')"
  if [ -z "$rps" ] || [ -z "$p50" ] || [ -z "$p99" ]; then
    echo "could not parse wrk output for $name" >&2
    return 1
  fi
  p50="$(to_ms "$p50")"
  p99="$(to_ms "$p99")"
}

bench "nginx" "$nginx_url" "" || failed=1
n_rps="${rps:-}" n_p50="${p50:-}" n_p99="${p99:-}" n_errs="${errs:-}"
rps="" p50="" p99="" errs=""
bench "wasmtime serve" "$wasmtime_url" "" || failed=1
w_rps="${rps:-}" w_p50="${p50:-}" w_p99="${p99:-}" w_errs="${errs:-}"
rps="" p50="" p99="" errs=""
bench "mesh" "$mesh_url" "$mesh_host" || failed=1
m_rps="${rps:-}" m_p50="${p50:-}" m_p99="${p99:-}" m_errs="${errs:-}"
rps="" p50="" p99="" errs=""
bench "mesh fresh" "$mesh_url" "fresh.localhost" || failed=1
f_rps="${rps:-}" f_p50="${p50:-}" f_p99="${p99:-}" f_errs="${errs:-}"

# ------------------------------------------------------------- summary ----
echo
echo "== summary: GET / with wrk -t2 -c$CONNS -d$DURATION"
printf '%-16s %12s %10s %10s %8s\n' target req/s p50-ms p99-ms errors
printf '%-16s %12s %10s %10s %8s\n' "nginx" "${n_rps:--}" "${n_p50:--}" "${n_p99:--}" "${n_errs:--}"
printf '%-16s %12s %10s %10s %8s\n' "wasmtime serve" "${w_rps:--}" "${w_p50:--}" "${w_p99:--}" "${w_errs:--}"
printf '%-16s %12s %10s %10s %8s\n' "mesh (reused)" "${m_rps:--}" "${m_p50:--}" "${m_p99:--}" "${m_errs:--}"
printf '%-16s %12s %10s %10s %8s\n' "mesh (fresh)" "${f_rps:--}" "${f_p50:--}" "${f_p99:--}" "${f_errs:--}"
if [ -n "$w_rps" ] && [ -n "$m_rps" ] && [ -n "$f_rps" ]; then
  awk -v m="$m_rps" -v f="$f_rps" -v w="$w_rps" 'BEGIN {
    if (w > 0) {
      printf "mesh reused instances / wasmtime serve req/s: %.2f\n", m / w
      printf "mesh fresh per request / wasmtime serve req/s: %.2f\n", f / w
    }
  }'
fi
if [ -n "$n_rps" ] && [ -n "$m_rps" ]; then
  awk -v m="$m_rps" -v n="$n_rps" 'BEGIN { if (n > 0) printf "mesh reused instances / nginx req/s: %.2f\n", m / n }'
fi
for e in "${w_errs:-0}" "${m_errs:-0}" "${f_errs:-0}"; do
  if [ "$e" != 0 ]; then
    echo "warning: some requests got non-2xx/3xx answers or socket errors (see the wrk output above)" >&2
    break
  fi
done
# ----------------------------------------------------- intra-DNS hop ----
HOPS="${HOPS:-2000}"
[ "$DURATION" = 3s ] && HOPS=300
# hop NAME TARGET: per-call microseconds of N sequential calls from mesh's
# hello instance (after a warm-up of N/10).
hop() {
  local target="$2" out
  curl -s -H "Host: $mesh_host" "$mesh_url/hop?target=$target&n=$((HOPS / 10))" >/dev/null
  out="$(curl -s -H "Host: $mesh_host" "$mesh_url/hop?target=$target&n=$HOPS")"
  echo "$out" | awk -F': ' '/^per_hop_us/ {print $2}'
}
echo
echo "== intra-DNS hop: $HOPS sequential POST /payments from one mesh instance"
in_process="$(hop "in-process" "http://finance-payments/payments")"
in_fresh="$(hop "in-process fresh" "http://finance-payfresh/payments")"
loopback="$(hop "loopback TCP" "http://127.0.0.1:$payments_port/payments")"
printf '%-44s %10s\n' "call" "us/call"
printf '%-44s %10s\n' "in-process by name (reused instances)" "${in_process:--}"
printf '%-44s %10s\n' "in-process by name (fresh per request)" "${in_fresh:--}"
printf '%-44s %10s\n' "loopback TCP to wasmtime serve (baseline)" "${loopback:--}"
if [ -n "$in_process" ] && [ -n "$in_fresh" ] && [ -n "$loopback" ]; then
  awk -v a="$in_process" -v f="$in_fresh" -v l="$loopback" 'BEGIN {
    printf "loopback / in-process (reused): %.2fx faster by name\n", l / a
    printf "loopback / in-process (fresh):  %.2fx faster by name\n", l / f
  }'
else
  echo "intra-DNS hop: a measurement failed" >&2
  failed=1
fi
if [ -n "${RESULTS:-}" ]; then
  cat >"$RESULTS" <<FIGURES
conns=$CONNS
duration=$DURATION
nginx_rps=${n_rps:-}
nginx_p99_ms=${n_p99:-}
wasmtime_rps=${w_rps:-}
wasmtime_p99_ms=${w_p99:-}
mesh_reused_rps=${m_rps:-}
mesh_reused_p99_ms=${m_p99:-}
mesh_fresh_rps=${f_rps:-}
mesh_fresh_p99_ms=${f_p99:-}
hop_in_process_us=${in_process:-}
hop_in_process_fresh_us=${in_fresh:-}
hop_loopback_us=${loopback:-}
errors=$(( ${n_errs:-0} + ${w_errs:-0} + ${m_errs:-0} + ${f_errs:-0} ))
FIGURES
fi
exit "$failed"
