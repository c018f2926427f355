#!/usr/bin/env python3
"""How soon a change takes effect (scenario 10 of scripts/bench.sh): the
figures the end-to-end tests once held to sub-second limits, which a busy
machine could fail. The tests now keep sanity bounds of seconds; the
figures and their targets live here.

    bench-converge.py MESH_BINARY APP_WASM PAYMENTS_WASM RESULTS_FILE [TRIES]

Starts its own daemon in a temporary data directory and drives its API
(what `mesh` sends), polling every 2 ms. Medians of TRIES (default 10):
- scale_down_ms: `app queue` at 3 running instances, PATCH to 1, until the
  service lists one instance (target: within 1 s);
- delete_ms: a worker spinning in guest code, DELETE, until the service is
  gone (target: within 1 s);
- empty_503_ms: a web service calling `finance-payments`, which has 0
  instances, by name: the 503 it answers (target: at once, well under a
  second), beside served_ms, the same web service answering `/` itself;
- timed_out_ms: how long a cron run of a spinning guest with
  `--timeout 300ms` lasts, as its run record says (target: under 1 s).
Writes KEY=VALUE lines to RESULTS_FILE.
"""
import http.client
import json
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

import benchd

POLL_S = 0.002


class Api:
    """The daemon's control API, with the operator's token."""

    def __init__(self, info):
        self.url, self.token = info["api_url"].rstrip("/"), info["token"]

    def call(self, method, path, body=None):
        """The decoded answer, or None for 404."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise SystemExit(f"{method} {path}: {e.code} {e.read().decode()}")

    def service(self, name):
        return self.call("GET", f"/v1/services/app/{name}")

    def until(self, name, check, what, limit_s=30):
        """Polls the service until `check` holds; the seconds it took."""
        started = time.monotonic()
        while not check(self.service(name)):
            if time.monotonic() - started > limit_s:
                raise SystemExit(f"{name}: no {what} in {limit_s} s")
            time.sleep(POLL_S)
        return time.monotonic() - started


def running(n):
    return lambda s: s is not None and len(s["instances"]) == n and all(
        i["state"] == "running" for i in s["instances"])


def get_ms(port, path):
    """GET path with Host: www.localhost on the ingress: (status, ms)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.monotonic()
    try:
        conn.request("GET", path, headers={"Host": "www.localhost"})
        response = conn.getresponse()
        response.read()
        return response.status, (time.monotonic() - started) * 1000
    finally:
        conn.close()


def main():
    mesh, app, payments, results = sys.argv[1:5]
    tries = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    with benchd.running(mesh, "mesh-bench-converge.") as (info, env):
        for stack, wasm in [("app", app), ("finance", payments)]:
            subprocess.run([mesh, "stack", "deploy", stack, wasm], env=env, check=True,
                           stdout=subprocess.DEVNULL)
        figures = measure(Api(info), benchd.ingress_port(info), tries)
    with open(results, "w") as f:
        f.write(f"tries={tries}\n")
        for key, value in figures.items():
            f.write(f"{key}={value:.1f}\n")
    print(f"converge, medians of {tries}: scale 3 -> 1 in {figures['scale_down_ms']:.1f} ms; "
          f"a spinning worker deleted in {figures['delete_ms']:.1f} ms; a service with 0 "
          f"instances answered 503 in {figures['empty_503_ms']:.1f} ms (a served request "
          f"{figures['served_ms']:.1f} ms); a cron run with --timeout 300ms lasted "
          f"{figures['timed_out_ms']:.1f} ms")


def measure(api, port, tries):
    def create(name, command, **settings):
        api.call("POST", "/v1/services", {"stack": "app", "name": name, "command": command, **settings})

    # Scale down.
    create("worker", ["app", "queue"], instances=3)
    scale = []
    for _ in range(tries):
        api.until("worker", running(3), "3 running instances")
        asked = time.monotonic()
        api.call("PATCH", "/v1/services/app/worker", {"instances": 1})
        api.until("worker", lambda s: len(s["instances"]) == 1, "single instance")
        scale.append((time.monotonic() - asked) * 1000)
        api.call("PATCH", "/v1/services/app/worker", {"instances": 3})
    api.call("DELETE", "/v1/services/app/worker")

    # Delete a spinning worker.
    delete = []
    for i in range(tries):
        name = f"spinner{i}"
        create(name, ["app", "spin"])
        api.until(name, running(1), "running instance")
        time.sleep(0.3)
        asked = time.monotonic()
        api.call("DELETE", f"/v1/services/app/{name}")
        api.until(name, lambda s: s is None, "delete")
        delete.append((time.monotonic() - asked) * 1000)

    # A call to a service with no instances, beside a request served.
    create("web", ["app", "server"])
    api.call("POST", "/v1/services/app/web/publish", {"endpoint": "www"})
    api.call("POST", "/v1/services", {"stack": "finance", "name": "payments",
                                      "command": ["payments"], "instances": 0})
    api.until("web", running(1), "running instance")
    refused, served = [], []
    for _ in range(max(tries, 20)):
        status, ms = get_ms(port, "/pay?amount=1")
        assert status == 503, status
        refused.append(ms)
        status, ms = get_ms(port, "/")
        assert status == 200, status
        served.append(ms)

    # A cron run stopped by its timeout.
    create("job", ["app", "spin"], schedule="@every 1s", timeout="300ms")
    timed_out = lambda s: [r for r in s["runs"] if r["status"] == "timed_out"]
    api.until("job", lambda s: len(timed_out(s)) >= tries, f"{tries} timed-out runs",
              limit_s=tries * 3 + 10)
    lengths = [r["duration_ms"] for r in timed_out(api.service("job"))]

    return {
        "scale_down_ms": statistics.median(scale),
        "delete_ms": statistics.median(delete),
        "empty_503_ms": statistics.median(refused),
        "served_ms": statistics.median(served),
        "timed_out_ms": statistics.median(lengths),
    }


if __name__ == "__main__":
    main()
