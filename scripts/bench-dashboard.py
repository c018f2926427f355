#!/usr/bin/env python3
"""The dashboard's first contentful paint (scenario 9 of scripts/bench.sh),
against its target (100 ms) and beside a baseline loaded in the same run:
a plain HTML page (guest-examples/blog's index, a few hundred bytes)
served by the same daemon's ingress. The dashboard test holds the paint to
a sanity bound only; the figure lives here, where the machine's load
weighs on the baseline as much as on the dashboard.

    bench-dashboard.py MESH_BINARY BLOG_WASM RESULTS_FILE [LOADS]

Starts its own daemon in a temporary data directory, deploys BLOG_WASM as
stack `blogs`, publishes it at www.localhost/blog, and runs
tests/dashboard/first-paint.mjs (Debian's chromium, headless, through the
pinned playwright-core of tests/dashboard): LOADS loads of each page
(default 21), in turns. Writes KEY=VALUE lines to RESULTS_FILE:
dashboard_ms and baseline_ms (medians), dashboard_max_ms, loads.
"""
import http.client
import json
import os
import statistics
import subprocess
import sys
import time

import benchd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT_DIR = os.path.join(ROOT, "tests", "dashboard")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def answers(port, host, path):
    """Whether GET path with Host: host on the ingress answers 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def main():
    mesh, blog, results = sys.argv[1], sys.argv[2], sys.argv[3]
    loads = int(sys.argv[4]) if len(sys.argv) > 4 else 21
    if not os.path.exists(os.path.join(SCRIPT_DIR, "node_modules", "playwright-core")):
        raise SystemExit("playwright-core is missing: run `(cd tests/dashboard && npm ci --ignore-scripts)`")
    with benchd.running(mesh, "mesh-bench-dashboard.") as (info, env):
        def cli(*args):
            subprocess.run([mesh, *args], env=env, check=True, stdout=subprocess.DEVNULL)

        cli("stack", "deploy", "blogs", blog)
        cli("svc", "create", "-n", "web", "--stack", "blogs", "--", "blog")
        cli("svc", "publish", "-n", "web", "--stack", "blogs", "--endpoint", "www", "--path", "/blog")
        port = benchd.ingress_port(info)
        deadline = time.monotonic() + 30
        while not answers(port, "www.localhost", "/blog/"):
            if time.monotonic() > deadline:
                raise SystemExit("the blog did not answer in 30 s")
            time.sleep(0.05)
        out = subprocess.run(
            ["node", os.path.join(SCRIPT_DIR, "first-paint.mjs")],
            cwd=SCRIPT_DIR, check=True, capture_output=True, text=True,
            env=dict(os.environ, CHROMIUM=CHROMIUM, LOADS=str(loads),
                     DASHBOARD_URL=info["api_url"].rstrip("/") + "/ui/",
                     BASELINE_URL=f"http://www.localhost:{port}/blog/"))
    paints = json.loads(out.stdout.strip().splitlines()[-1])
    dashboard, baseline = paints["dashboard"], paints["baseline"]
    with open(results, "w") as f:
        f.write(f"loads={loads}\n")
        f.write(f"dashboard_ms={statistics.median(dashboard):.1f}\n")
        f.write(f"baseline_ms={statistics.median(baseline):.1f}\n")
        f.write(f"dashboard_max_ms={max(dashboard):.1f}\n")
    print(f"dashboard first contentful paint: median {statistics.median(dashboard):.1f} ms "
          f"(max {max(dashboard):.1f}) of {loads} loads; a plain page of the same daemon: "
          f"median {statistics.median(baseline):.1f} ms")


if __name__ == "__main__":
    main()
