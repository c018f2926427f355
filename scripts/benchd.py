"""What the benchmark scripts share: a mesh daemon of their own.

    import benchd
    daemon = subprocess.Popen([mesh, "up", "--data-dir", data, ...])
    info = benchd.wait_up(data, daemon)    # daemon.json: api_url, token, ...
    env = benchd.client_env(data)          # for `mesh` CLI calls
    benchd.stop(daemon)                    # SIGTERM, then SIGKILL after 60 s

or, for a daemon that runs no containers, all of that at once:

    with benchd.running(mesh, "mesh-bench-x.") as (info, env):
        port = benchd.ingress_port(info)
"""
import contextlib
import http.client
import json
import os
import signal
import subprocess
import tempfile
import time


def wait_up(data, daemon, limit_s=30):
    """daemon.json of the daemon in `data`, once it is written; exits if
    the daemon ends first or takes longer than limit_s."""
    path = os.path.join(data, "daemon.json")
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if os.path.exists(path) and os.path.getsize(path):
            return json.load(open(path))
        if daemon.poll() is not None:
            raise SystemExit(f"mesh up exited with {daemon.returncode} before writing {path}")
        time.sleep(0.01)
    raise SystemExit(f"no {path} after {limit_s}s")


def client_env(data):
    """The environment for CLI calls to the daemon in `data` only."""
    env = dict(os.environ, MESH_DATA_DIR=data)
    env.pop("MESH_API_URL", None)
    env.pop("MESH_TOKEN", None)
    return env


def stop(daemon):
    """Asks the daemon to stop, and kills it if it has not within 60 s."""
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


@contextlib.contextmanager
def running(mesh, prefix):
    """A daemon of `mesh` in a temporary data directory of its own, on
    ports it picks, running no containers: yields (daemon.json, the CLI's
    environment) and stops it on the way out."""
    with tempfile.TemporaryDirectory(prefix=prefix) as data:
        with open(os.path.join(data, "daemon.log"), "w") as log:
            daemon = subprocess.Popen(
                [mesh, "up", "--data-dir", data, "--api", "127.0.0.1:0",
                 "--http", "127.0.0.1:0", "--container-network", "none"],
                stdout=log, stderr=log)
            try:
                yield wait_up(data, daemon), client_env(data)
            finally:
                stop(daemon)


def ingress_port(info):
    """The port of the ingress, from daemon.json."""
    return int(info["http_url"].rstrip("/").rsplit(":", 1)[1])


def status(port, host=None):
    """GET / on 127.0.0.1:port (with Host `host`): the status, or None
    when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/", headers={"Host": host} if host else {})
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
