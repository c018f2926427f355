#!/usr/bin/env python3
"""Cluster benchmark: requests/s through the ingresses of 1, 2 and 3 mesh
hosts sharing a 3-member etcd cluster, and an intra-DNS hop that crosses
hosts next to one in-process, all in one run, on loopback.

    scripts/bench-cluster.py [MESH_BINARY] [DURATION_S]

MESH_BINARY defaults to target/release/mesh (build it with
`cargo build --release -p mesh-cli`); etcd (Debian's etcd-server) and wrk
are installed with apt-get when missing. Not part of the tests. The web
service `hello` has one instance on each host; `finance-payments` one, on
one host; `front` (the caller) one on each. The hop is timed by the guest
(`GET /hop`, 2,000 sequential calls) from the host that runs payments
(in-process) and from one that does not (one hop to it over HTTP/2).
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchd  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUESTS = os.path.join(ROOT, "guest-examples/target/wasm32-wasip2/release")
HOPS = 2000
CONNS = 64


def need(command, package):
    if shutil.which(command) is None:
        subprocess.run(["apt-get", "install", "-y", package], check=True, capture_output=True)


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_etcd(tmp):
    ports = free_ports(6)
    cluster = ",".join(f"m{i}=http://127.0.0.1:{ports[2 * i + 1]}" for i in range(3))
    procs = []
    for i in range(3):
        client, peer = f"http://127.0.0.1:{ports[2 * i]}", f"http://127.0.0.1:{ports[2 * i + 1]}"
        procs.append(subprocess.Popen(
            ["etcd", "--name", f"m{i}", "--data-dir", f"{tmp}/etcd{i}",
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", cluster, "--initial-cluster-state", "new",
             "--logger", "zap", "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/etcd{i}.log", "w")))
    url = "etcd://" + ",".join(f"127.0.0.1:{ports[2 * i]}" for i in range(3))
    return procs, url


def get(addr, host, path, timeout=30):
    request = urllib.request.Request(f"http://{addr}{path}", headers={"Host": host})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read().decode()


def wait_ok(addr, host, limit_s=60):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if get(addr, host, "/", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{host} did not answer through {addr} in {limit_s}s")


def wrk(addrs, host, duration):
    """Summed req/s of one wrk per address, run at once, CONNS split."""
    conns = max(2, CONNS // len(addrs))
    runs = [subprocess.Popen(
        ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "-H", f"Host: {host}", f"http://{a}/"],
        stdout=subprocess.PIPE, text=True) for a in addrs]
    total = 0.0
    for run in runs:
        out, _ = run.communicate()
        found = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if not found:
            raise SystemExit(f"could not read wrk's output:\n{out}")
        total += float(found.group(1))
    return total


def main():
    mesh = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/mesh")
    duration = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    if not os.path.exists(mesh):
        raise SystemExit(f"{mesh} is missing: cargo build --release -p mesh-cli")
    need("etcd", "etcd-server")
    need("wrk", "wrk")
    tmp = tempfile.mkdtemp(prefix="mesh-bench-cluster-")
    etcd, url = start_etcd(tmp)
    hosts = []
    try:
        for i, name in enumerate(["h1", "h2", "h3"]):
            data = f"{tmp}/{name}"
            os.makedirs(data)
            # Three hosts on one machine: a containers' bridge each.
            daemon = subprocess.Popen(
                [mesh, "up", "--data-dir", data, "--api", "127.0.0.1:0", "--http", "127.0.0.1:0",
                 "--store", url, "--node", name, "--container-network", f"10.215.{i + 1}.1/24"],
                stdout=subprocess.DEVNULL, stderr=open(f"{data}.log", "w"))
            try:
                info = benchd.wait_up(data, daemon)
            except SystemExit:
                print(open(f"{data}.log").read()[-2000:], file=sys.stderr)
                raise
            hosts.append((name, data, daemon, info))
        env = benchd.client_env(hosts[0][1])

        def cli(*args):
            return subprocess.run([mesh, *args], env=env, check=True, capture_output=True,
                                  text=True).stdout

        app, payments = f"{GUESTS}/app.wasm", f"{GUESTS}/payments.wasm"
        cli("svc", "create", "-n", "hello", "--instances", "3", "--", app, "server")
        cli("svc", "publish", "-n", "hello", "--endpoint", "hello")
        cli("svc", "create", "-n", "front", "--instances", "3", "--", app, "server")
        cli("svc", "publish", "-n", "front", "--endpoint", "front")
        cli("svc", "create", "--stack", "finance", "-n", "payments", "--", payments)
        ingresses = [h[3]["http_url"].removeprefix("http://").rstrip("/") for h in hosts]
        for addr in ingresses:
            wait_ok(addr, "hello.localhost")
            wait_ok(addr, "front.localhost")

        print(f"== mesh cluster: 3 hosts on one 3-member etcd, loopback, {os.cpu_count()} cores")
        rates = []
        for k in (1, 2, 3):
            wrk(ingresses[:k], "hello.localhost", 2)
            rate = wrk(ingresses[:k], "hello.localhost", duration)
            rates.append(rate)
            print(f"requests/s through {k} host(s): {rate:,.0f}  ({CONNS} connections, wrk -d{duration}s)")

        services = json.loads(cli("svc", "ls", "--json"))
        pay = next(s for s in services if s["name"] == "payments")
        node = next(i["node"] for i in pay["instances"] if i["state"] == "running")
        local = next(i for i, h in enumerate(hosts) if h[0] == node)
        remote = (local + 1) % 3
        target = "http%3A%2F%2Ffinance-payments%2Fpayments"

        def hop(addr):
            get(addr, "front.localhost", f"/hop?target={target}&n={HOPS // 10}")
            status, body = get(addr, "front.localhost", f"/hop?target={target}&n={HOPS}", 120)
            found = re.search(r"per_hop_us: ([\d.]+)", body)
            if status != 200 or not found:
                raise SystemExit(f"/hop failed ({status}): {body}")
            return float(found.group(1))

        in_process, cross = hop(ingresses[local]), hop(ingresses[remote])
        print(f"intra-DNS hop, in-process (caller and payments on {node}): {in_process:.1f} us")
        print(f"intra-DNS hop, across hosts ({hosts[remote][0]} -> {node}, HTTP/2): {cross:.1f} us"
              f"  ({cross / in_process:.1f}x)")
        print(json.dumps({"requests_per_s": dict(zip(["1", "2", "3"], rates)),
                          "hop_in_process_us": in_process, "hop_cross_host_us": cross}))
    finally:
        for _, _, daemon, _ in hosts:
            benchd.stop(daemon)
        for proc in etcd:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
