#!/usr/bin/env python3
"""Cron jitter under load (scenario 8 of scripts/bench.sh): p50, p99 and max
of each firing's guest running minus its scheduled time, over FIRINGS
firings (1,000 by default) of `@every 1s` jobs while `wrk -t2 -c64` drives
GET / of a published service; and the same p99 with no load, in the same
run, as the baseline.

    bench-cron-load.py MESH_BINARY APP_WASM RESULTS_FILE [FIRINGS]

Starts its own daemon in a temporary data directory and stops it at the
end. `hello` (4 instances of `app server`) is published at hello.localhost;
JOBS (env; by default enough for FIRINGS in 40 s) cron jobs run
`app send-emails` `@every 1s`. `@every` counts from the Unix epoch, so all
the jobs fire together at each whole second: a firing's lateness includes
waiting behind the others of its second, and the baseline has the same
number of jobs. First IDLE_FIRINGS (env, default 200) firings with no load,
then wrk (/usr/bin/wrk, or WRK) runs for the loaded window, after a second
of warm-up, and is stopped at its end.

From each job's run history (GET /v1/services): the lateness is
started_at - scheduled_at (the job task taking the firing) plus start_us
(from there to guest code running), as `cargo bench --bench cron_fire`
counts it; fire_p99_ms is the first part alone, first_p99_ms the p99 over
the seconds of each second's earliest firing (about what a job alone would
see). Writes KEY=VALUE lines to RESULTS_FILE.
"""
import calendar
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import benchd


def ns(stamp):
    """An RFC 3339 UTC time (`2026-12-01T01:59:28.473227123Z`) in ns since the epoch."""
    base, _, frac = stamp.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 10**9 + int((frac or "0").ljust(9, "0")[:9])


