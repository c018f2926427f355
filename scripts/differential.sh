#!/usr/bin/env bash
# Runs the same programs under `wasmtime run` 48 and under `mesh run`, and
# diffs what they print, their stderr and exit codes. Not part of CI: it
# may install wasmtime-cli 48.0.8 with cargo (minutes). The programs are
# the `classic` example, built both as a wasip1 core module and as a
# wasip2 component; argv[0] is given to wasmtime as the component name
# (mesh names argv[0] after the component: the one intended difference).
#
#   scripts/differential.sh            # every case, a summary at the end
#   WASMTIME=/path/to/wasmtime scripts/differential.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh >/dev/null
cargo build -q -p mesh-cli

WASMTIME="${WASMTIME:-}"
if [ -z "$WASMTIME" ]; then
  if command -v wasmtime >/dev/null && wasmtime --version | grep -q '^wasmtime 48\.'; then
    WASMTIME=$(command -v wasmtime)
  elif [ -x /opt/wasmtime-48/bin/wasmtime ]; then
    WASMTIME=/opt/wasmtime-48/bin/wasmtime
  else
    echo "== installing wasmtime-cli 48.0.8 (takes minutes)"
    cargo install --locked --quiet --root target/wasmtime-48 wasmtime-cli@48.0.8
    WASMTIME=target/wasmtime-48/bin/wasmtime
  fi
fi
echo "== $($WASMTIME --version) against mesh"

MESH="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/mesh"
work=$(mktemp -d)
cleanup() {
  [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

"$MESH" up --api 127.0.0.1:0 --http 127.0.0.1:0 --data-dir "$work/data" >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 1 300); do [ -s "$work/data/daemon.json" ] && break; sleep 0.05; done
export MESH_DATA_DIR="$work/data"

files="$work/files"
mkdir -p "$files/config"
printf 'hello from a file\n' >"$files/hello.txt"
printf 'debug = false\n' >"$files/config/app.toml"
printf 'line one\nline two\n' >"$work/input"

p1=guest-examples/target/wasm32-wasip1/release/classic.wasm
p2=guest-examples/target/wasm32-wasip2/release/classic.wasm

# One case: NAME | wasmtime flags | mesh flags | program args | stdin file
cases=(
  "hello||||"
  "env|--env A=1 --env B=two|-e A=1 -e B=two|env|"
  "args|||hello a 'b c' --flag|"
  "exit 0|||exit 0|"
  "exit 3|||exit 3|"
  "exit 255|||exit 255|"
  "stdin|||cat|$work/input"
  "stderr|||stderr to stderr|"
  "read a file|--dir $files::/|--files $files|read /hello.txt|"
  "read relative|--dir $files::/|--files $files|read config/app.toml|"
  "list root|--dir $files::/|--files $files|ls /|"
  "no host fs|||read /etc/passwd|"
  "climb out|--dir $files::/|--files $files|read ../../etc/passwd|"
  "cwd|||cwd|"
  "memory cap|-W max-memory-size=16777216|--memory 16Mi|alloc 64|"
  "trap|||trap|"
  "clocks|||probe|"
)

run_case() { # runtime module flags args stdin -> prints "exit=N", stdout, stderr
  local runtime=$1 module=$2 flags=$3 args=$4 input=$5 out err code
  out="$work/out" err="$work/err"
  [ -n "$input" ] || input=/dev/null
  set +e
  if [ "$runtime" = wasmtime ]; then
    eval "\"$WASMTIME\" run --argv0 classic $flags \"$module\" $args" <"$input" >"$out" 2>"$err"
  else
    eval "\"$MESH\" run $flags -- \"$module\" $args" <"$input" >"$out" 2>"$err"
  fi
  code=$?
  set -e
  echo "exit=$code"
  # Random values differ from run to run by design: compared by shape.
  sed -E 's/^random [0-9a-f]{16}$/random <16 hex digits>/' "$out"
  echo "--- stderr"
  # Each runtime words its own failures; the guest's own stderr must match.
  grep -v -E '^mesh: |^(Error|error):|^Caused by:|^    [0-9]+:|^ *[0-9]+: +0x|^$|wasm backtrace|note: using the|^\s+at |^Stack backtrace|^[[:space:]]+[0-9]+:' "$err" || true
}

same=0 differ=0
for target in p1 p2; do
  module=${!target}
  for case in "${cases[@]}"; do
    IFS='|' read -r name wflags mflags args input <<<"$case"
    [ -n "$args" ] || args=hello
    a=$(run_case wasmtime "$module" "$wflags" "$args" "$input")
    b=$(run_case mesh "$module" "$mflags" "$args" "$input")
    if [ "$a" = "$b" ]; then
      same=$((same + 1))
      printf 'same    %-3s %s\n' "$target" "$name"
    else
      differ=$((differ + 1))
      printf 'DIFFERS %-3s %s\n' "$target" "$name"
      diff <(echo "$a") <(echo "$b") | sed 's/^/        /' || true
    fi
  done
done
# The intended difference beyond argv[0]: a stack's files are read-only in
# mesh (`--dir` in wasmtime grants writes too).
ro="$work/ro"
cp -r "$files" "$ro"
a=$(run_case wasmtime "$p2" "--dir $ro::/" "write /hello.txt 1" "")
b=$(run_case mesh "$p2" "--files $files" "write /hello.txt 1" "")
echo "intended: writing a file wasmtime --dir allows ($(echo "$a" | sed -n 2p)); mesh refuses ($(echo "$b" | sed -n 2p))"
echo "== $same cases the same, $differ differ (left: wasmtime run, right: mesh run)"
