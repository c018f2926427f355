"""A wasi:http/proxy web service in Python, built by componentize-py with
scripts/toolchains.sh into guest-examples/target/other/pyhello.wasm.

  GET /           -> "hello from python\n"
  GET /count      -> a per-instance counter: module state that survives from
                     one request to the next only if the host reuses the
                     instance (wasmtime serve does not: always 1)
  GET /env?name=X -> environment variable X (404 if unset); os.environ is
                     the instance's environment, not the build machine's,
                     although componentize-py pre-initializes the module
"""

import os
from urllib.parse import parse_qs, urlsplit

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Get,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

count = 0


def route(request: IncomingRequest) -> tuple[int, str]:
    global count
    count += 1
    if not isinstance(request.method(), Method_Get):
        return 405, "method not allowed\n"
    url = urlsplit(request.path_with_query() or "/")
    if url.path == "/":
        return 200, "hello from python\n"
    if url.path == "/count":
        return 200, f"count {count}\n"
    if url.path == "/env":
        name = parse_qs(url.query).get("name", [""])[0]
        value = os.environ.get(name)
        if value is None:
            return 404, f"{name} is not set\n"
        return 200, value + "\n"
    return 404, "not found\n"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        status, text = route(request)
        response = OutgoingResponse(
            Fields.from_list([("content-type", b"text/plain; charset=utf-8")])
        )
        response.set_status_code(status)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:
            stream.blocking_write_and_flush(text.encode())
        OutgoingBody.finish(body, None)
