#!/usr/bin/env python3
"""Push a wasm component to an OCI registry as a CNCF wasm artifact, with oras.

    push_wasm.py ADDR REPO:TAG FILE.wasm --ca DIR/ca.crt --user alice --password PASS [--auth basic|token]

ADDR is HOST:PORT (scripts/registry.sh prints it). The manifest pushed is an
OCI image manifest with config `application/vnd.wasm.config.v0+json` (a small
JSON: architecture wasm, os wasip2, layerDigests) and one `application/wasm`
layer. Prints `digest=sha256:...` (the manifest's digest, from the registry's
Docker-Content-Digest header) on success.

--auth: `basic` (registry.sh basic mode, htpasswd) or `token` (registry.sh
token mode). The default, `auto`, asks `GET /v2/` which scheme the registry
challenges with. In token mode we fetch the bearer token ourselves, for scope
`repository:REPO:pull,push`, and hand it to oras: oras' own token backend
(oras 0.2.43) caches the first token it gets, for whatever scope the first
challenge named (the blob HEAD asks only `pull`), and reuses it for the push,
which the registry then refuses.

Needs the PyPI package `oras` (pinned 0.2.43; `requests` comes with it).
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile

import oras.client
import requests

CONFIG_TYPE = "application/vnd.wasm.config.v0+json"
LAYER_TYPE = "application/wasm"


def challenge(base, ca):
    """The WWW-Authenticate challenge of GET /v2/: (scheme, params dict)."""
    r = requests.get(f"{base}/v2/", verify=ca, timeout=30)
    header = r.headers.get("WWW-Authenticate", "")
    scheme, _, rest = header.partition(" ")
    params = {}
    for part in rest.split(","):
        key, _, value = part.strip().partition("=")
        if key:
            params[key] = value.strip('"')
    return scheme.lower(), params


def fetch_token(params, repo, user, password, ca):
    """The token dance: ask the realm for push and pull on REPO, with basic auth."""
    r = requests.get(
        params["realm"],
        params={"service": params.get("service", ""), "scope": f"repository:{repo}:pull,push"},
        auth=(user, password),
        verify=ca,
        timeout=30,
    )
    r.raise_for_status()
    body = r.json()
    return body.get("token") or body["access_token"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("addr", help="registry HOST:PORT")
    p.add_argument("ref", help="REPO:TAG")
    p.add_argument("wasm", help="the .wasm file")
    p.add_argument("--ca", required=True, help="CA certificate the registry's cert chains to")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--auth", choices=["auto", "basic", "token"], default="auto")
    a = p.parse_args()

    repo, sep, tag = a.ref.rpartition(":")
    if not sep or not repo or "/" in tag:
        sys.exit("push_wasm.py: REF must be REPO:TAG")
    base = f"https://{a.addr}"
    auth = a.auth
    scheme, params = challenge(base, a.ca)
    if auth == "auto":
        auth = "token" if scheme == "bearer" else "basic"

    wasm = os.path.abspath(a.wasm)
    with open(wasm, "rb") as f:
        layer_digest = "sha256:" + hashlib.sha256(f.read()).hexdigest()

    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "config.json")
        with open(config, "w") as f:
            json.dump({"architecture": "wasm", "os": "wasip2", "layerDigests": [layer_digest]}, f)

        client = oras.client.OrasClient(hostname=a.addr, tls_verify=a.ca, auth_backend=auth)
        if auth == "basic":
            client.auth.set_basic_auth(a.user, a.password)
        else:
            client.auth.set_token_auth(fetch_token(params, repo, a.user, a.password, a.ca))
        # oras names the layer after the file (org.opencontainers.image.title);
        # absolute paths need disable_path_validation. A large component
        # (componentize-js makes 13 MB) goes in chunks; the registry now and
        # then cuts a TLS upload short under load, so a push that fails is
        # tried again (a push is idempotent: blobs and manifest by digest).
        for attempt in range(1, 4):
            try:
                response = client.push(
                    target=f"{a.addr}/{repo}:{tag}",
                    files=[f"{wasm}:{LAYER_TYPE}"],
                    manifest_config=f"{config}:{CONFIG_TYPE}",
                    disable_path_validation=True,
                    quiet=True,
                    do_chunked=True,
                    chunk_size=1 << 20,
                )
                break
            except Exception as e:  # the push's own error, after 3 tries
                if attempt == 3:
                    raise
                print(f"push_wasm.py: try {attempt} failed ({e}); trying again", file=sys.stderr)
    if response.status_code != 201:
        sys.exit(f"push_wasm.py: manifest PUT answered {response.status_code}: {response.text}")
    print(f"digest={response.headers.get('Docker-Content-Digest', '')}")


if __name__ == "__main__":
    main()
