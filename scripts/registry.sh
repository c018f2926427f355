#!/usr/bin/env bash
# A real OCI registry on loopback, for tests: Debian's docker-registry 2.8
# (the distribution registry) over TLS, with basic or token auth.
#
#   scripts/registry.sh start DIR basic   # htpasswd users alice and bob
#   scripts/registry.sh start DIR token   # bearer tokens from tests/registry/token_issuer.py
#   scripts/registry.sh stop DIR          # stops the registry (and issuer), waits for them
#
# `start` makes DIR and prints one line, `registry=127.0.0.1:PORT` (also in
# DIR/address), once `GET /v2/` answers (401). The port is whatever the
# kernel gave the registry (it listens on port 0 and logs the real one), so
# runs never collide and port 5000 of the package's own service is never used.
# In DIR:
#   ca.crt, certs.d/ca.crt  the test CA (curl --cacert; skopeo --dest-cert-dir DIR/certs.d)
#   password, password.bob  the users' passwords (random); users: user:password lines
#   htpasswd                bcrypt file of the same users (basic mode)
#   data/                   the registry's storage
#   registry.log            its log: stderr (logrus) and stdout (access log)
#   registry.pid, config.yml
#   token mode: issuer.pid, issuer.log, issuer.port, token.crt (the rootcertbundle),
#               and DIR/realm holding the realm URL
# Each request is one access-log line in registry.log (Apache combined, on
# the registry's stdout; HTTP/1.1 or HTTP/2.0 as the client negotiated):
#   127.0.0.1 - - [07/Dec/2026:22:49:26 +0000] "GET /v2/busybox/blobs/sha256:00f1ee1c...9ea24d74 HTTP/1.1" 200 1084768 "" "skopeo/1.9.3"
# so this counts the blob GETs served for REPO (config blobs included; use the
# digest instead of [0-9a-f]* for one blob; 401 challenges, HEADs and the
# readiness probe's `GET /v2/` are other lines):
#   grep -c '"GET /v2/REPO/blobs/sha256:[0-9a-f]* HTTP/[0-9.]*" 200 ' DIR/registry.log
# (the logrus line `msg="response completed" ... http.request.method=GET
# http.request.uri="/v2/REPO/blobs/sha256:..." ... http.response.status=200`
# says the same, one per request, on stderr.)
#
# Needs: docker-registry, apache2-utils (htpasswd), openssl, curl, and for
# token mode a python3 with `cryptography`: $MESH_REGISTRY_PYTHON, else
# target/registry-venv/bin/python when it exists, else python3.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

die() { echo "registry.sh: $*" >&2; exit 1; }
usage() { die "usage: $0 start DIR basic|token | stop DIR"; }
starting=""

python_bin() {
  if [ -n "${MESH_REGISTRY_PYTHON:-}" ]; then echo "$MESH_REGISTRY_PYTHON"
  elif [ -x "$root/target/registry-venv/bin/python" ]; then echo "$root/target/registry-venv/bin/python"
  else echo python3
  fi
}

. "$root/scripts/procs.sh"

# certs DIR: a CA, a server cert for 127.0.0.1/localhost signed by it, and
# (token mode) the issuer's signing key with a self-signed cert. EC P-256
# everywhere: fast to make, and ES256 for the JWTs.
certs() {
  local d="$1" ext
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$d/ca.key" -out "$d/ca.crt" -days 30 \
    -subj "/CN=mesh test CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req "${ec[@]}" -keyout "$d/server.key" -out "$d/server.csr" \
    -subj "/CN=localhost" 2>/dev/null
  ext="$d/server.ext"
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" > "$ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
    -CAcreateserial -days 30 -extfile "$ext" -out "$d/server.crt" 2>/dev/null
  rm -f "$d/server.csr" "$ext" "$d/ca.srl"
  mkdir -p "$d/certs.d"
  cp "$d/ca.crt" "$d/certs.d/ca.crt"
}

