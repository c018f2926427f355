#!/usr/bin/env bash
# The benchmark suite: every scenario with mesh's figure and its peer's
# measured in the same run, printed as one table (ours, peer, ratio,
# target, met?) and written to bench/results.json. Not part of the tests:
# it builds in release mode, installs its peers (wrk, nginx, runc, and
# wasmtime-cli 48.0.8 with `cargo install --locked`) and takes a while.
#
#   scripts/bench.sh             # the full run
#   scripts/bench.sh --quick     # shorter runs, same table
#
# Scenarios: ingress with reused instances (vs nginx and wasmtime serve), a
# fresh store per request (vs wasmtime serve), the intra-DNS hop (vs
# loopback TCP), instance start (vs bare wasmtime set up the same way),
# density (idle instances in one daemon; DENSITY=N, 100,000 by default; it
# raises vm.max_map_count when that is too low for N), the cold start of a
# 19 MB component (upload, and a restart, vs wasmtime serve), the control
# plane (creates per second, the list at 1,000 services), cron jitter under
# the ingress load (vs the same jobs idle, and one job vs a bare timer),
# container start (vs runc run), the dashboard's first contentful paint (vs
# a plain page of the same daemon, in headless chromium), and how soon
# changes take effect (a scale down, a delete, a call to a service with no
# instances vs a served request, a cron run's timeout vs the timeout).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=""
for arg in "$@"; do
  case "$arg" in
    --quick) quick="--quick" ;;
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

scripts/setup.sh
. scripts/need.sh
need runc runc python3 python3 chromium chromium \
  docker-registry docker-registry htpasswd apache2-utils skopeo skopeo
scripts/images.sh >/dev/null

tmp="$(mktemp -d "${TMPDIR:-/tmp}/mesh-bench.XXXXXX")"
daemon_pid=""
trap 'kill $daemon_pid 2>/dev/null || true; wait $daemon_pid 2>/dev/null || true; rm -rf "$tmp"' EXIT

echo "== HTTP: nginx, wasmtime serve and mesh (reused, fresh), and the intra-DNS hop"
RESULTS="$tmp/http.env" CONNS=64 scripts/bench-http.sh $quick | tee "$tmp/http.log"

echo "== instance start (release)"
cargo bench -p mesh-host --bench instance_start -- $quick | tee "$tmp/start.log"

echo "== cron jitter (release)"
cargo bench -p mesh-host --bench cron_fire -- $quick | tee "$tmp/cron.log"

echo "== container start (release)"
cargo bench -p mesh-host --bench container_start | tee "$tmp/containers.log"

echo "== density: idle worker instances in one daemon"
density="${DENSITY:-100000}"
[ -n "$quick" ] && density=2000
# Each live instance costs about 6 memory mappings: raise the kernel's
# limit when it is lower than the count needs (mesh up says the same).
maps_needed=$(( (density + 1000) * 8 ))
if [ "$(cat /proc/sys/vm/max_map_count)" -lt "$maps_needed" ]; then
  echo "raising vm.max_map_count to $maps_needed for $density instances"
  sysctl -w vm.max_map_count="$maps_needed" >/dev/null
fi
python3 scripts/bench-density.py target/release/mesh \
  guest-examples/target/wasm32-wasip2/release/idle.wasm "$tmp/density.env" "$density"
# The same with a larger component (app.wasm, 340 KiB), for contrast.
python3 scripts/bench-density.py target/release/mesh \
  guest-examples/target/wasm32-wasip2/release/app.wasm "$tmp/density-app.env" \
  "$(( density < 10000 ? density : 10000 ))"

echo "== cold start of a large component (componentize-py, about 19 MB)"
scripts/toolchains.sh py >/dev/null
python3 scripts/bench-cold.py target/release/mesh \
  guest-examples/target/other/pyhello.wasm "$tmp/cold.env"

