// A wasi:http/proxy web service in JavaScript, built by componentize-js
// (StarlingMonkey) with scripts/toolchains.sh into
// guest-examples/target/other/jshello.wasm.
//
// It uses StarlingMonkey's fetch event, so an instance answers only its
// first request: the engine keeps one FetchEvent per instance and never
// resets it, and on a reused instance `respondWith` throws InvalidStateError
// ("can't be called twice on the same event") and the handler returns
// without a response. handler.js is the same service without that limit.
//
//   GET /           -> "hello from js\n"
//   GET /count      -> a per-instance counter: module state that survives
//                      from one request to the next only if the host reuses
//                      the instance (wasmtime serve does not: always 1)
//   GET /env?name=X -> the value of environment variable X (404 if unset)
import { getEnvironment } from 'wasi:cli/environment@0.2.10';

let count = 0;

function text(body, status = 200) {
  return new Response(body, {
    status,
    headers: { 'content-type': 'text/plain; charset=utf-8' },
  });
}

function handle(request) {
  count += 1;
  const url = new URL(request.url);
  if (request.method !== 'GET') {
    return text('method not allowed\n', 405);
  }
  switch (url.pathname) {
    case '/':
      return text('hello from js\n');
    case '/count':
      return text(`count ${count}\n`);
    case '/env': {
      const name = url.searchParams.get('name') ?? '';
      const found = getEnvironment().find(([k]) => k === name);
      return found ? text(`${found[1]}\n`) : text(`${name} is not set\n`, 404);
    }
    default:
      return text('not found\n', 404);
  }
}

addEventListener('fetch', (event) => {
  event.respondWith(handle(event.request));
});
