/*
 * mesh dashboard. Plain DOM, no framework. Every string from the server is
 * put on the page through text nodes or attributes, never parsed as markup,
 * so a guest's log line cannot become script. The page is re-rendered in
 * place (keyed updates), so focus and half-typed inputs survive refreshes.
 *
 * This file is the entry point (index.html loads it as a module): sign-in,
 * the live events stream, refresh scheduling and routing. dom.js and api.js
 * hold the building blocks, page.js what every page shares, overview.js,
 * service.js, charts.js and logs.js the pages; imports point only that way,
 * with no cycle. A module runs once the document is parsed, so boot() is
 * simply called at the end.
 */

import { $, el, fill, setAttr, setText, show } from "./dom.js";
import {
  api,
  ApiError,
  errorText,
  isAbort,
  onUnauthorized,
  RECONNECT_MAX_MS,
  RECONNECT_MIN_MS,
  session,
  streamNdjson,
  view,
} from "./api.js";
import { refreshOverview } from "./overview.js";
import { refreshService } from "./service.js";
import { addPageEvents, eventKey } from "./logs.js";
import { onRefresh, teardownView } from "./page.js";

const TOKEN_KEY = "mesh.token";
const POLL_MS = 5000;
const DEBOUNCE_MS = 150;
/** Event keys remembered against a reconnect's replay (it replays 50). */
const MAX_SEEN = 2000;
/** After the daemon could not be reached on a reload, try the saved token again this often. */
const RESUME_RETRY_MS = 3000;

// ---------------------------------------------------------------- session

function boot() {
  onUnauthorized(signOut);
  onRefresh(refresh);
  $("signin").addEventListener("submit", onSignIn);
  $("signout").addEventListener("click", () => signOut(""));
  $("skip-link").addEventListener("click", onSkip);
  window.addEventListener("hashchange", () => route(true));
  window.addEventListener("pagehide", stopStreams);
  window.addEventListener("pageshow", (e) => {
    if (e.persisted && session.me) {
      startEvents();
      route(false);
    }
  });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    session.token = saved;
    startSession(false);
  } else {
    showSignIn("");
  }
}

/** The skip link targets #main; with hash routing it must not change the hash. */
function onSkip(ev) {
  ev.preventDefault();
  $("main").focus();
}

async function onSignIn(ev) {
  ev.preventDefault();
  const input = $("token");
  const token = input.value.trim();
  const error = $("signin-error");
  if (!token) {
    setText(error, "Enter an API token.");
    input.focus();
    return;
  }
  setText(error, "");
  sessionStorage.setItem(TOKEN_KEY, token);
  session.token = token;
  await startSession(true);
}

async function startSession(fromForm) {
  let me;
  try {
    me = await api("GET", "/v1/whoami");
  } catch (e) {
    if (!fromForm && !(e instanceof ApiError && e.status === 401) && session.token) {
      // A reload while the daemon restarts: keep the tab's token and try again.
      setText($("load-error"), errorText(e) + " Trying again…");
      setTimeout(() => session.token && !session.me && startSession(false), RESUME_RETRY_MS);
      return;
    }
    forgetToken();
    showSignIn(errorText(e));
    return;
  }
  if (!me || typeof me !== "object") {
    forgetToken();
    showSignIn("The API did not say who this token is.");
    return;
  }
  session.me = me;
  $("token").value = "";
  show($("signin-view"), false);
  show($("topbar"), true);
  setText($("whoami"), String(me.env || "") + (me.operator ? " (operator)" : ""));
  startEvents();
  clearInterval(session.pollTimer);
  session.pollTimer = setInterval(refresh, POLL_MS);
  if (fromForm && location.hash !== "#/") history.replaceState(null, "", "#/");
  route(fromForm); // after the form, focus goes to the page heading (the form is gone)
}

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  session.token = null;
}

function showSignIn(message) {
  show($("topbar"), false);
  $("view").replaceChildren();
  setText($("load-error"), "");
  show($("signin-view"), true);
  setText($("signin-error"), message);
  $("token").focus();
}

