#!/usr/bin/env bash
# Runs the platform with the example stack deployed: builds everything,
# starts `mesh up` with an embedded store in ./.mesh, deploys the example
# app and creates its services, then stays in the foreground (Ctrl-C stops).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build -p mesh-cli

export MESH_DATA_DIR="${MESH_DATA_DIR:-$PWD/.mesh}"
mesh=target/debug/mesh
guests=guest-examples/target/wasm32-wasip2/release
app=$guests/app.wasm

"$mesh" up --https 127.0.0.1:8443 "$@" &
daemon=$!
trap 'kill "$daemon" 2>/dev/null; wait "$daemon"' INT TERM EXIT
for _ in $(seq 100); do
  [ -f "$MESH_DATA_DIR/daemon.json" ] && break
  sleep 0.1
done

"$mesh" stack deploy app "$app"
# Create the example services once; on later runs they are already there.
"$mesh" service ls --json | grep -q '"name": "worker"' ||
  "$mesh" svc create -n worker --instances 2 -- app queue
"$mesh" service ls --json | grep -q '"name": "mailer"' ||
  "$mesh" svc create -n mailer --memory 64Mi --env FROM=ops@example.com -- app send-emails
"$mesh" service ls --json | grep -q '"name": "web"' || {
  "$mesh" svc create -n web --instances 2 -- app server
  "$mesh" svc publish -n web --endpoint www
}
"$mesh" service ls --json | grep -q '"name": "digest"' ||
  "$mesh" svc create -n digest --schedule "@every 1m" -- app send-emails
# The seed's other stacks: payments called by name (http://finance-payments),
# and a blog under www.localhost/blog.
"$mesh" service ls --json | grep -q '"name": "payments"' ||
  "$mesh" svc create -n payments --stack finance --instances 2 -- "$guests/payments.wasm"
"$mesh" service ls --json | grep -q '"name": "blog"' || {
  "$mesh" svc create -n blog --stack myblog -- "$guests/blog.wasm"
  "$mesh" svc publish -n blog --stack myblog --endpoint www --path /blog
}
# A classic wasip1 module (not a component) serving CGI, as WAGI does.
"$mesh" service ls --json | grep -q '"name": "legacy"' || {
  "$mesh" svc create -n legacy --stack classic -- guest-examples/target/wasm32-wasip1/release/classic.wasm
  "$mesh" svc publish -n legacy --stack classic --endpoint legacy
}
# Containers, when this host can run them (root): a busybox web server and
# the seed's node cron job, from images built offline.
if [ "$(id -u)" = 0 ] && scripts/images.sh >/dev/null; then
  images=target/test-images
  "$mesh" stack deploy boxes "$images/busybox.tar" ||
    echo "(containers cannot run here; the wasm services are unaffected)"
  if "$mesh" stack ls --json | grep -q '"boxes"'; then
    "$mesh" service ls --json | grep -q '"name": "site"' || {
      "$mesh" svc create -n site --stack boxes -- busybox sh -c 'exec httpd -f -p $PORT -h /www'
      "$mesh" svc publish -n site --stack boxes --endpoint site
    }
    "$mesh" stack deploy mail "$images/node-image.tar"
    "$mesh" service ls --json | grep -q '"name": "emailsender"' ||
      "$mesh" svc create -n emailsender --stack mail --schedule "@hourly" -- node send-emails.js
  fi
fi

sleep 1
"$mesh" service ls
echo
echo "mesh is running (data in $MESH_DATA_DIR). In another shell:"
echo "  export MESH_DATA_DIR=$MESH_DATA_DIR"
echo "  $mesh service ls        $mesh svc logs -n worker --tail 5"
echo "  curl http://www.localhost:8080/      curl --cacert $MESH_DATA_DIR/tls/ca.pem https://www.localhost:8443/"
echo "  curl 'http://www.localhost:8080/pay?amount=1250'   (web calls http://finance-payments in-process)"
echo "  curl http://www.localhost:8080/blog/"
echo "  curl 'http://legacy.localhost:8080/hello?x=1'   (a wasip1 module answering as CGI)"
echo "  curl http://site.localhost:8080/   $mesh service run -n site --stack boxes -- /bin/sh   (containers)"
echo "Dashboard: http://127.0.0.1:7070/ (sign in with the token in $MESH_DATA_DIR/daemon.json)"
wait "$daemon"