def percentile(samples, p):
    ordered = sorted(samples)
    return ordered[(len(ordered) - 1) * p // 100]


def main():
    mesh, app, results = sys.argv[1], sys.argv[2], sys.argv[3]
    firings = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    idle_firings = int(os.environ.get("IDLE_FIRINGS", "200"))
    # At most 45 s of load, and at most 45 runs per job in it (50 are kept).
    jobs = max(int(os.environ.get("JOBS", math.ceil(firings / 40))), math.ceil(firings / 45))
    wrk = os.environ.get("WRK", "/usr/bin/wrk")
    data = tempfile.mkdtemp(prefix="mesh-cron-load.")
    log = open(os.path.join(data, "..", f"{os.path.basename(data)}.log"), "w")
    daemon = subprocess.Popen(
        [mesh, "up", "--data-dir", data, "--api", "127.0.0.1:0", "--http", "127.0.0.1:0",
         "--container-network", "10.219.0.1/24"],
        stdout=log, stderr=log)
    load = None
    try:
        info = benchd.wait_up(data, daemon)
        api, token = info["api_url"].rstrip("/"), info["token"]
        ingress = info["http_url"].rstrip("/")
        env = benchd.client_env(data)

        def call(method, path, body=None):
            request = urllib.request.Request(
                api + path,
                data=None if body is None else json.dumps(body).encode(),
                method=method,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())

        subprocess.run([mesh, "svc", "create", "-n", "hello", "--instances", "4", "--", app, "server"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([mesh, "svc", "publish", "-n", "hello", "--endpoint", "hello"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for _ in range(200):
            try:
                request = urllib.request.Request(ingress + "/", headers={"Host": "hello.localhost"})
                with opener.open(request, timeout=2) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("hello did not answer GET / with 200")
        for i in range(jobs):
            call("POST", "/v1/services", {"stack": "app", "name": f"tick{i}",
                                          "command": ["app", "send-emails"],
                                          "schedule": "@every 1s"})

        def window(count):
            """Waits out the whole seconds holding `count` firings from the
            next one on; the first `count` runs of them, in firing order."""
            first = math.ceil(time.time() + 1)
            end = first + math.ceil(count / jobs) + 1  # a second spare
            time.sleep(max(0.0, end + 0.5 - time.time()))
            for _ in range(50):
                runs = [r for s in call("GET", "/v1/services") if s["name"].startswith("tick")
                        for r in s["runs"]
                        if r["trigger"] == "schedule"
                        and first * 10**9 <= ns(r["scheduled_at"]) < end * 10**9]
                if not any(r["status"] == "running" for r in runs):
                    break
                time.sleep(0.1)
            runs.sort(key=lambda r: (ns(r["scheduled_at"]), ns(r["started_at"])))
            return runs[:count]

        def lateness(runs):
            """(guest running - scheduled, started_at - scheduled, the least
            guest running - scheduled of each second) in ms, of the runs that
            ran; and how many did not."""
            ran = [r for r in runs if r["status"] == "succeeded" and r["start_us"] is not None]
            late = [(ns(r["started_at"]) - ns(r["scheduled_at"])) / 1e6 + r["start_us"] / 1000
                    for r in ran]
            fire = [(ns(r["started_at"]) - ns(r["scheduled_at"])) / 1e6 for r in ran]
            first = {}
            for r, ms in zip(ran, late):
                first[r["scheduled_at"]] = min(ms, first.get(r["scheduled_at"], ms))
            return late, fire, list(first.values()), len(runs) - len(ran)

        # No load: the baseline.
        idle_runs = window(idle_firings)
        idle_late, _, _, idle_missed = lateness(idle_runs)

        # Under load: wrk for the window, after a second of warm-up.
        seconds = math.ceil(firings / jobs) + 8
        load = subprocess.Popen(
            [wrk, "-t2", "-c64", f"-d{seconds}s", "-H", "Host: hello.localhost", ingress + "/"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1)
        if load.poll() is not None:
            raise SystemExit(f"wrk exited early:\n{load.stdout.read()}")
        runs = window(firings)
        load.send_signal(signal.SIGINT)
        out = load.communicate(timeout=30)[0]
        load = None
        rps = next((line.split()[1] for line in out.splitlines()
                    if line.startswith("Requests/sec:")), "")
        non2xx = next((line.split()[-1] for line in out.splitlines()
                       if "Non-2xx or 3xx responses:" in line), "0")
        late, fire, first, missed = lateness(runs)
        if len(runs) < firings or not late or not idle_late:
            raise SystemExit(f"only {len(runs)} of {firings} firings under load "
                             f"({len(idle_runs)} of {idle_firings} idle) were seen")
        p50, p99, worst = percentile(late, 50), percentile(late, 99), max(late)
        fire_p99, first_p99 = percentile(fire, 99), percentile(first, 99)
        idle_p99 = percentile(idle_late, 99)
        with open(results, "w") as out_file:
            out_file.write(f"firings={len(late)}\n")
            out_file.write(f"jobs={jobs}\n")
            out_file.write(f"p50_ms={p50:.3f}\n")
            out_file.write(f"p99_ms={p99:.3f}\n")
            out_file.write(f"max_ms={worst:.3f}\n")
            out_file.write(f"fire_p99_ms={fire_p99:.3f}\n")
            out_file.write(f"first_p99_ms={first_p99:.3f}\n")
            out_file.write(f"idle_firings={len(idle_late)}\n")
            out_file.write(f"idle_p99_ms={idle_p99:.3f}\n")
            out_file.write(f"load_rps={rps}\n")
            out_file.write(f"load_non2xx={non2xx}\n")
            out_file.write(f"not_run={missed + idle_missed}\n")
        print(f"cron jitter under load: {len(late)} firings of {jobs} @every 1s jobs while wrk "
              f"-c64 drove {rps} req/s: guest running - scheduled p50 {p50:.3f} ms, "
              f"p99 {p99:.3f} ms, max {worst:.3f} ms (taking the firing p99 {fire_p99:.3f} ms; "
              f"first of each second p99 {first_p99:.3f} ms); "
              f"no load ({len(idle_late)} firings): p99 {idle_p99:.3f} ms; "
              f"{missed + idle_missed} firings did not run")
    finally:
        if load is not None:
            load.kill()
            load.wait()
        benchd.stop(daemon)
        subprocess.run(["rm", "-rf", data])


if __name__ == "__main__":
    main()
