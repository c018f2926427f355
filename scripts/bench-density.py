#!/usr/bin/env python3
"""Density benchmark (scenario 5 of scripts/bench.sh): COUNT idle worker
instances (each its own store, blocked in a sleep) in one daemon: the
daemon's RSS per instance (and how much of it is shared pages of the code's
memory image), the time until all run, and `GET /v1/services` at that
count.

    bench-density.py MESH_BINARY WASM RESULTS_FILE [COUNT [COMMAND...]]

WASM is deployed as stack `app` (its component named after the file), and
each instance runs COMMAND (default: the component's name, then `sleep
100000000` for app.wasm). Starts its own daemon (`mesh up --max-instances
COUNT+100`) in a temporary data directory and stops it at the end. Past
about 10,000 instances the kernel's vm.max_map_count must be raised first
(the daemon says so; scripts/bench.sh does it). Writes KEY=VALUE lines to
RESULTS_FILE.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import benchd


def memory_kib(pid):
    """The daemon's RSS and, of it, shared memory (pages of the code's
    memory images, mapped by every instance that reads them)."""
    found = {}
    for line in open(f"/proc/{pid}/status"):
        key = line.split(":")[0]
        if key in ("VmRSS", "RssShmem"):
            found[key] = int(line.split()[1])
    if "VmRSS" not in found:
        raise SystemExit("no VmRSS")
    return found["VmRSS"], found.get("RssShmem", 0)


def main():
    mesh, wasm, results = sys.argv[1], sys.argv[2], sys.argv[3]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 10000
    component = os.path.splitext(os.path.basename(wasm))[0]
    command = sys.argv[5:] or ([component, "sleep", "100000000"] if component == "app"
                               else [component])
    data = tempfile.mkdtemp(prefix="mesh-density.")
    log = open(os.path.join(data, "..", f"{os.path.basename(data)}.log"), "w")
    daemon = subprocess.Popen(
        [mesh, "up", "--data-dir", data, "--api", "127.0.0.1:0", "--http", "127.0.0.1:0",
         "--max-instances", str(count + 100), "--container-network", "10.217.0.1/24"],
        stdout=log, stderr=log)
    try:
        info = benchd.wait_up(data, daemon)
        api, token = info["api_url"].rstrip("/"), info["token"]
        env = benchd.client_env(data)
        subprocess.run([mesh, "stack", "deploy", "app", wasm], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        time.sleep(1)
        before, shared_before = memory_kib(daemon.pid)

        def services():
            request = urllib.request.Request(api + "/v1/services",
                                             headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())

        started = time.monotonic()
        # A service holds at most 1,000 instances: as many services as needed.
        left, n = count, 0
        while left > 0:
            take = min(left, 1000)
            subprocess.run([mesh, "svc", "create", "-n", f"idle{n}", "--instances", str(take),
                            "--memory", "2Mi", "--", *command],
                           env=env, check=True, stdout=subprocess.DEVNULL)
            left, n = left - take, n + 1
        running = 0
        deadline = started + 600
        while time.monotonic() < deadline:
            listed = services()
            running = sum(1 for s in listed for i in s["instances"] if i["state"] == "running")
            if running >= count:
                break
            time.sleep(0.5)
        converged = time.monotonic() - started
        time.sleep(2)
        after, shared_after = memory_kib(daemon.pid)
        times = []
        for _ in range(5):
            t0 = time.monotonic()
            services()
            times.append((time.monotonic() - t0) * 1000)
        times.sort()
        per_instance = (after - before) / max(running, 1)
        shared_per_instance = (shared_after - shared_before) / max(running, 1)
        with open(results, "w") as out:
            out.write(f"command={' '.join(command)}\n")
            out.write(f"wasm_kib={os.path.getsize(wasm) // 1024}\n")
            out.write(f"shared_kib_per_instance={shared_per_instance:.1f}\n")
            out.write(f"instances={running}\n")
            out.write(f"asked={count}\n")
            out.write(f"kib_per_instance={per_instance:.1f}\n")
            out.write(f"converge_s={converged:.1f}\n")
            out.write(f"list_ms={times[len(times) // 2]:.1f}\n")
        print(f"density: {running} of {count} idle instances of `{' '.join(command)}` "
              f"({os.path.getsize(wasm) // 1024} KiB component) running after {converged:.1f}s, "
              f"{per_instance:.1f} KiB each, {shared_per_instance:.1f} of it shared "
              f"(daemon RSS {before} -> {after} KiB), "
              f"GET /v1/services {times[len(times) // 2]:.1f} ms")
    finally:
        benchd.stop(daemon)
        subprocess.run(["rm", "-rf", data])


if __name__ == "__main__":
    main()
