/*
 * Talking to the mesh API: api() sends the tab's token and turns error
 * answers into ApiError, streamNdjson() reads a follow stream. It also holds
 * the state the other files share (the session and the current view), so no
 * file has to import the entry point for it.
 */

/** A call that is not a stream gives up after this long, so one hung answer cannot stall refreshes. */
const CALL_TIMEOUT_MS = 15000;
export const RECONNECT_MIN_MS = 1000;
export const RECONNECT_MAX_MS = 10000;

/** What lives while signed in. */
export const session = {
  token: null,
  me: null,
  eventsCtrl: null,
  eventsTimer: 0,
  backoff: RECONNECT_MIN_MS,
  pollTimer: 0,
  debounceTimer: 0,
  refreshing: false,
  refreshAgain: false,
  /** Keys of events seen, oldest first, so a reconnect's replayed tail is not counted twice. */
  seen: new Set(),
};

/** The current view; gen changes on every navigation so late answers for an old view are dropped. */
export const view = { gen: 0, route: null, page: null, focus: false, logsCtrl: null, statsTimer: 0, flash: null };

/**
 * What a 401 for the token in use does: app.js sets it to signOut at boot,
 * so this file does not import the entry point.
 */
let unauthorized = () => {};

export function onUnauthorized(fn) {
  unauthorized = fn;
}

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

// ---------------------------------------------------------------- API

export function isAbort(e) {
  return !!e && e.name === "AbortError";
}

export function errorText(e) {
  if (e instanceof ApiError) return e.message;
  return (e && e.message) || String(e);
}

/** The API's one-line error, or a line made from the status. */
async function errorLine(res) {
  try {
    const body = await res.json();
    if (body && typeof body.error === "string" && body.error) return body.error;
  } catch (_) {
    /* not JSON: fall through */
  }
  return "The API answered " + res.status + (res.statusText ? " " + res.statusText : "") + ".";
}

/**
 * Calls the API with the bearer token. Non-2xx answers throw ApiError with
 * the API's line; a 401 also signs out. opts.raw returns the Response;
 * opts.bytes is a body sent as it is (an upload).
 */
export async function api(method, path, body, opts) {
  const o = opts || {};
  const token = session.token;
  if (!token) throw new ApiError("Signed out.", 401);
  const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  // An upload goes as it is (a File or Blob), not as JSON.
  if (o.bytes) headers["Content-Type"] = "application/octet-stream";
  // Streams run until aborted; every other call also ends after CALL_TIMEOUT_MS.
  const limits = o.raw ? [o.signal] : [o.signal, AbortSignal.timeout(CALL_TIMEOUT_MS)];
  const signal = AbortSignal.any(limits.filter(Boolean));
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: o.bytes ? o.bytes : body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
      credentials: "omit",
    });
  } catch (e) {
    if (isAbort(e)) throw e;
    throw new ApiError("Cannot reach the mesh API (" + errorText(e) + ").", 0);
  }
  if (!res.ok) {
    const line = await errorLine(res);
    // Only the token that was refused signs out; a late answer for an old one does not.
    if (res.status === 401 && session.token === token) unauthorized(line);
    throw new ApiError(line, res.status);
  }
  if (o.raw) return res;
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch (_) {
    throw new ApiError("The API answered with something other than JSON.", res.status);
  }
}

/**
 * Reads an NDJSON answer line by line until it ends or signal aborts.
 * onOpen runs once the answer's head arrived; onBatch gets the objects of
 * each chunk (malformed lines are skipped).
 */
export async function streamNdjson(path, signal, onBatch, onOpen) {
  const res = await api("GET", path, undefined, { signal, raw: true });
  if (onOpen) onOpen();
  if (!res.body) return;
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const flush = (lines) => {
    const items = [];
    for (const line of lines) {
      const t = line.trim();
      if (!t) continue;
      try {
        const item = JSON.parse(t);
        if (item && typeof item === "object") items.push(item);
      } catch (_) {
        /* a torn or foreign line: skip it */
      }
    }
    if (items.length && !signal.aborted) onBatch(items);
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split("\n");
    buffer = lines.pop();
    flush(lines);
  }
  buffer += decoder.decode();
  flush([buffer]);
}