start() {
  local dir="$1" mode="$2" py i port realm=""
  case "$mode" in basic|token) ;; *) usage ;; esac
  command -v docker-registry >/dev/null || die "docker-registry not found (apt-get install docker-registry)"
  command -v htpasswd >/dev/null || die "htpasswd not found (apt-get install apache2-utils)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  stop "$dir"
  # Whatever fails from here on stops what was started.
  starting="$dir"
  trap '[ -z "$starting" ] || stop "$starting"' EXIT
  rm -f "$dir/address" "$dir/issuer.port" "$dir/realm"
  : > "$dir/registry.log"
  : > "$dir/issuer.log"
  mkdir -p "$dir/data"
  certs "$dir"

  # Users: alice (DIR/password) and bob (DIR/password.bob).
  openssl rand -hex 12 > "$dir/password"
  openssl rand -hex 12 > "$dir/password.bob"
  printf 'alice:%s\nbob:%s\n' "$(cat "$dir/password")" "$(cat "$dir/password.bob")" > "$dir/users"
  { htpasswd -Bin alice < "$dir/password"; htpasswd -Bin bob < "$dir/password.bob"; } \
    2>/dev/null | grep . > "$dir/htpasswd"
  chmod 600 "$dir/users" "$dir/htpasswd" "$dir/password" "$dir/password.bob"

  if [ "$mode" = token ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$dir/token.key" -out "$dir/token.crt" -days 30 -subj "/CN=mesh-test-issuer" 2>/dev/null
    py="$(python_bin)"
    "$py" "$root/tests/registry/token_issuer.py" --listen 127.0.0.1:0 --port-file "$dir/issuer.port" \
      --tls-cert "$dir/server.crt" --tls-key "$dir/server.key" \
      --signing-key "$dir/token.key" --signing-cert "$dir/token.crt" --users "$dir/users" \
      --issuer mesh-test-issuer --service mesh-test-registry \
      </dev/null >>"$dir/issuer.log" 2>&1 &
    echo $! > "$dir/issuer.pid"
    for i in $(seq 100); do
      [ -s "$dir/issuer.port" ] && break
      alive "$(cat "$dir/issuer.pid")" || { cat "$dir/issuer.log" >&2; die "token issuer exited"; }
      sleep 0.1
    done
    [ -s "$dir/issuer.port" ] || die "token issuer did not start"
    realm="https://127.0.0.1:$(cat "$dir/issuer.port")/token"
    echo "$realm" > "$dir/realm"
  fi

  {
    echo "version: 0.1"
    echo "log: {level: info, formatter: text, accesslog: {disabled: false}}"
    echo "storage:"
    echo "  filesystem: {rootdirectory: \"$dir/data\"}"
    echo "  delete: {enabled: true}"
    echo "  maintenance: {uploadpurging: {enabled: false}}"
    echo "http:"
    echo "  addr: 127.0.0.1:0"
    echo "  secret: $(openssl rand -hex 16)"
    echo "  tls: {certificate: \"$dir/server.crt\", key: \"$dir/server.key\"}"
    echo "auth:"
    if [ "$mode" = basic ]; then
      echo "  htpasswd: {realm: mesh-test-registry, path: \"$dir/htpasswd\"}"
    else
      echo "  token:"
      echo "    realm: \"$realm\""
      echo "    service: mesh-test-registry"
      echo "    issuer: mesh-test-issuer"
      echo "    rootcertbundle: \"$dir/token.crt\""
    fi
  } > "$dir/config.yml"

  : > "$dir/registry.log"
  docker-registry serve "$dir/config.yml" </dev/null >>"$dir/registry.log" 2>&1 &
  echo $! > "$dir/registry.pid"

  # The registry logs the port it got: msg="listening on 127.0.0.1:PORT, tls".
  port=""
  for i in $(seq 100); do
    port="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p;T;q' "$dir/registry.log")"
    [ -n "$port" ] && break
    alive "$(cat "$dir/registry.pid")" || break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    cat "$dir/registry.log" >&2
    die "docker-registry did not start"
  fi
  # Ready once /v2/ answers over TLS with our CA (401: auth required).
  local code=""
  for i in $(seq 100); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --cacert "$dir/ca.crt" "https://127.0.0.1:$port/v2/" || true)"
    [ "$code" = 401 ] && break
    sleep 0.1
  done
  if [ "$code" != 401 ]; then
    cat "$dir/registry.log" >&2
    die "docker-registry on port $port answered $code to GET /v2/, not 401"
  fi
  echo "127.0.0.1:$port" > "$dir/address"
  echo "registry=127.0.0.1:$port"
  starting=""
}

stop() {
  local dir="$1"
  [ -d "$dir" ] || return 0
  stop_pid "$dir/registry.pid"
  stop_pid "$dir/issuer.pid"
}

case "${1:-}" in
  start) [ $# -eq 3 ] || usage; start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || usage; stop "$2" ;;
  *) usage ;;
esac