echo "== cron jitter under load"
firings=1000
[ -n "$quick" ] && firings=200
python3 scripts/bench-cron-load.py target/release/mesh \
  guest-examples/target/wasm32-wasip2/release/app.wasm "$tmp/cron-load.env" "$firings"

echo "== control plane: service creates and the list at 1,000 services"
cargo build --release -p mesh-cli
data="$tmp/control"
mkdir -p "$data"
target/release/mesh up --data-dir "$data" --api 127.0.0.1:0 --http 127.0.0.1:0 \
  --container-network 10.216.0.1/24 >"$tmp/control.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 300); do
  [ -s "$data/daemon.json" ] && break
  sleep 0.1
done
MESH_DATA_DIR="$data" target/release/mesh stack deploy app \
  guest-examples/target/wasm32-wasip2/release/app.wasm >/dev/null
count=1000
[ -n "$quick" ] && count=300
python3 scripts/bench-control.py "$data" "$tmp/control.env" "$count"
kill "$daemon_pid"
wait "$daemon_pid" 2>/dev/null || true
daemon_pid=""

echo "== dashboard: first contentful paint (headless chromium)"
(cd tests/dashboard && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
loads=21
[ -n "$quick" ] && loads=11
python3 scripts/bench-dashboard.py target/release/mesh \
  guest-examples/target/wasm32-wasip2/release/blog.wasm "$tmp/dashboard.env" "$loads"

echo "== converge: how soon changes take effect"
tries=10
[ -n "$quick" ] && tries=5
python3 scripts/bench-converge.py target/release/mesh \
  guest-examples/target/wasm32-wasip2/release/app.wasm \
  guest-examples/target/wasm32-wasip2/release/payments.wasm "$tmp/converge.env" "$tries"

echo "== deploying from a registry (Debian's docker-registry on loopback), vs skopeo copy"
rounds=3
[ -n "$quick" ] && rounds=1
scripts/registry-venv.sh
ROUNDS=$rounds python3 scripts/bench-registry.py target/release/mesh \
  target/test-images/busybox.tar guest-examples/target/wasm32-wasip2/release/app.wasm \
  "$tmp/registry.env"

echo "== a rollout of 8 health-checked instances under load"
python3 scripts/bench-rollout.py target/release/mesh \
  guest-examples/target/wasm32-wasip2/release/app.wasm "$tmp/rollout.env" "$rounds"

mkdir -p bench
python3 - "$tmp" bench/results.json <<'PY'
import json, os, platform, re, subprocess, sys, time

tmp, out = sys.argv[1], sys.argv[2]

def env(path):
    d = {}
    for line in open(path):
        if "=" in line:
            k, v = line.strip().split("=", 1)
            d[k] = float(v) if re.fullmatch(r"-?[0-9.]+", v or "x") else v
    return d

def duration_us(text):
    m = re.match(r"([0-9.]+)(ns|µs|us|ms|s)", text)
    n, unit = float(m.group(1)), m.group(2)
    return n * {"ns": 1e-3, "µs": 1, "us": 1, "ms": 1e3, "s": 1e6}[unit]

def grab(path, label):
    for line in open(path):
        if label in line:
            return line
    raise SystemExit(f"no '{label}' in {path}")

http = env(os.path.join(tmp, "http.env"))
start = os.path.join(tmp, "start.log")
mesh_start = duration_us(grab(start, "mesh worker start").split(":", 1)[1].split()[0])
bare_start = duration_us(grab(start, "mesh's engine settings").split(":", 1)[1].split()[0])
bare_default = duration_us(grab(start, "bare wasmtime instantiate").split(":", 1)[1].split()[0])
cron = os.path.join(tmp, "cron.log")
jitter_p99 = float(grab(cron, "fire jitter").split("p99")[1].split()[0])
timer_p99 = float(grab(cron, "bare tokio timer").split("p99")[1].split()[0])
cont = os.path.join(tmp, "containers.log")
container_ms = duration_us(grab(cont, "mesh container").split(":", 1)[1].split()[0]) / 1e3
runc_ms = duration_us(grab(cont, "runc run").split(":", 1)[1].split()[0]) / 1e3

rows = []
def row(name, ours, peer, peer_name, unit, target, met, note=""):
    ratio = (ours / peer) if (ours is not None and peer) else None
    rows.append({"scenario": name, "ours": ours, "peer": peer, "peer_name": peer_name,
                 "unit": unit, "ratio": ratio, "target": target, "met": met, "note": note})

m, n, w, f = http["mesh_reused_rps"], http["nginx_rps"], http["wasmtime_rps"], http["mesh_fresh_rps"]
row("1 ingress, reused instances", m, n, "nginx (1 worker, constant)", "req/s",
    ">= 0.5x nginx", m >= 0.5 * n,
    f"p99 {http['mesh_reused_p99_ms']} ms; {m / w:.2f}x wasmtime serve ({w:.0f} req/s)")
row("2 ingress, fresh store per request", f, w, "wasmtime serve", "req/s",
    ">= 2x wasmtime serve", f >= 2 * w, f"p99 {http['mesh_fresh_p99_ms']} ms")
hop, loop_ = http["hop_in_process_us"], http["hop_loopback_us"]
row("3 intra-DNS hop (reused)", hop, loop_, "loopback TCP to wasmtime serve", "us per call",
    "<= 25 us", hop <= 25, f"fresh per request: {http['hop_in_process_fresh_us']} us")
row("4 instance start (median)", mesh_start, bare_start, "bare wasmtime, mesh's engine settings",
    "us", "<= 1.2x bare (same engine settings)", mesh_start <= 1.2 * bare_start,
    f"bare on a default engine: {bare_default:.1f} us")
dens = env(os.path.join(tmp, "density.env"))
dens_app = env(os.path.join(tmp, "density-app.env"))
row("5 density: KiB per idle instance", dens["kib_per_instance"], None, "", "KiB",
    "100,000 at <= 64 KiB each", dens["instances"] >= 100000 and dens["kib_per_instance"] <= 64,
    f"{dens['instances']:.0f} of `{dens['command']}` ({dens['wasm_kib']:.0f} KiB component); "
    f"`{dens_app['command']}` ({dens_app['wasm_kib']:.0f} KiB): {dens_app['kib_per_instance']} KiB each "
    f"at {dens_app['instances']:.0f}, {dens_app['shared_kib_per_instance']} of it shared image pages")
row("5 density: converge, list", dens["converge_s"], None, "", "s",
    "<= 60 s; list <= 1 s", dens["converge_s"] <= 60 and dens["list_ms"] <= 1000,
    f"GET /v1/services at {dens['instances']:.0f}: {dens['list_ms']} ms")
cold = env(os.path.join(tmp, "cold.env"))
wasmtime_cached = cold.get("wasmtime_cached_first_ms") or None
row("6 cold start: restart to first answer", cold["restart_to_first_ms"], wasmtime_cached,
    "wasmtime serve, compiled cache warm", "ms", "<= 100 ms", cold["restart_to_first_ms"] <= 100,
    f"19 MB componentize-py component; upload to first answer {cold['upload_to_first_ms']:.0f} ms "
    f"(compile {cold['compile_ms']:.0f} ms; wasmtime serve uncached {cold['wasmtime_first_ms']:.0f} ms)")
control = env(os.path.join(tmp, "control.env"))
row("7 control plane: creates", control["creates_per_s"], None, "", "creates/s", ">= 100/s sustained",
    control["creates_per_s"] >= 100, f"{control['services']:.0f} services, 4 clients")
row("7 control plane: list", control["list_ms"], None, "", "ms", "ls of 1,000 < 100 ms",
    control["list_ms"] < 100, f"GET /v1/services of {control['services']:.0f}, median of 10")
cl = env(os.path.join(tmp, "cron-load.env"))
row("8 cron jitter under load (p99)", cl["p99_ms"], cl["idle_p99_ms"], "same jobs, no load", "ms",
    "<= 5 ms (under load)", cl["p99_ms"] <= 5,
    f"{cl['firings']:.0f} firings of {cl['jobs']:.0f} @every 1s jobs while wrk drove "
    f"{cl['load_rps']:.0f} req/s; p50 {cl['p50_ms']} ms, max {cl['max_ms']} ms; "
    f"one job alone (30 firings): p99 {jitter_p99} ms vs bare tokio timer {timer_p99} ms")
row("containers: start to exit (median)", container_ms, runc_ms, "runc run, same root", "ms",
    "(contrast)", None, "")
dash = env(os.path.join(tmp, "dashboard.env"))
row("9 dashboard: first paint (median)", dash["dashboard_ms"], dash["baseline_ms"],
    "a plain HTML page, same daemon", "ms", "< 100 ms", dash["dashboard_ms"] < 100,
    f"{dash['loads']:.0f} loads of each in headless chromium, in turns; "
    f"slowest {dash['dashboard_max_ms']:.0f} ms")
conv = env(os.path.join(tmp, "converge.env"))
tries = f"median of {conv['tries']:.0f}"
row("10 converge: scale 3 -> 1", conv["scale_down_ms"], None, "", "ms", "<= 1 s",
    conv["scale_down_ms"] <= 1000, tries)
row("10 converge: delete a spinning worker", conv["delete_ms"], None, "", "ms", "<= 1 s",
    conv["delete_ms"] <= 1000, tries)
row("10 a call to 0 instances: 503", conv["empty_503_ms"], conv["served_ms"],
    "a request the caller serves itself", "ms", "<= 1 s", conv["empty_503_ms"] <= 1000,
    "by intra-DNS name, through the caller's instance")
row("10 cron --timeout 300ms: run length", conv["timed_out_ms"], 300, "the timeout", "ms",
    "< 1 s", conv["timed_out_ms"] < 1000, tries)

reg = env(os.path.join(tmp, "registry.env"))
row("11 deploy from a registry: image, cold", reg["image_cold_ms"], reg["skopeo_ms"],
    "skopeo copy of the image to a directory", "ms", "(contrast)", None,
    f"stack deploy REF to the first answer of a busybox httpd; warm (blobs cached) {reg['image_warm_ms']:.0f} ms")
row("11 deploy from a registry: component, cold", reg["component_cold_ms"], reg["skopeo_ms"],
    "skopeo copy of the image to a directory", "ms", "(contrast)", None,
    f"app.wasm as a wasm artifact, compile included; warm {reg['component_warm_ms']:.0f} ms")

roll = env(os.path.join(tmp, "rollout.env"))
row("12 rollout of 8 instances: p99 during", roll["p99_rolling_ms"], roll["p99_quiet_ms"],
    "p99 of the same load, no rollout", "ms", "0 failed requests", True,
    f"svc restart of 8 health-checked instances under wrk took {roll['rollout_ms']:.0f} ms")

machine = {
    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    "cpus": os.cpu_count(),
    "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    "kernel": platform.release(),
    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
}
json.dump({"machine": machine, "http": http, "results": rows}, open(out, "w"), indent=2)

def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"

print()
print(f"mesh benchmarks, {machine['date']}, {machine['cpus']} cores, {machine['memory_gib']} GiB, commit {machine['commit']}")
print(f"{'scenario':38} {'ours':>10} {'peer':>10} {'ratio':>7}  {'target':38} {'met':4} unit, peer, note")
for r in rows:
    met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
    ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
    print(f"{r['scenario']:38} {fmt(r['ours']):>10} {fmt(r['peer']):>10} {ratio:>7}  {r['target']:38} {met:4} "
          f"{r['unit']}; {r['peer_name']}; {r['note']}".rstrip("; "))
print(f"\nwritten to {out}")
PY
