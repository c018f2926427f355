#!/usr/bin/env python3
"""Cold start of a large component (scenario 6 of scripts/bench.sh): how long
a large component (pyhello.wasm, 18.9 MB, componentize-py) takes from its
upload to its first answer, and from a daemon restart to its first answer,
beside `wasmtime serve` of the same file from its process start.

    bench-cold.py MESH_BINARY BIG_WASM RESULTS_FILE

Starts its own daemon in a temporary data directory, on an ingress port it
picks, and stops it at the end. Timed:
- upload_to_first_ms: `mesh svc create -n big --instances 1 -- BIG_WASM`
  (upload, checks, compile), `mesh svc publish -n big --endpoint big`, then
  GET / with `Host: big.localhost` every 5 ms until it answers 200;
  compile_ms is the compile inside it, as the daemon logs it;
- restart_to_first_ms: SIGTERM, then `mesh up` again on the same data
  directory and port (its compiled cache warm): from the process start to
  the first 200; restart_ready_ms: from daemon.json appearing to it.
  Median of RESTARTS (env, default 3) restarts;
- wasmtime_first_ms: `wasmtime serve -Scli -C cache=n` (WASMTIME, default
  /opt/wasmtime-48/bin/wasmtime) from its process start to the first 200;
  wasmtime_cached_first_ms: the same with its compile cache on, in a cache
  directory of its own (not the user's), after one run to fill it.
Writes KEY=VALUE lines to RESULTS_FILE (empty value: not measured).
"""
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import benchd

POLL_S = 0.005


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def first_ok(port, host, process, limit_s=300):
    """Polls GET / every 5 ms until 200: the monotonic time of that answer."""
    deadline = time.monotonic() + limit_s
    last = None
    while time.monotonic() < deadline:
        last = benchd.status(port, host)
        if last == 200:
            return time.monotonic()
        if process.poll() is not None:
            raise SystemExit(f"the server exited (code {process.returncode}) before answering 200")
        time.sleep(POLL_S)
    raise SystemExit(f"no 200 from 127.0.0.1:{port} (Host {host}) in {limit_s}s (last: {last})")


