"""A wasi:cli/run command in Python, built by componentize-py with
scripts/toolchains.sh into guest-examples/target/other/pycli.wasm.

Prints "hello from python" and its arguments; exits with code 3 when an
argument is "fail".

sys.exit(3) alone ends the instance with code 1: the WASI preview1 adapter
under CPython's libc turns every non-zero proc_exit into wasi:cli/exit's
`exit(err)`. So `run` catches SystemExit and passes the code on through
`exit-with-code` (stable in WASI 0.2.12, linked by wasmtime 48).
"""

import sys

from wit_world import exports
from wit_world.imports import exit as wasi_exit


def main() -> None:
    print("hello from python")
    print(f"argv {sys.argv}")
    if "fail" in sys.argv[1:]:
        sys.exit(3)


class Run(exports.Run):
    def run(self) -> None:
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            sys.stdout.flush()
            sys.stderr.flush()
            if code != 0:
                wasi_exit.exit_with_code(code if 0 < code < 256 else 1)
        finally:
            sys.stdout.flush()
