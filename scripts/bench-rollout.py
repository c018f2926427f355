#!/usr/bin/env python3
"""A rollout under load: how long `mesh svc restart` of a web service of 8
instances (each new one health-checked before an old one goes) takes, and
the p99 latency wrk sees during it, next to the p99 of the same load with
no rollout, in the same run.

    bench-rollout.py MESH_BINARY APP_WASM RESULTS_FILE [ROUNDS]

Starts a mesh daemon of its own, `web` = `app server` with 8 instances and
`--health /healthz --health-interval 1s`, published at www.localhost. Each
round: wrk (1 thread, 16 connections, --latency) for 4 s with no rollout,
then 4 s during which `mesh svc restart web` runs (started 0.5 s in; it
returns once the last old instance is gone). Medians of ROUNDS (default 3)
rounds. Writes KEY=VALUE lines to RESULTS_FILE and prints a table; fails
when wrk saw any non-2xx answer or socket error during a rollout.
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import benchd

INSTANCES = 8
SECONDS = 4


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {out.stdout}{out.stderr}")
    return out.stdout


def ms(text):
    """wrk's latency (`812.00us`, `1.20ms`, `2.00s`) in ms."""
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port, seconds):
    out = run(["wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", "--timeout", "5s",
               "-H", "Host: www.localhost", f"http://127.0.0.1:{port}/"])
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: .*", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {"p99": p99, "p50": p50, "requests": requests,
            "non2xx": int(errors.group(1)) if errors else 0,
            "socket": socket.group(0) if socket else None}


def main():
    mesh, app, results = sys.argv[1:4]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    data = tempfile.mkdtemp(prefix="mesh-bench-rollout.")
    log = open(os.path.join(data, "daemon.log"), "w")
    daemon = subprocess.Popen([mesh, "up", "--data-dir", data, "--api", "127.0.0.1:0",
                               "--http", "127.0.0.1:0", "--container-network", "none"],
                              stdout=log, stderr=log)
    try:
        info = benchd.wait_up(data, daemon)
        env = benchd.client_env(data)
        port = benchd.ingress_port(info)
        run([mesh, "svc", "create", "-n", "web", "--instances", str(INSTANCES),
             "--health", "/healthz", "--health-interval", "1s", "--", app, "server"], env=env)
        run([mesh, "svc", "publish", "-n", "web", "--endpoint", "www"], env=env)
        deadline = time.monotonic() + 30
        while benchd.status(port, "www.localhost") != 200:
            if time.monotonic() > deadline:
                raise SystemExit("web never answered")
            time.sleep(0.05)
        quiet, rolling, took = [], [], []
        for _ in range(rounds):
            quiet.append(wrk(port, SECONDS))
            timing = {}

            def restart():
                time.sleep(0.5)
                started = time.monotonic()
                run([mesh, "svc", "restart", "-n", "web"], env=env)
                timing["ms"] = (time.monotonic() - started) * 1000

            thread = threading.Thread(target=restart)
            thread.start()
            seen = wrk(port, SECONDS)
            thread.join()
            if seen["non2xx"] or seen["socket"]:
                raise SystemExit(f"failed requests during a rollout: {seen}")
            rolling.append(seen)
            took.append(timing["ms"])
    finally:
        benchd.stop(daemon)
        log.close()
        shutil.rmtree(data, ignore_errors=True)
    med = lambda rows, k: statistics.median(r[k] for r in rows)
    values = {
        "rollout_ms": round(statistics.median(took), 1),
        "p99_quiet_ms": round(med(quiet, "p99"), 2),
        "p99_rolling_ms": round(med(rolling, "p99"), 2),
        "p50_quiet_ms": round(med(quiet, "p50"), 3),
        "p50_rolling_ms": round(med(rolling, "p50"), 3),
        "instances": INSTANCES,
        "rounds": rounds,
    }
    with open(results, "w") as f:
        for k, v in values.items():
            f.write(f"{k}={v}\n")
    q, r = values["p99_quiet_ms"], values["p99_rolling_ms"]
    print(f"{'rollout of 8 health-checked instances under load':48} {'value':>10}  ratio")
    print(f"{'svc restart, start to return (ms)':48} {values['rollout_ms']:>10.1f}")
    print(f"{'p99 latency, no rollout (ms)':48} {q:>10.2f}  1.00x")
    print(f"{'p99 latency, during the rollout (ms)':48} {r:>10.2f}  {r / q:.2f}x")
    print(f"{'p50 latency, no rollout / during (ms)':48} {values['p50_quiet_ms']:>10.3f}  "
          f"{values['p50_rolling_ms']:.3f}")
    print(f"failed requests during rollouts: 0 (of {sum(x['requests'] for x in rolling)})")


main()