function stopStreams() {
  stopEvents();
  teardownView();
}

/** Stops everything tied to the token and shows the sign-in form with message. */
function signOut(message) {
  stopStreams();
  clearInterval(session.pollTimer);
  clearTimeout(session.debounceTimer);
  view.gen++;
  view.route = null;
  forgetToken();
  session.me = null;
  session.seen.clear();
  showSignIn(message);
}

// ---------------------------------------------------------------- live events

function stopEvents() {
  clearTimeout(session.eventsTimer);
  if (session.eventsCtrl) session.eventsCtrl.abort();
  session.eventsCtrl = null;
}

/** One follow stream of events while signed in; reconnects with back-off 1s..10s. */
function startEvents() {
  stopEvents();
  const ctrl = new AbortController();
  session.eventsCtrl = ctrl;
  streamNdjson("/v1/events?follow=true&tail=50", ctrl.signal, onEvents, () => {
    session.backoff = RECONNECT_MIN_MS;
    scheduleRefresh(); // events may have been missed while disconnected
  })
    .then(
      () => null,
      (e) => e,
    )
    .then((e) => {
      if (ctrl.signal.aborted || session.eventsCtrl !== ctrl || !session.me) return;
      if (e && e.status === 401) return;
      session.eventsTimer = setTimeout(startEvents, session.backoff);
      session.backoff = Math.min(session.backoff * 2, RECONNECT_MAX_MS);
    });
}

function onEvents(batch) {
  const fresh = [];
  for (const e of batch) {
    const key = eventKey(e);
    if (session.seen.has(key)) continue;
    session.seen.add(key);
    // A Set iterates in insertion order: the first is the oldest.
    if (session.seen.size > MAX_SEEN) session.seen.delete(session.seen.values().next().value);
    fresh.push(e);
  }
  if (!fresh.length) return;
  addPageEvents(fresh);
  // The operator's stream carries every environment's events; only its own
  // change what the page shows (the poll keeps the environments table fresh).
  const me = session.me;
  if (fresh.some((e) => !e.env || !me || e.env === me.env)) scheduleRefresh();
}

function scheduleRefresh() {
  clearTimeout(session.debounceTimer);
  session.debounceTimer = setTimeout(refresh, DEBOUNCE_MS);
}

/** Re-fetches the current view's data; one at a time, coalescing calls made meanwhile. */
async function refresh() {
  if (!session.me) return;
  if (session.refreshing) {
    session.refreshAgain = true;
    return;
  }
  session.refreshing = true;
  try {
    do {
      session.refreshAgain = false;
      await refreshView();
    } while (session.refreshAgain && session.me);
  } finally {
    session.refreshing = false;
  }
}

async function refreshView() {
  const gen = view.gen;
  const r = view.route;
  if (!r) return;
  try {
    if (r.kind === "service") await refreshService(gen, r);
    else await refreshOverview(gen);
    if (gen === view.gen) setText($("load-error"), "");
  } catch (e) {
    if (gen === view.gen && session.me && !isAbort(e)) setText($("load-error"), errorText(e));
  }
}

// ---------------------------------------------------------------- routing

function decode(s) {
  try {
    return decodeURIComponent(s);
  } catch (_) {
    return s;
  }
}

function parseRoute() {
  const m = /^#\/service\/([^/]+)\/([^/]+)\/?$/.exec(location.hash);
  if (m) return { kind: "service", stack: decode(m[1]), name: decode(m[2]) };
  return { kind: "overview" };
}

function route(focus) {
  if (!session.me) return;
  teardownView();
  view.gen++;
  view.route = parseRoute();
  view.page = null;
  view.focus = focus;
  setText($("load-error"), "");
  fill($("view"), el("p", { class: "loading" }, "Loading…"));
  setAttr($("nav-overview"), "aria-current", view.route.kind === "overview" ? "page" : null);
  refresh();
}

boot();
