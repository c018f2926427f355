#!/usr/bin/env python3
"""Control-plane benchmark (scenario 7 of scripts/bench.sh): service creates
per second, sustained, and `GET /v1/services` (what `mesh service ls --json`
reads) at 1,000 services, against a running daemon.

    bench-control.py DATA_DIR RESULTS_FILE [COUNT]

DATA_DIR is the daemon's data directory (its daemon.json gives the API and
the operator's token); the stack `app` must hold the `app` component. The
services are created with 0 instances, so what is timed is the control
plane, not instance starts. Writes KEY=VALUE lines to RESULTS_FILE.
"""
import concurrent.futures
import json
import statistics
import sys
import time
import urllib.error
import urllib.request


def main():
    data_dir, results = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    info = json.load(open(f"{data_dir}/daemon.json"))
    api, token = info["api_url"].rstrip("/"), info["token"]

    def call(method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            api + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    retries = 0

    def create(i):
        nonlocal retries
        body = {"stack": "app", "name": f"svc{i}", "command": ["app", "queue"], "instances": 0}
        for _ in range(100):
            try:
                return call("POST", "/v1/services", body)
            except urllib.error.HTTPError as e:
                # Concurrent changes in one environment conflict; the
                # answer says to try again.
                if e.code != 409:
                    raise
                retries += 1
        raise SystemExit(f"svc{i}: still conflicting after 100 tries")

    # Creates, 4 clients at once, as fast as the daemon takes them.
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(create, range(count)))
    creates_per_s = count / (time.monotonic() - started)

    # The list at that count: median of 10.
    times = []
    for _ in range(10):
        t0 = time.monotonic()
        listed = json.loads(call("GET", "/v1/services"))
        times.append((time.monotonic() - t0) * 1000)
    assert len(listed) >= count, f"only {len(listed)} services listed"
    with open(results, "w") as out:
        out.write(f"services={count}\n")
        out.write(f"creates_per_s={creates_per_s:.1f}\n")
        out.write(f"list_ms={statistics.median(times):.1f}\n")
        out.write(f"conflicts_retried={retries}\n")
    print(f"control plane: {count} creates at {creates_per_s:.1f}/s ({retries} conflicts retried); "
          f"GET /v1/services of {len(listed)}: {statistics.median(times):.1f} ms (median of 10)")


if __name__ == "__main__":
    main()
