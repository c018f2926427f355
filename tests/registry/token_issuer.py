#!/usr/bin/env python3
"""A minimal Docker registry token issuer, for tests only (loopback, HTTPS).

Plays the `auth.token` realm of Debian's docker-registry 2.8.2 (the
distribution registry), as scripts/registry.sh starts it:

    token_issuer.py --listen 127.0.0.1:0 --port-file FILE \
        --tls-cert server.crt --tls-key server.key \
        --signing-key token.key --signing-cert token.crt \
        --users USERS --issuer mesh-test-issuer --service mesh-test-registry

`GET /token?service=S&scope=repository:REPO:pull,push[&scope=...]` with HTTP
basic credentials that match a `user:password` line of USERS answers
`{"token": JWT, "access_token": JWT, "expires_in": 300, "issued_at": ...}`;
the JWT grants every action asked for, on any repository. No credentials,
wrong ones, or another service: 401. One line per request goes to stderr.

How the registry trusts the JWT (distribution 2.8 `token.VerifySigningKey`,
which reads the header in this order):
  - `x5c`: a certificate chain whose root is in `rootcertbundle`;
  - `jwk`: the key itself, which must be one of the bundle's keys;
  - `kid`: the libtrust key id of a bundle certificate's public key, i.e.
    base32(sha256(DER SubjectPublicKeyInfo)[:30]) in 12 groups of 4 joined
    by ':' (e.g. `ABCD:EFGH:...`). A plain name like "key-1" is refused
    ("token signed by untrusted key with ID").
We send `kid` (default) or, with `--header x5c`, the signing cert as `x5c`;
both work against 2.8.2. The signature is ES256 in JOSE form (r || s, 64
bytes), not the DER that `cryptography` returns, so it is converted.
"""

import argparse
import base64
import hashlib
import http.server
import json
import os
import secrets
import ssl
import sys
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

LIFETIME = 300  # seconds; the registry allows 60 s of clock leeway on top


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_key) -> str:
    """The key id distribution 2.8 expects in `kid` (docker/libtrust)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


class Signer:
    """Signs ES256 JWTs with a P-256 key whose certificate the registry trusts."""

    def __init__(self, key_path, cert_path, header_kind):
        with open(key_path, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), password=None)
        if not isinstance(self.key, ec.EllipticCurvePrivateKey) or self.key.curve.name != "secp256r1":
            sys.exit("token_issuer: the signing key must be EC P-256 (ES256)")
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        self.header = {"typ": "JWT", "alg": "ES256"}
        if header_kind == "x5c":
            der = cert.public_bytes(serialization.Encoding.DER)
            self.header["x5c"] = [base64.b64encode(der).decode()]  # standard base64
        else:
            self.header["kid"] = libtrust_key_id(cert.public_key())

    def sign(self, claims: dict) -> str:
        head = b64url(json.dumps(self.header, separators=(",", ":")).encode())
        body = b64url(json.dumps(claims, separators=(",", ":")).encode())
        der = self.key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{head}.{body}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def parse_scopes(values):
    """`repository:a/b:pull,push` (several per parameter, space separated)
    into [{"type", "name", "actions"}]. The name may hold ':' itself."""
    access = []
    for value in values:
        for scope in value.split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind and name:
                access.append({"type": kind, "name": name,
                               "actions": [a for a in actions.split(",") if a]})
    return access


def make_handler(opts, signer, users):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # one line per request on stderr
            sys.stderr.write("%s %s\n" % (self.log_date_time_string(), fmt % args))

        def reply(self, status, body: dict, extra=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def user(self):
            """The user whose basic credentials are valid, else None."""
            auth = self.headers.get("Authorization", "")
            if not auth.lower().startswith("basic "):
                return None
            try:
                name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                return None
            want = users.get(name)
            ok = want is not None and secrets.compare_digest(want, password)
            return name if ok else None

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            if url.path != "/token":
                return self.reply(404, {"error": "not found"})
            service = query.get("service", [opts.service])[0]
            if service != opts.service:
                return self.reply(401, {"error": f"unknown service {service!r}"})
            user = self.user()
            if user is None:  # anonymous or wrong password: nothing
                return self.reply(401, {"error": "authentication required"},
                                  [("WWW-Authenticate", 'Basic realm="mesh-test-issuer"')])
            access = parse_scopes(query.get("scope", []))
            now = int(time.time())
            token = signer.sign({
                "iss": opts.issuer, "sub": user, "aud": opts.service,
                "exp": now + LIFETIME, "nbf": now - 10, "iat": now,
                "jti": secrets.token_hex(16), "access": access,
            })
            granted = " ".join(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access)
            sys.stderr.write(f"token user={user} access={granted or '-'}\n")
            self.reply(200, {"token": token, "access_token": token,
                             "expires_in": LIFETIME,
                             "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free one)")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--tls-cert", required=True)
    p.add_argument("--tls-key", required=True)
    p.add_argument("--signing-key", required=True, help="EC P-256 private key (PEM)")
    p.add_argument("--signing-cert", required=True, help="its certificate: the registry's rootcertbundle")
    p.add_argument("--users", required=True, help="file of user:password lines")
    p.add_argument("--issuer", default="mesh-test-issuer")
    p.add_argument("--service", default="mesh-test-registry")
    p.add_argument("--header", choices=["kid", "x5c"], default="kid",
                   help="how the JWT names its key (both work with distribution 2.8)")
    opts = p.parse_args()

    users = {}
    with open(opts.users) as f:
        for line in f:
            name, sep, password = line.rstrip("\n").partition(":")
            if sep:
                users[name] = password

    host, _, port = opts.listen.rpartition(":")
    handler = make_handler(opts, Signer(opts.signing_key, opts.signing_cert, opts.header), users)
    server = http.server.ThreadingHTTPServer((host, int(port)), handler)
    server.daemon_threads = True
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(opts.tls_cert, opts.tls_key)
    # The handshake runs in the request thread, not in accept().
    server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    bound = server.server_address[1]
    if opts.port_file:  # written atomically: a reader never sees half a number
        with open(opts.port_file + ".tmp", "w") as f:
            f.write(f"{bound}\n")
        os.replace(opts.port_file + ".tmp", opts.port_file)
    sys.stderr.write(f"token issuer listening on https://{host}:{bound}/token\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
