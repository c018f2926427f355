// The same web service as hello.js, written against wasi:http directly
// (an exported `incomingHandler`) instead of StarlingMonkey's fetch event.
// Built by scripts/toolchains.sh into guest-examples/target/other/jshandler.wasm.
//
// Unlike hello.js, an instance of this one answers any number of requests:
// StarlingMonkey keeps one FetchEvent per instance and never resets it, so
// a fetch-event component answers only its first request, while an
// explicit handler has no such state. Same routes as hello.js.
import { getEnvironment } from 'wasi:cli/environment@0.2.10';
import {
  Fields,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from 'wasi:http/types@0.2.10';

let count = 0;
const encoder = new TextEncoder();

function route(request) {
  count += 1;
  const url = new URL(request.pathWithQuery() ?? '/', 'http://localhost');
  if (request.method().tag !== 'get') {
    return [405, 'method not allowed\n'];
  }
  switch (url.pathname) {
    case '/':
      return [200, 'hello from js\n'];
    case '/count':
      return [200, `count ${count}\n`];
    case '/env': {
      const name = url.searchParams.get('name') ?? '';
      const found = getEnvironment().find(([k]) => k === name);
      return found ? [200, `${found[1]}\n`] : [404, `${name} is not set\n`];
    }
    default:
      return [404, 'not found\n'];
  }
}

export const incomingHandler = {
  handle(request, responseOut) {
    const [status, text] = route(request);
    const response = new OutgoingResponse(
      Fields.fromList([['content-type', encoder.encode('text/plain; charset=utf-8')]]),
    );
    response.setStatusCode(status);
    const body = response.body();
    ResponseOutparam.set(responseOut, { tag: 'ok', val: response });
    const stream = body.write();
    stream.blockingWriteAndFlush(encoder.encode(text));
    stream[Symbol.dispose]();
    OutgoingBody.finish(body, undefined);
  },
};
