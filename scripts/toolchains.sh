#!/usr/bin/env bash
# Guest examples built by real non-Rust toolchains, as test components:
#
#   guest-examples/js/hello.js  -> guest-examples/target/other/jshello.wasm
#       wasi:http/proxy, componentize-js (SpiderMonkey/StarlingMonkey), in
#       the fetch-event style: an instance answers only its first request
#   guest-examples/js/handler.js -> guest-examples/target/other/jshandler.wasm
#       the same with an exported wasi:http incoming handler: an instance
#       answers any number of requests
#   guest-examples/py/hello.py  -> guest-examples/target/other/pyhello.wasm
#       wasi:http/proxy, componentize-py (CPython)
#   guest-examples/py/cli.py    -> guest-examples/target/other/pycli.wasm
#       wasi:cli/run, componentize-py
#
# Toolchains, pinned, go into target/toolchains/ (a second run finds them
# and skips the install; a component whose inputs have not changed is not
# rebuilt either, FORCE=1 rebuilds):
#   js: @bytecodealliance/componentize-js 0.23.0, with every dependency
#       pinned by guest-examples/js/package-lock.json (`npm ci`, no install
#       scripts run). package.json also names preview2-shim: componentize-js
#       0.23.0 imports it but lists it only as a devDependency, so without
#       it `npm ci` leaves it out and componentize-js fails to load.
#   py: componentize-py 0.25.1 in a venv, pinned with hashes by
#       guest-examples/py/requirements.txt.
# Needs node >= 20 with npm, python3 with venv; reaches only the npm
# registry and PyPI, and only when a toolchain is missing.
#
# WIT: guest-examples/wit/deps is WASI 0.2.12 as wasmtime 48 links it.
# componentize-js builds its fetch-event handler into the engine at the
# engine's own WASI version (0.2.10 for 0.23.0) and can only export
# wasi:http/incoming-handler at exactly that version, so the JS build uses
# a copy of the WIT relabelled to it (wasmtime links 0.2.10 imports to its
# 0.2.12 implementation).
#
#   scripts/toolchains.sh            # install what is missing, build all
#   scripts/toolchains.sh js|py      # one language only
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

COMPONENTIZE_JS_VERSION=0.23.0 # also in guest-examples/js/package.json
COMPONENTIZE_PY_VERSION=0.25.1 # also in guest-examples/py/requirements.txt

TOOLCHAINS="$ROOT/target/toolchains"
OUT="$ROOT/guest-examples/target/other"
SRC="$ROOT/guest-examples"
WANT="${1:-all}"
case "$WANT" in all | js | py) ;; *)
    echo "usage: $0 [all|js|py]" >&2
    exit 2
    ;;
esac
mkdir -p "$TOOLCHAINS" "$OUT"

now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1fs", e - s }'; }
say() { echo "toolchains: $*" >&2; }
die() {
    echo "toolchains: $*" >&2
    exit 1
}
# The inputs of a build, hashed (file names and contents): a build whose
# hash is unchanged is skipped.
inputs_hash() { for f in "$@"; do echo "${f#"$ROOT"/}"; cat "$f"; done | sha256sum | cut -d' ' -f1; }
# up_to_date OUTPUT HASH: OUTPUT exists and was built from inputs with HASH.
up_to_date() { [[ -z "${FORCE:-}" && -s "$1" && "$(cat "$1.inputs" 2>/dev/null)" == "$2" ]]; }
built() {
    echo "$2" >"$1.inputs"
    printf '%-14s %10d bytes  %s\n' "$(basename "$1")" "$(stat -c %s "$1")" "${1#"$ROOT"/}"
}

# --- JavaScript: componentize-js ---------------------------------------------
install_js() {
    local dir="$TOOLCHAINS/js" lock="$SRC/js/package-lock.json"
    local want
    want="$(inputs_hash "$SRC/js/package.json" "$lock")"
    if [[ -f "$dir/.installed" && "$(cat "$dir/.installed")" == "$want" &&
        -f "$dir/node_modules/@bytecodealliance/componentize-js/package.json" ]]; then
        say "componentize-js $COMPONENTIZE_JS_VERSION already in ${dir#"$ROOT"/}"
        return
    fi
    command -v npm >/dev/null || die "npm not found (node >= 20 with npm is needed)"
    local t
    t=$(now)
    mkdir -p "$dir"
    rm -f "$dir/.installed"
    cp "$SRC/js/package.json" "$lock" "$dir/"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    local got
    got=$(node -p "require('$dir/node_modules/@bytecodealliance/componentize-js/package.json').version")
    [[ "$got" == "$COMPONENTIZE_JS_VERSION" ]] ||
        die "componentize-js $got installed, $COMPONENTIZE_JS_VERSION expected: update package.json and package-lock.json together"
    echo "$want" >"$dir/.installed"
    say "installed componentize-js $got in ${dir#"$ROOT"/} ($(since "$t"))"
}

