#!/usr/bin/env python3
"""Deploying from a registry: the time from `mesh stack deploy S REF` to
the first answer of a web service made of it, for a cold pull (no blob
here yet) and a warm one (every blob cached), beside `skopeo copy` of the
same image from the same registry to a local directory, in the same run.

    bench-registry.py MESH_BINARY BUSYBOX_TAR APP_WASM RESULTS_FILE

Starts Debian's docker-registry on loopback over TLS (scripts/registry.sh,
basic auth), pushes the busybox image with skopeo and app.wasm as a wasm
artifact with oras (scripts/registry-push.sh), and a mesh daemon of its
own (as root, for containers) that trusts the registry's CA. Timed, median
of ROUNDS (env, default 3) rounds, each on new stacks:
- image_cold_ms: a fresh data directory's daemon (empty cache): `mesh
  stack deploy bN REF`, `svc create` of busybox httpd on $PORT, `svc
  publish`, then GET every 5 ms until 200;
- image_warm_ms: the same on another stack of the same daemon (every blob
  cached, the image already unpacked);
- component_cold_ms / component_warm_ms: the same with app.wasm
  (`app server`);
- skopeo_ms: `skopeo copy docker://REF dir:DIR` (to a new directory each
  round).
Writes KEY=VALUE lines to RESULTS_FILE and prints a table.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import benchd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLL_S = 0.005


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {out.stdout}{out.stderr}")
    return out.stdout


def first_ok(port, host, limit_s=120):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if benchd.status(port, host) == 200:
            return time.monotonic()
        time.sleep(POLL_S)
    raise SystemExit(f"no 200 from {host} in {limit_s}s")


def deploy_and_serve(mesh, env, port, stack, reference, command):
    """ms from `stack deploy` to the first 200 of a web service of it."""
    started = time.monotonic()
    run([mesh, "stack", "deploy", stack, reference, "--name", "code"], env=env)
    run([mesh, "svc", "create", "-n", "web", "--stack", stack, "--", *command], env=env)
    run([mesh, "svc", "publish", "-n", "web", "--stack", stack, "--endpoint", stack], env=env)
    return (first_ok(port, f"{stack}.localhost") - started) * 1000


class Daemon:
    """A daemon of its own in a fresh data directory that trusts the CA."""

    def __init__(self, mesh, ca, registry, password):
        self.data = tempfile.mkdtemp(prefix="mesh-bench-registry.")
        self.log = open(os.path.join(self.data, "daemon.log"), "w")
        self.process = subprocess.Popen(
            [mesh, "up", "--data-dir", self.data, "--api", "127.0.0.1:0",
             "--http", "127.0.0.1:0", "--registry-ca", ca,
             "--container-network", "10.217.0.1/24"],
            stdout=self.log, stderr=self.log)
        self.info = benchd.wait_up(self.data, self.process)
        self.env = benchd.client_env(self.data)
        self.port = benchd.ingress_port(self.info)
        subprocess.run([mesh, "registry", "login", registry, "--username", "alice",
                        "--password-stdin"], input=password, text=True, env=self.env,
                       check=True, capture_output=True)

    def stop(self):
        benchd.stop(self.process)
        self.log.close()
        shutil.rmtree(self.data, ignore_errors=True)


def main():
    mesh, busybox, app, results = sys.argv[1:5]
    rounds = int(os.environ.get("ROUNDS", "3"))
    reg_dir = tempfile.mkdtemp(prefix="mesh-bench-reg.")
    run([os.path.join(ROOT, "scripts/registry.sh"), "start", reg_dir, "basic"])
    try:
        address = open(os.path.join(reg_dir, "address")).read().strip()
        password = open(os.path.join(reg_dir, "password")).read().strip()
        ca = os.path.join(reg_dir, "ca.crt")
        push = os.path.join(ROOT, "scripts/registry-push.sh")
        run([push, reg_dir, "image", busybox, "bench/busybox:1"])
        run([push, reg_dir, "wasm", app, "bench/app:1"])
        image_ref = f"{address}/bench/busybox:1"
        app_ref = f"{address}/bench/app:1"
        httpd = ["code", "sh", "-c", "exec httpd -f -p $PORT -h /www"]
        serve = ["code", "server"]
        figures = {k: [] for k in ("image_cold_ms", "image_warm_ms", "component_cold_ms",
                                   "component_warm_ms", "skopeo_ms")}
        for n in range(rounds):
            # Cold: a daemon with an empty cache.
            d = Daemon(mesh, ca, address, password)
            try:
                figures["image_cold_ms"].append(
                    deploy_and_serve(mesh, d.env, d.port, f"c{n}", image_ref, httpd))
                figures["component_cold_ms"].append(
                    deploy_and_serve(mesh, d.env, d.port, f"w{n}", app_ref, serve))
                # Warm: the same daemon, new stacks.
                figures["image_warm_ms"].append(
                    deploy_and_serve(mesh, d.env, d.port, f"cw{n}", image_ref, httpd))
                figures["component_warm_ms"].append(
                    deploy_and_serve(mesh, d.env, d.port, f"ww{n}", app_ref, serve))
            finally:
                d.stop()
            target = tempfile.mkdtemp(prefix="mesh-bench-skopeo.")
            try:
                started = time.monotonic()
                run(["skopeo", "copy", "--src-cert-dir", os.path.join(reg_dir, "certs.d"),
                     "--src-creds", f"alice:{password}", f"docker://{image_ref}",
                     f"dir:{target}/img"])
                figures["skopeo_ms"].append((time.monotonic() - started) * 1000)
            finally:
                shutil.rmtree(target, ignore_errors=True)
    finally:
        run([os.path.join(ROOT, "scripts/registry.sh"), "stop", reg_dir])
        shutil.rmtree(reg_dir, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in figures.items()}
    skopeo = medians["skopeo_ms"]
    print(f"{'deploy from a registry to the first answer':<48} {'median ms':>10} {'/ skopeo copy':>14}")
    for key in ("image_cold_ms", "image_warm_ms", "component_cold_ms", "component_warm_ms", "skopeo_ms"):
        print(f"{key:<48} {medians[key]:>10.1f} {medians[key] / skopeo:>13.2f}x")
    with open(results, "w") as f:
        for key, value in medians.items():
            f.write(f"{key}={value:.1f}\n")


if __name__ == "__main__":
    main()
