#!/usr/bin/env bash
# Let's Encrypt's ACME test server on loopback, for tests: Debian's pebble
# and pebble-challtestsrv, whose DNS answers every name with 127.0.0.1, so
# pebble's validations really connect to the ports given (mesh's ingress).
#
#   scripts/pebble.sh start DIR HTTP_PORT TLS_PORT [VALIDITY_SECONDS] [BLOCKED_NAME...]
#   scripts/pebble.sh stop DIR
#
# `start` prints `directory=https://127.0.0.1:PORT/dir` (also in DIR/directory)
# once pebble answers it. HTTP_PORT and TLS_PORT are where pebble sends
# HTTP-01 and TLS-ALPN-01 validations. VALIDITY_SECONDS makes short-lived
# certificates (pebble's certificateValidityPeriod); BLOCKED_NAMEs are refused
# (pebble's domainBlocklist). In DIR:
#   ca.crt         the CA of pebble's own HTTPS API (mesh up --acme-ca)
#   root.pem       written by `root`: the root its certificates chain to
#   pebble.log     pebble's log; each new order is a line with "POST /order-plz"
#   challtestsrv.log, config.json, *.pid
# Needs: pebble (Debian package pebble), openssl, curl.
set -euo pipefail

die() { echo "pebble.sh: $*" >&2; exit 1; }
usage() { die "usage: $0 start DIR HTTP_PORT TLS_PORT [VALIDITY_SECONDS] [BLOCKED_NAME...] | root DIR | stop DIR"; }
starting=""

. "$(cd "$(dirname "$0")" && pwd)/procs.sh"

# free_port: a port the kernel hands out now (free until someone takes it).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  [ $# -ge 3 ] || usage
  local dir="$1" http_port="$2" tls_port="$3" validity="${4:-0}" port mport dnsport i code blocked=""
  shift 3; [ $# -gt 0 ] && shift
  for name in "$@"; do blocked="$blocked${blocked:+,}\"$name\""; done
  command -v pebble >/dev/null || die "pebble not found (apt-get install pebble)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  stop "$dir"
  starting="$dir"
  trap '[ -z "$starting" ] || stop "$starting"' EXIT
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 30 \
    -subj "/CN=mesh test pebble CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req "${ec[@]}" -keyout "$dir/server.key" -out "$dir/server.csr" -subj "/CN=localhost" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "extendedKeyUsage=serverAuth" > "$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 30 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
  rm -f "$dir/server.csr" "$dir/server.ext" "$dir/ca.srl"

  dnsport="$(free_port)"
  pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" -dns01 "127.0.0.1:$dnsport" \
    -http01 "" -https01 "" -tlsalpn01 "" -management "127.0.0.1:$(free_port)" \
    </dev/null >"$dir/challtestsrv.log" 2>&1 &
  echo $! > "$dir/challtestsrv.pid"
  # Up once it logs its DNS server's start.
  for i in $(seq 50); do
    grep -q "Starting challenge servers" "$dir/challtestsrv.log" 2>/dev/null && break
    alive "$(cat "$dir/challtestsrv.pid")" || { cat "$dir/challtestsrv.log" >&2; die "pebble-challtestsrv exited"; }
    sleep 0.1
  done

  port="$(free_port)"; mport="$(free_port)"
  cat > "$dir/config.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$port", "managementListenAddress": "127.0.0.1:$mport",
  "certificate": "$dir/server.crt", "privateKey": "$dir/server.key",
  "httpPort": $http_port, "tlsPort": $tls_port, "ocspResponderURL": "",
  "externalAccountBindingRequired": false, "certificateValidityPeriod": $validity,
  "domainBlocklist": [$blocked]}}
JSON
  PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
    pebble -config "$dir/config.json" -dnsserver "127.0.0.1:$dnsport" \
    </dev/null >"$dir/pebble.log" 2>&1 &
  echo $! > "$dir/pebble.pid"
  echo "$mport" > "$dir/management.port"
  code=""
  for i in $(seq 100); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --cacert "$dir/ca.crt" "https://127.0.0.1:$port/dir" || true)"
    [ "$code" = 200 ] && break
    alive "$(cat "$dir/pebble.pid")" || break
    sleep 0.1
  done
  if [ "$code" != 200 ]; then
    cat "$dir/pebble.log" "$dir/challtestsrv.log" >&2
    die "pebble did not answer its directory (last: $code)"
  fi
  echo "https://127.0.0.1:$port/dir" > "$dir/directory"
  echo "directory=https://127.0.0.1:$port/dir"
  starting=""
}

# root DIR: the root pebble's certificates chain to, into DIR/root.pem.
root() {
  local dir="$1"
  curl -sf --cacert "$dir/ca.crt" "https://127.0.0.1:$(cat "$dir/management.port")/roots/0" > "$dir/root.pem"
}

stop() {
  local dir="$1"
  [ -d "$dir" ] || return 0
  stop_pid "$dir/pebble.pid"
  stop_pid "$dir/challtestsrv.pid"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  root) [ $# -eq 2 ] || usage; root "$2" ;;
  stop) [ $# -eq 2 ] || usage; stop "$2" ;;
  *) usage ;;
esac