# build_js SOURCE OUTPUT
build_js() {
    local src="$SRC/js/$1" out="$OUT/$2"
    local cjs="$TOOLCHAINS/js/node_modules/@bytecodealliance/componentize-js"
    # The WASI version the engine's fetch-event handler exports.
    local wasi
    wasi=$(grep -aom1 'wasi:http/incoming-handler@0\.2\.[0-9]*' "$cjs/lib/starlingmonkey_embedding.wasm" |
        sed 's/.*@//') || die "cannot find the WASI version of componentize-js's engine"
    grep -q "@$wasi'" "$src" ||
        die "guest-examples/js/$1 must import WASI interfaces at @$wasi, the version of componentize-js $COMPONENTIZE_JS_VERSION's engine"

    local hash
    hash=$(inputs_hash "$TOOLCHAINS/js/.installed" "$src" "$SRC/wit/world.wit" "$SRC"/wit/deps/*.wit)
    if up_to_date "$out" "$hash"; then
        built "$out" "$hash"
        return
    fi
    # WASI 0.2.12 relabelled to the engine's version; exit-with-code, stable
    # only from 0.2.12, goes back to being unstable (it is not used).
    local wit="$TOOLCHAINS/js/wit-$wasi"
    rm -rf "$wit"
    mkdir -p "$wit"
    cp -r "$SRC/wit/." "$wit/"
    sed -i -e "s/@0\.2\.12\b/@$wasi/g" \
        -e 's/@since(version = 0\.2\.12)/@unstable(feature = cli-exit-with-code)/' \
        "$wit"/*.wit "$wit"/deps/*.wit
    local t
    t=$(now)
    node "$cjs/src/cli.js" "$src" --wit "$wit" --world-name js-http -o "$out.tmp" >&2
    mv "$out.tmp" "$out"
    say "built $2 ($(since "$t"))"
    built "$out" "$hash"
}

# --- Python: componentize-py ---------------------------------------------------
install_py() {
    local venv="$TOOLCHAINS/py" want
    want="$(inputs_hash "$SRC/py/requirements.txt")"
    if [[ -f "$venv/.installed" && "$(cat "$venv/.installed")" == "$want" && -x "$venv/bin/componentize-py" ]]; then
        say "componentize-py $COMPONENTIZE_PY_VERSION already in ${venv#"$ROOT"/}"
        return
    fi
    command -v python3 >/dev/null || die "python3 not found"
    local t
    t=$(now)
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r "$SRC/py/requirements.txt" >&2
    local got
    got=$("$venv/bin/componentize-py" --version | awk '{ print $2 }')
    [[ "$got" == "$COMPONENTIZE_PY_VERSION" ]] ||
        die "componentize-py $got installed, $COMPONENTIZE_PY_VERSION expected: update requirements.txt"
    echo "$want" >"$venv/.installed"
    say "installed componentize-py $got in ${venv#"$ROOT"/} ($(since "$t"))"
}

# build_py MODULE WORLD OUTPUT
build_py() {
    local module=$1 world=$2 out="$OUT/$3" hash
    hash=$({ echo "$world"; inputs_hash "$TOOLCHAINS/py/.installed" "$SRC"/py/*.py "$SRC"/wit/world.wit "$SRC"/wit/deps/*.wit; } | sha256sum | cut -d' ' -f1)
    if up_to_date "$out" "$hash"; then
        built "$out" "$hash"
        return
    fi
    local t
    t=$(now)
    # Built from a copy: the CPython that componentize-py runs at build time
    # writes __pycache__ beside the sources it imports. Only these sources
    # go into the component: no VIRTUAL_ENV, and the venv's site-packages
    # holds nothing but componentize-py.
    local stage="$TOOLCHAINS/py/stage"
    rm -rf "$stage"
    mkdir -p "$stage"
    cp "$SRC"/py/*.py "$stage/"
    (cd "$stage" && env -u VIRTUAL_ENV "$TOOLCHAINS/py/bin/componentize-py" --quiet \
        --wit-path "$SRC/wit" --world "$world" \
        componentize --python-path . "$module" --output "$out.tmp" >&2)
    mv "$out.tmp" "$out"
    say "built $(basename "$out") ($(since "$t"))"
    built "$out" "$hash"
}

if [[ "$WANT" == all || "$WANT" == js ]]; then
    install_js
    build_js hello.js jshello.wasm
    build_js handler.js jshandler.wasm
fi
if [[ "$WANT" == all || "$WANT" == py ]]; then
    install_py
    build_py hello wasi:http/proxy@0.2.12 pyhello.wasm
    build_py cli wasi:cli/command@0.2.12 pycli.wasm
fi