def main():
    mesh, big, results = sys.argv[1], sys.argv[2], sys.argv[3]
    restarts = int(os.environ.get("RESTARTS", "3"))
    wasmtime = os.environ.get("WASMTIME", "/opt/wasmtime-48/bin/wasmtime")
    data = tempfile.mkdtemp(prefix="mesh-cold.")
    log_path = os.path.join(data, "..", f"{os.path.basename(data)}.log")
    log = open(log_path, "w")
    port = free_port()
    daemon_env = dict(os.environ)
    # The first upload must compile: no code from a cache shared by others.
    daemon_env.pop("MESH_SHARED_CACHE", None)

    def up():
        return subprocess.Popen(
            [mesh, "up", "--data-dir", data, "--api", "127.0.0.1:0",
             "--http", f"127.0.0.1:{port}", "--container-network", "10.218.0.1/24"],
            stdout=log, stderr=log, env=daemon_env)

    daemon = up()
    others = []
    try:
        benchd.wait_up(data, daemon)
        env = benchd.client_env(data)

        # (a) Upload to first answer.
        started = time.monotonic()
        subprocess.run([mesh, "svc", "create", "-n", "big", "--instances", "1", "--", big],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        created = time.monotonic()
        subprocess.run([mesh, "svc", "publish", "-n", "big", "--endpoint", "big"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        answered = first_ok(port, "big.localhost", daemon)
        upload_to_first = (answered - started) * 1000
        create_ms = (created - started) * 1000
        log.flush()
        compile_ms = ""
        # The daemon's log line: `compiled code component="pyhello.wasm" ... took=12.3s`.
        text = re.sub(r"\x1b\[[0-9;]*m", "", open(log_path).read())
        took = re.search(r"compiled code.*took=([0-9.]+)(ns|µs|us|ms|s)\b", text)
        if took:
            scale = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1000.0}[took.group(2)]
            compile_ms = f"{float(took.group(1)) * scale:.1f}"

        # (b) Restarts, on a warm compiled cache.
        to_first, ready = [], []
        for _ in range(restarts):
            benchd.stop(daemon)
            # The daemon removes daemon.json on a clean exit; should one be
            # left behind, its appearing would be seen too early.
            if os.path.exists(f"{data}/daemon.json"):
                os.remove(f"{data}/daemon.json")
            seen = {}
            done = threading.Event()

            def watch():
                while not done.is_set():
                    if os.path.exists(f"{data}/daemon.json"):
                        seen["at"] = time.monotonic()
                        return
                    time.sleep(0.001)

            watcher = threading.Thread(target=watch)
            started = time.monotonic()
            daemon = up()
            watcher.start()
            try:
                answered = first_ok(port, "big.localhost", daemon, limit_s=120)
            finally:
                done.set()
                watcher.join()
            to_first.append((answered - started) * 1000)
            if "at" in seen:
                ready.append((answered - seen["at"]) * 1000)
        restart_to_first = statistics.median(to_first)
        restart_ready = statistics.median(ready) if ready else None
        # The peer runs on a quiet machine.
        benchd.stop(daemon)

        # The peer: wasmtime serve of the same file, uncached and cached.
        wasmtime_first = wasmtime_cached = None
        if os.access(wasmtime, os.X_OK):
            tmp = tempfile.mkdtemp(prefix="mesh-cold-wasmtime.")
            others.append(tmp)
            cache_config = os.path.join(tmp, "cache.toml")
            with open(cache_config, "w") as out:
                out.write(f'[cache]\ndirectory = "{os.path.join(tmp, "cache")}"\n')

            def serve(codegen):
                wport = free_port()
                started = time.monotonic()
                process = subprocess.Popen(
                    [wasmtime, "serve", "-Scli", "-C", codegen, "--addr", f"127.0.0.1:{wport}", big],
                    stdout=subprocess.DEVNULL, stderr=log)
                try:
                    return (first_ok(wport, None, process) - started) * 1000
                except SystemExit as e:
                    print(f"wasmtime serve ({codegen}): {e}", file=sys.stderr)
                    return None
                finally:
                    benchd.stop(process)

            wasmtime_first = serve("cache=n")
            serve(f"cache=y,cache-config={cache_config}")  # fills the cache
            if any(files for _, _, files in os.walk(os.path.join(tmp, "cache"))):
                wasmtime_cached = serve(f"cache=y,cache-config={cache_config}")

        def show(v):
            return "" if v is None else f"{v:.1f}"

        with open(results, "w") as out:
            out.write(f"upload_to_first_ms={upload_to_first:.1f}\n")
            out.write(f"create_ms={create_ms:.1f}\n")
            out.write(f"compile_ms={compile_ms}\n")
            out.write(f"restart_to_first_ms={restart_to_first:.1f}\n")
            out.write(f"restart_ready_ms={show(restart_ready)}\n")
            out.write(f"restarts={len(to_first)}\n")
            out.write(f"wasmtime_first_ms={show(wasmtime_first)}\n")
            out.write(f"wasmtime_cached_first_ms={show(wasmtime_cached)}\n")
        print(f"cold start ({os.path.getsize(big) / 1e6:.1f} MB component): upload to first answer "
              f"{upload_to_first:.0f} ms (svc create {create_ms:.0f} ms, compile {compile_ms or '?'} ms); "
              f"restart to first answer {restart_to_first:.1f} ms, {show(restart_ready)} ms after "
              f"daemon.json (median of {len(to_first)}: "
              f"{', '.join(f'{t:.1f}' for t in to_first)}); wasmtime serve {show(wasmtime_first) or '-'} ms, "
              f"cached {show(wasmtime_cached) or '-'} ms")
    finally:
        benchd.stop(daemon)
        subprocess.run(["rm", "-rf", data, *others])


if __name__ == "__main__":
    main()
