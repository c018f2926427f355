#!/usr/bin/env bash
# Soak: one tenant's web service under full-speed load while another tenant
# misbehaves, and the service is scaled and redeployed meanwhile. Not part
# of CI (it runs for minutes at full load).
#
#   1. baseline: wrk against the victim's `web` (4 instances) alone;
#   2. then, for DURATION: wrk against `web` again while tenant `noisy`
#      keeps 8 requests spinning in its guests (`/spin?ms=2000`) and a
#      worker flooding its log, and `web` is scaled to 6 instances, rolled
#      to new settings, and scaled back to 4.
#
# Prints the victim's requests by status (only 503s, documented as the
# answer when every instance is busy, are allowed), its p50/p99 latency
# next to the baseline's against the targets (p50 within 1.25x, p99
# within 2x, no failed request), and the daemon's RSS before and after.
# Exits non-zero on any failure but 503s. Traffic goes to 127.0.0.1 only.
#
#   scripts/soak.sh                 # 60s soak (BASELINE 15s first)
# Env: DURATION (default 60), BASELINE (default 15), CONNS (default 32).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-60}"
BASELINE="${BASELINE:-15}"
CONNS="${CONNS:-32}"

scripts/setup.sh
if ! command -v wrk >/dev/null; then
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
cargo build --release -p mesh-cli
mesh="$PWD/target/release/mesh"
app="$PWD/guest-examples/target/wasm32-wasip2/release/app.wasm"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/mesh-soak.XXXXXX")"
data_dir="$tmp/data"
mkdir -p "$data_dir"
pids=""
cleanup() {
  local rc=$?
  for pid in $pids; do kill "$pid" 2>/dev/null || true; done
  for pid in $pids; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

unset MESH_API_URL MESH_TOKEN
export MESH_DATA_DIR="$data_dir"
"$mesh" up --data-dir "$data_dir" --api 127.0.0.1:0 --http 127.0.0.1:0 >"$tmp/mesh.log" 2>&1 &
mesh_pid=$!
pids="$mesh_pid"
for _ in $(seq 300); do
  [ -s "$data_dir/daemon.json" ] && break
  sleep 0.1
done
field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$data_dir/daemon.json" "$1"; }
http_url="$(field http_url)"
api_url="$(field api_url)"
rss() { awk '/VmRSS/ { print int($2 / 1024) }' "/proc/$mesh_pid/status"; }

# The victim: the operator's own web service.
"$mesh" svc create -n web --instances 4 -- "$app" server >/dev/null
"$mesh" svc publish -n web --endpoint www >/dev/null
# The noisy tenant.
noisy_token="$("$mesh" env create noisy --max-instances 12 --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"
as_noisy() { MESH_API_URL="$api_url" MESH_TOKEN="$noisy_token" "$mesh" "$@"; }
as_noisy svc create -n spin --instances 8 -- "$app" server >/dev/null
as_noisy svc publish -n spin --endpoint spin >/dev/null
as_noisy svc create -n flood --instances 2 -- "$app" flood >/dev/null
sleep 2

# wrk: statuses counted across threads, latency percentiles in microseconds.
cat >"$tmp/count.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do total[status] = (total[status] or 0) + n end
  end
  for status, n in pairs(total) do io.write(string.format("status %d %d\n", status, n)) end
  io.write(string.format("errors %d\n", summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout))
  io.write(string.format("requests %d\n", summary.requests))
  io.write(string.format("p50_us %d\np99_us %d\n", latency:percentile(50), latency:percentile(99)))
end
LUA
victim() {
  wrk -t2 -c"$CONNS" -d"$1"s --timeout 10s -s "$tmp/count.lua" -H "Host: www.localhost" "$http_url/"
}
value() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }

echo "== baseline: ${BASELINE}s of wrk against www.localhost, nothing else running"
rss_before="$(rss)"
victim "$BASELINE" >"$tmp/baseline.txt"

echo "== soak: ${DURATION}s of wrk while tenant noisy spins 8 guests and floods its log"
wrk -t1 -c8 -d"$((DURATION + 5))"s --timeout 10s -H "Host: spin.noisy.localhost" "$http_url/spin?ms=2000" >"$tmp/noisy.txt" 2>&1 &
noisy_pid=$!
pids="$pids $noisy_pid"
victim "$DURATION" >"$tmp/soak.txt" &
victim_pid=$!
step=$((DURATION / 4))
sleep "$step"; "$mesh" svc update web --instances 6 >/dev/null && echo "   scaled web to 6"
sleep "$step"; "$mesh" svc update web --env ROLL=1 >/dev/null && echo "   rolled web to new settings"
sleep "$step"; "$mesh" svc update web --instances 4 >/dev/null && echo "   scaled web back to 4"
wait "$victim_pid"
kill "$noisy_pid" 2>/dev/null || true
wait "$noisy_pid" 2>/dev/null || true
rss_after="$(rss)"

echo
python3 - "$tmp/baseline.txt" "$tmp/soak.txt" "$BASELINE" "$DURATION" <<'PY'
import sys
def read(path):
    return {l.split()[0]: int(l.split()[1]) for l in open(path) if l.split()[0] in ("requests", "p50_us", "p99_us")}
base, soak = read(sys.argv[1]), read(sys.argv[2])
print(f"{'':10} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
for name, r, secs in (("baseline", base, int(sys.argv[3])), ("soak", soak, int(sys.argv[4]))):
    print(f"{name:10} {r['requests'] / secs:>10.0f} {r['p50_us'] / 1000:>9.2f} {r['p99_us'] / 1000:>9.2f}")
p50 = soak['p50_us'] / base['p50_us']
p99 = soak['p99_us'] / base['p99_us']
print(f"ratio soak / baseline: p50 {p50:.2f}x (target <= 1.25x: {'met' if p50 <= 1.25 else 'MISSED'}), "
      f"p99 {p99:.2f}x (target <= 2x: {'met' if p99 <= 2 else 'MISSED'})")
PY
echo "victim answers by status during the soak:"
grep '^status' "$tmp/soak.txt" | sort -k2 -n | sed 's/^status /  /'
echo "  connection errors: $(value errors "$tmp/soak.txt")"
failed="$(awk '$1 == "status" && $2 != 200 { n += $3 } END { print n + 0 }' "$tmp/soak.txt")"
echo "  failed requests (not 200): $failed (target 0: $([ "$failed" -eq 0 ] && echo met || echo MISSED))"
echo "daemon RSS: ${rss_before} MiB before, ${rss_after} MiB after"
bad="$(awk '$1 == "status" && $2 != 200 && $2 != 503 { n += $3 } END { print n + 0 }' "$tmp/soak.txt")"
errors="$(value errors "$tmp/soak.txt")"
if [ "$bad" -ne 0 ] || [ "$errors" -ne 0 ]; then
  echo "FAILED: $bad answers other than 200/503 and $errors connection errors" >&2
  tail -n 20 "$tmp/mesh.log" >&2
  exit 1
fi
echo "ok: no failures but documented 503s"
