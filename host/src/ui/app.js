"use strict";
/*
 * mesh dashboard. Plain DOM, no framework. Every string from the server is
 * put on the page through text nodes or attributes, never parsed as markup,
 * so a guest's log line cannot become script. The page is re-rendered in
 * place (keyed updates), so focus and half-typed inputs survive refreshes.
 */
(() => {
  const TOKEN_KEY = "mesh.token";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const MAX_LOG_LINES = 2000;
  const MAX_EVENTS = 50;
  const POLL_MS = 5000;
  const STATS_MS = 10000;
  const DEBOUNCE_MS = 150;
  const RECONNECT_MIN_MS = 1000;
  const RECONNECT_MAX_MS = 10000;
  /** u32::MAX: a count quota that means "no limit". */
  const COUNT_UNLIMITED = 4294967295;
  /** u64::MAX does not survive as a JSON number; anything this big means "no limit". */
  const BYTES_UNLIMITED = 2 ** 62;
  const KIB = 1024;
  const MIB = KIB * 1024;
  const GIB = MIB * 1024;
  const CHART_W = 300;
  const CHART_H = 100;

  /** What lives while signed in. */
  const session = {
    token: null,
    me: null,
    eventsCtrl: null,
    eventsTimer: 0,
    backoff: RECONNECT_MIN_MS,
    pollTimer: 0,
    debounceTimer: 0,
    refreshing: false,
    refreshAgain: false,
    /** Keys of events seen, so a reconnect's replayed tail is not counted twice. */
    seen: new Set(),
    seenOrder: [],
    recent: [],
  };

  /** The current view; gen changes on every navigation so late answers for an old view are dropped. */
  const view = { gen: 0, route: null, page: null, focus: false, logsCtrl: null, statsTimer: 0 };

  /** Per-node bookkeeping (keys, child references) without touching the DOM. */
  const keyOf = new WeakMap();
  const refsOf = new WeakMap();

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.name = "ApiError";
      this.status = status;
    }
  }

  // ---------------------------------------------------------------- DOM helpers

  function $(id) {
    return document.getElementById(id);
  }

  /** Builds an element: attrs are set with setAttribute (never style or on*), strings become text nodes. */
  function el(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  }

  function svgEl(tag, attrs, ...children) {
    return build(document.createElementNS(SVG_NS, tag), attrs, children);
  }

  function build(node, attrs, children) {
    if (attrs) {
      for (const [name, value] of Object.entries(attrs)) {
        if (value === null || value === undefined || value === false) continue;
        if (name === "style" || /^on/i.test(name)) throw new Error("el: attribute not allowed: " + name);
        node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    appendAll(node, children);
    return node;
  }

  function appendAll(node, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) appendAll(node, child);
      else if (typeof child === "object") node.appendChild(child);
      else node.appendChild(document.createTextNode(String(child)));
    }
  }

  /** Replaces a node's children (strings as text). */
  function fill(node, ...children) {
    node.replaceChildren();
    appendAll(node, children);
  }

  /** Sets text only when it changed, so unchanged cells are not touched. */
  function setText(node, text) {
    if (!node) return;
    const value = text === null || text === undefined ? "" : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function setAttr(node, name, value) {
    if (value === null || value === undefined) {
      if (node.hasAttribute(name)) node.removeAttribute(name);
    } else if (node.getAttribute(name) !== String(value)) {
      node.setAttribute(name, String(value));
    }
  }

  function show(node, visible) {
    if (node && node.hidden === visible) node.hidden = !visible;
  }

  /**
   * Keyed update of parent's children: reuses the node of each key (so
   * focus, open <details> and scroll survive), makes missing ones, drops
   * stale ones and moves nodes only when out of order.
   */
  function sync(parent, items, keyFn, make, update) {
    const keys = items.map((item) => String(keyFn(item)));
    const wanted = new Set(keys);
    const existing = new Map();
    for (const child of Array.from(parent.children)) {
      const key = keyOf.get(child);
      if (key !== undefined && wanted.has(key) && !existing.has(key)) existing.set(key, child);
      else child.remove();
    }
    let prev = null;
    items.forEach((item, i) => {
      let node = existing.get(keys[i]);
      if (!node) {
        node = make(item);
        keyOf.set(node, keys[i]);
      }
      if (update) update(node, item);
      const expected = prev ? prev.nextSibling : parent.firstChild;
      if (expected !== node) parent.insertBefore(node, expected);
      prev = node;
    });
  }

  function stateClass(word) {
    return "state-" + String(word || "unknown").replace(/[^a-z0-9_-]/gi, "");
  }

  /** Sets a cell's state word and its colour class, keeping its base class. */
  function setState(node, base, word) {
    setText(node, word || "");
    const cls = base + " " + stateClass(word);
    if (node.className !== cls) node.className = cls;
  }

  function badge(word) {
    return el("span", { class: "state " + stateClass(word) }, word || "");
  }

  function colHeads(...names) {
    return el("thead", null, el("tr", null, names.map((n) => el("th", { scope: "col" }, n))));
  }

  function fact(label, value, attrs) {
    const dd = el("dd", attrs || null);
    const row = el("div", { class: "fact" }, el("dt", null, label), dd);
    if (value !== undefined) appendAll(dd, [value]);
    return { row, dd };
  }

  // ---------------------------------------------------------------- formatting

  /** Parses RFC 3339, trimming sub-millisecond digits some engines reject. */
  function parseTime(iso) {
    if (!iso) return null;
    const t = Date.parse(String(iso).replace(/(\.\d{3})\d+/, "$1"));
    return Number.isNaN(t) ? null : t;
  }

  function span(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m";
    const h = Math.floor(m / 60);
    if (h < 24) return h + "h";
    return Math.floor(h / 24) + "d";
  }

  /** "12s", "3m", "2h", "4d" since iso; "-" when unknown. */
  function age(iso) {
    const t = parseTime(iso);
    return t === null ? "-" : span((Date.now() - t) / 1000);
  }

  function ago(iso) {
    const a = age(iso);
    return a === "-" ? "-" : a + " ago";
  }

  function until(iso) {
    const t = parseTime(iso);
    if (t === null) return "-";
    const s = (t - Date.now()) / 1000;
    return s < 1 ? "due now" : "in " + span(s);
  }

  function pad2(n) {
    return String(n).padStart(2, "0");
  }

  function hms(iso) {
    const t = parseTime(iso);
    if (t === null) return "";
    const d = new Date(t);
    return pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds());
  }

  function absTime(iso) {
    const t = parseTime(iso);
    if (t === null) return "";
    const d = new Date(t);
    return d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + " " + hms(iso);
  }

  function timeEl(iso, text, cls) {
    return el("time", { datetime: iso || null, title: absTime(iso) || null, class: cls || null }, text);
  }

  function trimNumber(n) {
    return Number.isInteger(n) ? String(n) : n.toFixed(1).replace(/\.0$/, "");
  }

  /** Like the CLI: exact units when they divide, else one decimal. */
  function fmtBytes(n) {
    if (typeof n !== "number") return "-";
    if (n >= BYTES_UNLIMITED) return "unlimited";
    if (n >= GIB) return trimNumber(n / GIB) + " GiB";
    if (n >= MIB) return trimNumber(n / MIB) + " MiB";
    if (n >= KIB) return trimNumber(n / KIB) + " KiB";
    return n + " bytes";
  }

  function fmtMiB(n) {
    return typeof n === "number" ? trimNumber(n / MIB) + " MiB" : "-";
  }

  function fmtCount(n) {
    if (typeof n !== "number") return "-";
    return n >= COUNT_UNLIMITED ? "unlimited" : String(n);
  }

  function fmtDuration(ms) {
    if (typeof ms !== "number") return "-";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return trimNumber(Math.round(ms / 100) / 10) + " s";
    const s = Math.round(ms / 1000);
    return Math.floor(s / 60) + "m " + (s % 60) + "s";
  }

  function fmtRate(x) {
    if (!x) return "0/s";
    return (x >= 10 ? x.toFixed(0) : x >= 1 ? x.toFixed(1) : x.toFixed(2)) + "/s";
  }

  function fmtMs(x) {
    if (typeof x !== "number") return "-";
    return (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)) + " ms";
  }

  /** argv as a shell would read it back. */
  function fmtCommand(argv) {
    return (argv || [])
      .map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : "'" + String(a).replace(/'/g, "'\\''") + "'"))
      .join(" ");
  }

  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  function isHttpUrl(u) {
    return /^https?:\/\//i.test(String(u));
  }

  function enc(s) {
    return encodeURIComponent(s);
  }

  function servicePath(stack, name) {
    return "/v1/services/" + enc(stack) + "/" + enc(name);
  }

  function serviceHref(stack, name) {
    return "#/service/" + enc(stack) + "/" + enc(name);
  }

  // ---------------------------------------------------------------- API

  function isAbort(e) {
    return !!e && e.name === "AbortError";
  }

  function errorText(e) {
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
   * the API's line; a 401 also signs out. opts.raw returns the Response.
   */
  async function api(method, path, body, opts) {
    const o = opts || {};
    const token = session.token;
    if (!token) throw new ApiError("Signed out.", 401);
    const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: o.signal,
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
      if (res.status === 401 && session.token === token) signOut(line);
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
  async function streamNdjson(path, signal, onBatch, onOpen) {
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

  // ---------------------------------------------------------------- session

  function boot() {
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
    session.seenOrder = [];
    session.recent = [];
    showSignIn(message);
  }

  // ---------------------------------------------------------------- live events

  function eventKey(e) {
    return [e.time, e.env, e.kind, e.service, e.instance, e.message].join("\u0000");
  }

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
      session.seenOrder.push(key);
      if (session.seenOrder.length > 2000) session.seen.delete(session.seenOrder.shift());
      session.recent.push(e);
      if (session.recent.length > 500) session.recent.shift();
      fresh.push(e);
    }
    if (!fresh.length) return;
    addPageEvents(fresh);
    scheduleRefresh();
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

  /** Stops what the current view runs (log stream, stats timer). */
  function teardownView() {
    if (view.logsCtrl) view.logsCtrl.abort();
    view.logsCtrl = null;
    clearInterval(view.statsTimer);
    view.statsTimer = 0;
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

  /** Puts a new page in the view and, after navigation, focus on its heading. */
  function mount(page, root) {
    teardownView();
    view.page = page;
    fill($("view"), root);
  }

  function focusHeading(node) {
    if (view.focus && node) {
      view.focus = false;
      node.focus();
    }
  }

  // ---------------------------------------------------------------- actions

  function actionRegions() {
    return [
      el("p", { id: "action-status", class: "msg ok", role: "status", "aria-live": "polite" }),
      el("p", { id: "action-error", class: "msg error", role: "alert", "aria-live": "assertive" }),
    ];
  }

  function actionError(message) {
    setText($("action-status"), "");
    setText($("action-error"), message);
  }

  /** Runs one action: clears both regions, shows its line or the API's error, then refreshes. */
  async function runAction(button, work) {
    if (button.getAttribute("aria-disabled") === "true") return;
    const gen = view.gen;
    setText($("action-status"), "");
    setText($("action-error"), "");
    // aria-disabled rather than disabled: a disabled button would drop keyboard focus.
    button.setAttribute("aria-disabled", "true");
    try {
      const message = await work();
      if (gen === view.gen) setText($("action-status"), message);
      await refresh();
    } catch (e) {
      if (gen === view.gen && session.me && !isAbort(e)) setText($("action-error"), errorText(e));
    } finally {
      button.removeAttribute("aria-disabled");
    }
  }

  // ---------------------------------------------------------------- instance table (shared)

  function instanceBlock() {
    const tbody = el("tbody");
    const wrap = el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "grid instances" },
        el("caption", { class: "visually-hidden" }, "Instances"),
        colHeads("Instance", "State", "Restarts", "Exit", "Age", "Node", "Version", "Message"),
        tbody,
      ),
    );
    const empty = el("p", { class: "empty" }, "No instances.");
    return { node: el("div", { class: "instances-block" }, wrap, empty), wrap, tbody, empty };
  }

  function makeInstanceRow(inst) {
    return el(
      "tr",
      { "data-instance": inst.id },
      // data-label names each cell where a narrow screen stacks the row.
      el("th", { scope: "row", class: "id" }),
      el("td", { class: "state", "data-label": "State" }),
      el("td", { class: "restarts num", "data-label": "Restarts" }),
      el("td", { class: "exit num", "data-label": "Exit" }),
      el("td", { class: "age", "data-label": "Age" }),
      el("td", { class: "node", "data-label": "Node" }),
      el("td", { class: "version", "data-label": "Version" }),
      el("td", { class: "message", "data-label": "Message" }),
    );
  }

  function updateInstanceRow(tr, inst) {
    const c = tr.cells;
    setText(c[0], inst.id);
    setState(c[1], "state", inst.state);
    setAttr(c[1], "title", inst.state === "backoff" && inst.backoff_ms ? "retrying in " + fmtDuration(inst.backoff_ms) : null);
    setText(c[2], inst.restarts ?? 0);
    setText(c[3], inst.exit_code === null || inst.exit_code === undefined ? "-" : inst.exit_code);
    setText(c[4], age(inst.started_at));
    setAttr(c[4], "title", absTime(inst.started_at) || null);
    setText(c[5], inst.node || "");
    setText(c[6], inst.version === undefined || inst.version === null ? "" : "v" + inst.version);
    setText(c[7], inst.message || "");
  }

  function updateInstances(block, svc) {
    const list = svc.instances || [];
    sync(block.tbody, list, (i) => i.id, makeInstanceRow, updateInstanceRow);
    show(block.wrap, list.length > 0);
    // A cron job between runs has no instances: its run summary says enough.
    show(block.empty, list.length === 0 && svc.type !== "cron");
  }

  function runningCount(svc) {
    return (svc.instances || []).filter((i) => i.state === "running").length;
  }

  function makeEndpoint(url) {
    const link = isHttpUrl(url)
      ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer", "aria-describedby": "new-tab-note" }, url)
      : el("span", null, url);
    return el("li", null, link);
  }

  function updateEndpoints(list, none, svc) {
    const urls = svc.endpoints || [];
    sync(list, urls, (u) => u, makeEndpoint);
    show(list, urls.length > 0);
    show(none, urls.length === 0);
  }

  function endpointsCell() {
    const list = el("ul", { class: "endpoint-list" });
    const none = el("span", { class: "muted" }, "not published");
    return { list, none, nodes: [list, none] };
  }

  function scheduleText(svc) {
    if (!svc.schedule) return "";
    return svc.schedule + (svc.timezone ? " (" + svc.timezone + ")" : "");
  }

  // ---------------------------------------------------------------- overview

  async function refreshOverview(gen) {
    const me = session.me;
    const [services, stacks, envs] = await Promise.all([
      api("GET", "/v1/services"),
      api("GET", "/v1/stacks"),
      me.operator ? api("GET", "/v1/envs") : Promise.resolve(null),
    ]);
    if (gen !== view.gen) return;
    let page = view.page;
    if (!page || page.kind !== "overview") page = buildOverview(me.operator);
    if (page.envBody) renderEnvs(page, Array.isArray(envs) ? envs : []);
    renderStacks(page, Array.isArray(stacks) ? stacks : []);
    renderServices(page, Array.isArray(services) ? services : []);
    focusHeading(page.heading);
  }

  function buildOverview(operator) {
    const page = { kind: "overview" };
    page.heading = el("h1", { tabindex: "-1" }, "Overview");
    const parts = [page.heading, ...actionRegions()];
    if (operator) {
      page.envBody = el("tbody");
      parts.push(
        el(
          "section",
          { id: "envs", "aria-labelledby": "envs-title" },
          el("h2", { id: "envs-title" }, "Environments"),
          el(
            "div",
            { class: "table-wrap" },
            el(
              "table",
              { class: "grid" },
              colHeads("Name", "Alias", "Outbound", "Services", "Instances", "Memory", "Code", "Created"),
              page.envBody,
            ),
          ),
        ),
      );
    }
    page.stackList = el("div", { class: "stack-list" });
    page.stacksEmpty = el("p", { class: "empty" }, "No stacks yet.");
    page.stacks = el(
      "section",
      { id: "stacks", "aria-labelledby": "stacks-title" },
      el("h2", { id: "stacks-title" }, "Stacks"),
      page.stacksEmpty,
      page.stackList,
    );
    page.stacks.addEventListener("click", onStacksClick);
    page.groups = el("div", { class: "groups" });
    page.servicesEmpty = el("p", { class: "empty" }, "No services yet.");
    parts.push(
      page.stacks,
      el(
        "section",
        { id: "services", "aria-labelledby": "services-title" },
        el("h2", { id: "services-title" }, "Services"),
        page.servicesEmpty,
        page.groups,
      ),
    );
    mount(page, el("div", { id: "overview" }, parts));
    return page;
  }

  function renderEnvs(page, envs) {
    const sorted = envs.slice().sort((a, b) => String(a.name).localeCompare(String(b.name)));
    sync(page.envBody, sorted, (e) => e.name, makeEnvRow, updateEnvRow);
  }

  function makeEnvRow(env) {
    return el(
      "tr",
      { "data-env": env.name },
      el("th", { scope: "row" }),
      el("td", { class: "alias" }),
      el("td", { class: "outbound" }),
      el("td", { class: "num services" }),
      el("td", { class: "num instances" }),
      el("td", { class: "num memory" }),
      el("td", { class: "num code" }),
      el("td", { class: "age" }),
    );
  }

  function updateEnvRow(tr, env) {
    const q = env.quotas || {};
    const c = tr.cells;
    setText(c[0], env.name);
    setText(c[1], env.alias || "");
    setText(c[2], env.outbound || "");
    setText(c[3], fmtCount(q.services) + " / " + fmtCount(q.max_services));
    setText(c[4], fmtCount(q.instances) + " / " + fmtCount(q.max_instances));
    setText(c[5], fmtBytes(q.memory_bytes) + " / " + fmtBytes(q.max_memory_bytes));
    setText(c[6], fmtBytes(q.code_bytes) + " / " + fmtBytes(q.max_code_bytes));
    setText(c[7], ago(env.created_at));
  }

  function renderStacks(page, stacks) {
    const sorted = stacks.slice().sort((a, b) => String(a.name).localeCompare(String(b.name)));
    show(page.stacksEmpty, sorted.length === 0);
    sync(page.stackList, sorted, (s) => s.name, makeStack, updateStack);
  }

  function makeStack(stack) {
    const r = { name: stack.name, version: null };
    r.version = el("span", { class: "stack-version" });
    r.meta = el("p", { class: "meta" });
    r.error = el("p", { class: "msg error", role: "alert" });
    r.list = el("ol", { class: "version-list", "data-empty": "Loading versions…" });
    r.details = el("details", { class: "versions" }, el("summary", null, "Versions"), r.error, r.list);
    const node = el(
      "article",
      { class: "card stack", "data-stack": stack.name },
      el("header", { class: "card-head" }, el("h3", null, stack.name), r.version),
      r.meta,
      r.details,
    );
    r.details.addEventListener("toggle", () => {
      if (r.details.open) loadVersions(node);
    });
    refsOf.set(node, r);
    return node;
  }

  function updateStack(node, stack) {
    const r = refsOf.get(node);
    const changed = r.shown !== undefined && r.shown !== stack.version;
    r.shown = stack.version;
    setText(r.version, "v" + stack.version);
    const components = Object.keys(stack.components || {}).sort();
    const services = (stack.services || []).slice().sort();
    setText(
      r.meta,
      "Components: " + (components.join(", ") || "none") + ". Services: " + (services.join(", ") || "none") + ".",
    );
    if (changed && r.details.open) loadVersions(node);
  }

  async function loadVersions(node) {
    const r = refsOf.get(node);
    const gen = view.gen;
    try {
      const versions = await api("GET", "/v1/stacks/" + enc(r.name) + "/versions");
      if (gen !== view.gen) return;
      setText(r.error, "");
      const sorted = (Array.isArray(versions) ? versions : []).slice().sort((a, b) => b.number - a.number);
      setAttr(r.list, "data-empty", "No versions.");
      sync(r.list, sorted, (v) => v.number, makeVersion, updateVersion);
    } catch (e) {
      if (gen === view.gen && !isAbort(e)) setText(r.error, errorText(e));
    }
  }

  function makeVersion(v) {
    return el("li", { "data-version": v.number });
  }

  function updateVersion(li, v) {
    const r = refsOf.get(li);
    // Rebuild only when "current" moved, so a focused rollback button survives refreshes.
    if (!r || r.current !== !!v.current) {
      const time = timeEl(v.created_at, ago(v.created_at), "version-time");
      fill(
        li,
        el("span", { class: "version-number" }, "v" + v.number),
        " ",
        el("span", { class: "version-reason" }, v.reason || ""),
        " ",
        time,
        " ",
        v.current
          ? el("span", { class: "current-marker" }, "current")
          : el(
              "button",
              { type: "button", class: "small", "data-action": "rollback", "data-version": v.number },
              "Roll back to v" + v.number,
            ),
      );
      refsOf.set(li, { current: !!v.current, time });
    } else {
      setText(r.time, ago(v.created_at));
    }
  }

  function onStacksClick(ev) {
    const button = ev.target.closest("button[data-action='rollback']");
    if (!button) return;
    const holder = button.closest("[data-stack]");
    const stack = holder.getAttribute("data-stack");
    const to = Number(button.getAttribute("data-version"));
    if (!window.confirm("Roll back stack " + stack + " to v" + to + "? Its services restart on that code.")) return;
    runAction(button, async () => {
      const res = await api("POST", "/v1/stacks/" + enc(stack) + "/rollback", { to });
      loadVersions(holder);
      const now = res && res.version ? " (now v" + res.version.number + ")" : "";
      const restarting = res && res.restarting && res.restarting.length ? "; restarting " + res.restarting.join(", ") : "";
      return "Rolled back " + stack + " to v" + to + now + restarting + ".";
    });
  }

  function renderServices(page, services) {
    const groups = new Map();
    const sorted = services
      .slice()
      .sort((a, b) => String(a.stack).localeCompare(String(b.stack)) || String(a.name).localeCompare(String(b.name)));
    for (const s of sorted) {
      if (!groups.has(s.stack)) groups.set(s.stack, []);
      groups.get(s.stack).push(s);
    }
    show(page.servicesEmpty, sorted.length === 0);
    sync(page.groups, Array.from(groups), (g) => g[0], makeGroup, updateGroup);
  }

  function makeGroup([stack]) {
    const cards = el("div", { class: "cards" });
    const node = el(
      "div",
      { class: "stack-group", "data-group": stack },
      el("h3", null, el("span", { class: "muted" }, "Stack "), stack),
      cards,
    );
    refsOf.set(node, { cards });
    return node;
  }

  function updateGroup(node, [, services]) {
    sync(refsOf.get(node).cards, services, (s) => s.name, makeServiceCard, updateServiceCard);
  }

  function makeServiceCard(svc) {
    const r = {};
    r.type = el("span", { class: "tag" });
    r.kind = el("span", { class: "tag" });
    r.wanted = el("span", { class: "wanted" });
    r.running = el("span", { class: "running" });
    r.endpoints = endpointsCell();
    const endpoints = fact("Endpoints", r.endpoints.nodes);
    r.endpointsRow = endpoints.row;
    const schedule = fact("Schedule");
    r.scheduleRow = schedule.row;
    r.schedule = schedule.dd;
    r.cron = el("p", { class: "cron-summary" });
    r.instances = instanceBlock();
    const node = el(
      "article",
      { class: "card service", "data-service": svc.stack + "/" + svc.name },
      el(
        "header",
        { class: "card-head" },
        el("h4", null, el("a", { href: serviceHref(svc.stack, svc.name) }, svc.name)),
        r.type,
        r.kind,
      ),
      el(
        "dl",
        { class: "facts" },
        fact("Wanted", r.wanted).row,
        fact("Running", r.running).row,
        r.endpointsRow,
        r.scheduleRow,
      ),
      r.cron,
      r.instances.node,
    );
    refsOf.set(node, r);
    return node;
  }

  function updateServiceCard(node, svc) {
    const r = refsOf.get(node);
    setText(r.type, svc.type);
    setText(r.kind, svc.kind);
    setText(r.wanted, svc.instances_desired ?? 0);
    setText(r.running, runningCount(svc));
    updateEndpoints(r.endpoints.list, r.endpoints.none, svc);
    show(r.endpointsRow, (svc.endpoints || []).length > 0 || svc.type === "web");
    show(r.scheduleRow, !!svc.schedule);
    setText(r.schedule, scheduleText(svc));
    show(r.cron, svc.type === "cron");
    if (svc.type === "cron") renderCronSummary(r.cron, svc);
    updateInstances(r.instances, svc);
  }

  /** "Last run #12 succeeded 3s ago. Next run in 1s." */
  function renderCronSummary(p, svc) {
    const last = (svc.runs || [])[0];
    const next = svc.next_run ? ["Next run ", timeEl(svc.next_run, until(svc.next_run)), "."] : ["No next run."];
    if (last) {
      fill(p, "Last run #" + last.number + " ", badge(last.status), " " + ago(last.started_at) + ". ", next);
    } else {
      fill(p, "No runs yet. ", next);
    }
  }

  // ---------------------------------------------------------------- service page

  async function refreshService(gen, r) {
    let svc;
    try {
      svc = await api("GET", servicePath(r.stack, r.name));
    } catch (e) {
      if (e instanceof ApiError && e.status === 404 && gen === view.gen) {
        showMissing(r);
        return;
      }
      throw e;
    }
    if (gen !== view.gen || !svc) return;
    let page = view.page;
    if (!page || page.kind !== "service" || page.type !== svc.type) page = buildServicePage(svc);
    updateServicePage(page, svc);
    focusHeading(page.heading);
  }

  function showMissing(r) {
    if (view.page && view.page.kind === "missing") return;
    const heading = el("h1", { id: "not-found-title", tabindex: "-1" }, "No service " + r.stack + "/" + r.name);
    mount(
      { kind: "missing" },
      el(
        "section",
        { id: "not-found", "aria-labelledby": "not-found-title" },
        heading,
        el("p", null, el("a", { href: "#/" }, "Back to the overview")),
      ),
    );
    focusHeading(heading);
  }

  function buildServicePage(svc) {
    const key = svc.stack + "/" + svc.name;
    const cron = svc.type === "cron";
    const p = {
      kind: "service",
      type: svc.type,
      key,
      stack: svc.stack,
      name: svc.name,
      base: servicePath(svc.stack, svc.name),
      events: [],
      eventKeys: new Set(),
      seq: 0,
    };
    p.heading = el(
      "h1",
      { id: "service-title", tabindex: "-1" },
      svc.name,
      el("span", { class: "muted subtitle" }, " in stack " + svc.stack),
    );

    const parts = [
      el("p", { class: "crumbs" }, el("a", { href: "#/" }, "Overview"), " / " + key),
      p.heading,
      el("div", { class: "columns" }, buildSummary(p, svc), buildActions(p, svc)),
      buildInstancesSection(p),
    ];
    if (cron) parts.push(buildRuns(p));
    if (svc.type === "web") parts.push(buildCharts(p));
    parts.push(buildLogs(p), buildEvents(p));
    mount(p, el("section", { id: "service", "data-service": key, "aria-labelledby": "service-title" }, parts));

    startLogs(p);
    if (svc.type === "web") {
      loadStats(p);
      view.statsTimer = setInterval(() => loadStats(p), STATS_MS);
    }
    addPageEvents(session.recent);
    loadServiceEvents(p);
    return p;
  }

  function buildSummary(p, svc) {
    const f = (label, name, attrs) => {
      const item = fact(label, undefined, attrs);
      p["f_" + name] = item;
      return item.row;
    };
    p.endpoints = endpointsCell();
    const endpointsFact = fact("Endpoints", p.endpoints.nodes);
    p.envBody = el("tbody");
    p.envDetails = el(
      "details",
      { class: "env-vars" },
      (p.envSummary = el("summary", null, "Environment variables")),
      el(
        "div",
        { class: "table-wrap" },
        el("table", { class: "grid" }, colHeads("Name", "Value"), p.envBody),
      ),
    );
    return el(
      "section",
      { id: "summary", "aria-labelledby": "summary-title" },
      el("h2", { id: "summary-title" }, "Summary"),
      el(
        "dl",
        { class: "facts summary" },
        f("Type", "type"),
        f("Command", "command", { class: "mono" }),
        f("Memory limit", "memory"),
        f("Version", "version"),
        endpointsFact.row,
        f("DNS name", "dns", { class: "mono" }),
        f("Serving", "serving"),
        f("Schedule", "schedule"),
        f("Timezone", "timezone"),
        f("Next run", "next"),
        f("Timeout", "timeout"),
        f("Created", "created"),
      ),
      p.envDetails,
    );
  }

  function buildInstancesSection(p) {
    p.wanted = el("span", { class: "wanted" });
    p.running = el("span", { class: "running" });
    p.instances = instanceBlock();
    return el(
      "section",
      { id: "instances-section", "aria-labelledby": "instances-title" },
      el("h2", { id: "instances-title" }, "Instances"),
      el("p", { class: "counts" }, p.running, " running of ", p.wanted, " wanted"),
      p.instances.node,
    );
  }

  function field(id, label, attrs) {
    return el("div", { class: "field" }, el("label", { for: id }, label), el("input", Object.assign({ id }, attrs)));
  }

  function buildActions(p, svc) {
    const cron = svc.type === "cron";
    const items = [];
    if (!cron) {
      const scale = el(
        "form",
        { id: "scale-form", class: "action" },
        field("scale-input", "Instances", {
          type: "number",
          min: "0",
          step: "1",
          inputmode: "numeric",
          value: svc.instances_desired ?? 0,
        }),
        el("button", { id: "scale-button", type: "submit" }, "Scale"),
      );
      scale.addEventListener("submit", (ev) => onScale(ev, p));
      const restart = el("button", { id: "restart-button", type: "button" }, "Restart");
      restart.addEventListener("click", () => onRestart(restart, p));
      items.push(
        scale,
        el("div", { class: "action" }, el("p", { class: "hint" }, "Replace every instance, one at a time."), restart),
      );
    } else {
      const trigger = el("button", { id: "trigger-button", type: "button" }, "Run now");
      trigger.addEventListener("click", () => onTrigger(trigger, p));
      items.push(el("div", { class: "action" }, el("p", { class: "hint" }, "Start a run outside the schedule."), trigger));
    }
    const publish = el(
      "form",
      { id: "publish-form", class: "action" },
      field("publish-endpoint", "Endpoint", { type: "text", autocomplete: "off", spellcheck: "false", placeholder: "www" }),
      field("publish-path", "Path", { type: "text", autocomplete: "off", spellcheck: "false", placeholder: "/ (optional)" }),
      el("button", { id: "publish-button", type: "submit" }, "Publish"),
    );
    publish.addEventListener("submit", (ev) => onPublish(ev, p));
    p.unpublishList = el("ul", { id: "unpublish-list", class: "plain", "data-empty": "Not published." });
    const section = el(
      "section",
      { id: "actions", "aria-labelledby": "actions-title" },
      el("h2", { id: "actions-title" }, "Actions"),
      actionRegions(),
      el("div", { class: "action-list" }, items, publish, el("div", { class: "action" }, p.unpublishList)),
    );
    section.addEventListener("click", (ev) => {
      const button = ev.target.closest("button[data-action='unpublish']");
      if (button) onUnpublish(button, p);
    });
    return section;
  }

  function onScale(ev, p) {
    ev.preventDefault();
    const input = $("scale-input");
    const raw = input.value.trim();
    const n = Number(raw);
    if (raw === "" || !Number.isInteger(n) || n < 0) {
      actionError("Enter a whole number of instances, 0 or more.");
      input.focus();
      return;
    }
    runAction($("scale-button"), async () => {
      await api("PATCH", p.base, { instances: n });
      return "Scaled " + p.key + " to " + plural(n, "instance") + ".";
    });
  }

  function onRestart(button, p) {
    runAction(button, async () => {
      const svc = await api("POST", p.base + "/restart");
      const n = svc && svc.instances ? svc.instances.length : 0;
      return "Restarting " + p.key + (n ? ": " + plural(n, "instance") + ", one at a time." : ".");
    });
  }

  function onTrigger(button, p) {
    runAction(button, async () => {
      const res = await api("POST", p.base + "/trigger");
      if (res && res.number !== undefined) return "Started run #" + res.number + " on " + res.instance + ".";
      return "Started a run of " + p.key + ".";
    });
  }

  function onPublish(ev, p) {
    ev.preventDefault();
    const endpointInput = $("publish-endpoint");
    const pathInput = $("publish-path");
    const endpoint = endpointInput.value.trim();
    const path = pathInput.value.trim() || null;
    if (!endpoint) {
      actionError("Enter an endpoint, such as www.");
      endpointInput.focus();
      return;
    }
    runAction($("publish-button"), async () => {
      await api("POST", p.base + "/publish", { endpoint, path });
      endpointInput.value = "";
      pathInput.value = "";
      return "Published " + p.key + " on " + endpoint + (path ? " at " + path : "") + ".";
    });
  }

  /** An endpoint URL with a path splits into scheme://host and the path; without one it goes as is. */
  function unpublishBody(url) {
    try {
      const u = new URL(url);
      if (u.pathname && u.pathname !== "/") return { endpoint: u.protocol + "//" + u.host, path: u.pathname };
    } catch (_) {
      /* not a URL: send it as written */
    }
    return { endpoint: url, path: null };
  }

  async function onUnpublish(button, p) {
    const url = button.getAttribute("data-endpoint");
    await runAction(button, async () => {
      await api("POST", p.base + "/unpublish", unpublishBody(url));
      return "Unpublished " + url + ".";
    });
    // Its button is gone now: keep keyboard focus inside the actions.
    if (!button.isConnected && $("publish-endpoint")) $("publish-endpoint").focus();
  }

  function makeUnpublish(url) {
    return el(
      "li",
      null,
      el("button", { type: "button", class: "small", "data-action": "unpublish", "data-endpoint": url }, "Unpublish " + url),
    );
  }

  function buildRuns(p) {
    p.nextRun = el("p", { id: "next-run" });
    p.runsBody = el("tbody");
    p.runsWrap = el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { id: "runs", class: "grid" },
        el("caption", { class: "visually-hidden" }, "Runs, newest first"),
        colHeads("Run", "Trigger", "Status", "Started", "Duration", "Exit", "Message"),
        p.runsBody,
      ),
    );
    p.runsEmpty = el("p", { class: "empty" }, "No runs yet.");
    return el(
      "section",
      { id: "runs-section", "aria-labelledby": "runs-title" },
      el("h2", { id: "runs-title" }, "Runs"),
      p.nextRun,
      p.runsEmpty,
      p.runsWrap,
    );
  }

  function makeRunRow(run) {
    return el(
      "tr",
      { "data-run": run.number },
      el("th", { scope: "row", class: "num number" }),
      el("td", { class: "trigger" }),
      el("td", { class: "status" }),
      el("td", { class: "started" }),
      el("td", { class: "num duration" }),
      el("td", { class: "num exit" }),
      el("td", { class: "message" }),
    );
  }

  function updateRunRow(tr, run) {
    const c = tr.cells;
    setText(c[0], run.number);
    setText(c[1], run.trigger || "");
    setState(c[2], "status", run.status);
    setText(c[3], ago(run.started_at));
    setAttr(c[3], "title", absTime(run.started_at) || null);
    setText(c[4], run.status === "running" ? "-" : fmtDuration(run.duration_ms));
    setText(c[5], run.exit_code === null || run.exit_code === undefined ? "-" : run.exit_code);
    setText(c[6], run.message || "");
  }

  function updateServicePage(p, svc) {
    p.svc = svc;
    const cron = svc.type === "cron";
    setText(p.f_type.dd, svc.type + (svc.kind ? " (" + svc.kind + ")" : ""));
    setText(p.f_command.dd, fmtCommand(svc.command));
    setText(p.f_memory.dd, fmtMiB(svc.memory_limit_bytes));
    // A service with no instance (a cron job between runs) reports version 0.
    setText(p.f_version.dd, svc.version ? "v" + svc.version : "-");
    updateEndpoints(p.endpoints.list, p.endpoints.none, svc);
    setText(p.f_dns.dd, svc.dns_name || "");
    show(p.f_serving.row, !!svc.serving);
    setText(p.f_serving.dd, svc.serving || "");
    show(p.f_schedule.row, !!svc.schedule);
    setText(p.f_schedule.dd, svc.schedule || "");
    show(p.f_timezone.row, !!svc.timezone);
    setText(p.f_timezone.dd, svc.timezone || "");
    show(p.f_next.row, cron);
    setText(p.f_next.dd, svc.next_run ? absTime(svc.next_run) + " (" + until(svc.next_run) + ")" : "none");
    show(p.f_timeout.row, svc.timeout_ms !== null && svc.timeout_ms !== undefined);
    setText(p.f_timeout.dd, fmtDuration(svc.timeout_ms));
    setText(p.f_created.dd, ago(svc.created_at));
    setAttr(p.f_created.dd, "title", absTime(svc.created_at) || null);

    const env = Object.entries(svc.env || {}).sort((a, b) => a[0].localeCompare(b[0]));
    setText(p.envSummary, "Environment variables (" + env.length + ")");
    sync(
      p.envBody,
      env,
      (kv) => kv[0],
      () => el("tr", null, el("th", { scope: "row", class: "mono" }), el("td", { class: "mono" })),
      (tr, kv) => {
        setText(tr.cells[0], kv[0]);
        setText(tr.cells[1], kv[1]);
      },
    );

    setText(p.wanted, svc.instances_desired ?? 0);
    setText(p.running, runningCount(svc));
    updateInstances(p.instances, svc);
    sync(p.unpublishList, svc.endpoints || [], (u) => u, makeUnpublish);
    syncInstanceOptions(p, svc.instances || []);

    if (cron) {
      if (svc.next_run) {
        fill(p.nextRun, "Next run: ", timeEl(svc.next_run, absTime(svc.next_run)), " (" + until(svc.next_run) + ")");
      } else {
        fill(p.nextRun, "No next run scheduled.");
      }
      const runs = svc.runs || [];
      show(p.runsEmpty, runs.length === 0);
      show(p.runsWrap, runs.length > 0);
      sync(p.runsBody, runs, (r) => r.number, makeRunRow, updateRunRow);
    }
  }

  // ---------------------------------------------------------------- charts

  function buildCharts(p) {
    p.charts = {};
    const chart = (id, label) => {
      const svg = svgEl(
        "svg",
        {
          id,
          class: "chart",
          viewBox: "0 0 " + CHART_W + " " + CHART_H,
          role: "img",
          "aria-label": label,
          "aria-labelledby": id + "-title",
        },
        svgEl("title", { id: id + "-title" }, label),
      );
      const caption = el("figcaption", { id: id + "-caption" }, label);
      p.charts[id] = { svg, caption };
      return el("figure", { class: "chart-figure" }, svg, caption);
    };
    p.statsError = el("p", { id: "stats-error", class: "msg error", role: "alert" });
    return el(
      "section",
      { id: "traffic", "aria-labelledby": "traffic-title" },
      el("h2", { id: "traffic-title" }, "Traffic, last 10 minutes"),
      p.statsError,
      el(
        "div",
        { class: "charts" },
        chart("chart-requests", "Requests per second, last 10 minutes"),
        chart("chart-errors", "Errors (5xx) per second, last 10 minutes"),
        chart("chart-latency", "Latency p50 and p95 in milliseconds, last 10 minutes"),
      ),
    );
  }

  async function loadStats(p) {
    const gen = view.gen;
    try {
      const stats = await api("GET", p.base + "/stats");
      if (gen !== view.gen) return;
      setText(p.statsError, "");
      drawCharts(p, stats || {});
    } catch (e) {
      if (gen === view.gen && session.me && !isAbort(e)) setText(p.statsError, errorText(e));
    }
  }

  /** Removes everything but the <title>. */
  function clearChart(svg) {
    for (const child of Array.from(svg.childNodes)) {
      if (child.nodeName !== "title") child.remove();
    }
  }

  function lastOf(list) {
    return list.length ? list[list.length - 1] : null;
  }

  function lastNumber(list) {
    for (let i = list.length - 1; i >= 0; i--) if (typeof list[i] === "number") return list[i];
    return null;
  }

  function drawBars(svg, values, cls) {
    clearChart(svg);
    svg.appendChild(svgEl("line", { class: "chart-axis", x1: 0, y1: CHART_H - 0.5, x2: CHART_W, y2: CHART_H - 0.5 }));
    const n = values.length;
    if (!n) return;
    const max = Math.max(0, ...values);
    const w = CHART_W / n;
    const g = svgEl("g", { class: cls });
    values.forEach((v, i) => {
      if (!(v > 0) || !(max > 0)) return;
      const h = Math.max(1, (v / max) * (CHART_H - 4));
      g.appendChild(
        svgEl("rect", {
          x: (i * w + w * 0.1).toFixed(2),
          y: (CHART_H - h).toFixed(2),
          width: Math.max(0.5, w * 0.8).toFixed(2),
          height: h.toFixed(2),
        }),
      );
    });
    svg.appendChild(g);
  }

  /** Lines with gaps where a window had no value; a lone value shows as a dot. */
  function drawLines(svg, series) {
    clearChart(svg);
    svg.appendChild(svgEl("line", { class: "chart-axis", x1: 0, y1: CHART_H - 0.5, x2: CHART_W, y2: CHART_H - 0.5 }));
    const all = series.flatMap((s) => s.values).filter((v) => typeof v === "number");
    const max = Math.max(0, ...all);
    if (!(max > 0)) return;
    for (const s of series) {
      const n = s.values.length;
      let d = "";
      let open = false;
      s.values.forEach((v, i) => {
        if (typeof v !== "number") {
          open = false;
          return;
        }
        const x = (n === 1 ? CHART_W / 2 : (i * CHART_W) / (n - 1)).toFixed(2);
        const y = (CHART_H - 2 - (v / max) * (CHART_H - 6)).toFixed(2);
        const next = s.values[i + 1];
        if (!open) d += "M" + x + " " + y + (typeof next === "number" ? "" : "l0.01 0");
        else d += "L" + x + " " + y;
        open = true;
      });
      if (d) svg.appendChild(svgEl("path", { class: s.cls, d }));
    }
  }

  function drawCharts(p, stats) {
    const points = Array.isArray(stats.points) ? stats.points : [];
    const step = stats.step_seconds > 0 ? stats.step_seconds : 10;
    const req = points.map((x) => (x.requests || 0) / step);
    const err = points.map((x) => (x.errors || 0) / step);
    const p50 = points.map((x) => (typeof x.p50_ms === "number" ? x.p50_ms : null));
    const p95 = points.map((x) => (typeof x.p95_ms === "number" ? x.p95_ms : null));

    drawBars(p.charts["chart-requests"].svg, req, "bars bars-requests");
    setText(
      p.charts["chart-requests"].caption,
      "Requests: " + fmtRate(lastOf(req)) + " now, peak " + fmtRate(Math.max(0, ...req)),
    );

    drawBars(p.charts["chart-errors"].svg, err, "bars bars-errors");
    const last = lastOf(points);
    const share = last && last.requests ? Math.round((100 * (last.errors || 0)) / last.requests) + "% of requests" : "no requests";
    setText(p.charts["chart-errors"].caption, "Errors (5xx): " + fmtRate(lastOf(err)) + " now (" + share + ")");

    drawLines(p.charts["chart-latency"].svg, [
      { values: p95, cls: "line line-p95" },
      { values: p50, cls: "line line-p50" },
    ]);
    const l50 = lastNumber(p50);
    const l95 = lastNumber(p95);
    fill(
      p.charts["chart-latency"].caption,
      "Latency: ",
      el("span", { class: "swatch swatch-p50" }),
      "p50 " + fmtMs(l50) + ", ",
      el("span", { class: "swatch swatch-p95" }),
      "p95 " + fmtMs(l95) + (l50 === null && l95 === null ? " (no requests)" : " latest"),
    );
  }

  // ---------------------------------------------------------------- logs

  function buildLogs(p) {
    p.logFollow = el("input", { id: "logs-follow", type: "checkbox", checked: true });
    p.logTail = el("input", { id: "logs-tail", type: "number", value: "200", min: "1", step: "1", inputmode: "numeric" });
    p.logInstance = el("select", { id: "logs-instance" });
    p.logStatus = el("p", { id: "logs-status", class: "msg ok", role: "status", "aria-live": "polite" });
    p.logError = el("p", { id: "logs-error", class: "msg error", role: "alert", "aria-live": "assertive" });
    p.logList = el("ol", { id: "logs", tabindex: "0", "aria-label": "Log lines", "data-empty": "No log lines." });
    const controls = el(
      "form",
      { id: "logs-controls", class: "controls" },
      el("div", { class: "field check" }, p.logFollow, el("label", { for: "logs-follow" }, "Follow")),
      el("div", { class: "field" }, el("label", { for: "logs-tail" }, "Lines"), p.logTail),
      el("div", { class: "field" }, el("label", { for: "logs-instance" }, "Instance"), p.logInstance),
    );
    controls.addEventListener("submit", (ev) => {
      ev.preventDefault();
      startLogs(p);
    });
    for (const control of [p.logFollow, p.logTail, p.logInstance]) {
      control.addEventListener("change", () => startLogs(p));
    }
    return el(
      "section",
      { id: "logs-section", "aria-labelledby": "logs-title" },
      el("h2", { id: "logs-title" }, "Logs"),
      controls,
      p.logStatus,
      p.logError,
      p.logList,
    );
  }

  /** The instance filter: "" for all, then each instance; a chosen one that is gone stays listed. */
  function syncInstanceOptions(p, instances) {
    const ids = instances.map((i) => String(i.id));
    const chosen = p.logInstance.value;
    if (chosen && !ids.includes(chosen)) ids.push(chosen);
    sync(
      p.logInstance,
      [""].concat(ids),
      (id) => id,
      (id) => el("option", { value: id }, id === "" ? "All instances" : id),
    );
    if (p.logInstance.value !== chosen) p.logInstance.value = chosen;
  }

  /** (Re)opens the logs with the current controls: a follow stream, or one fetch. */
  function startLogs(p) {
    if (view.logsCtrl) view.logsCtrl.abort();
    view.logsCtrl = null;
    setText(p.logError, "");
    setText(p.logStatus, "");
    const tail = Number(p.logTail.value);
    if (!Number.isInteger(tail) || tail < 1) {
      setText(p.logError, "Lines must be a whole number, 1 or more.");
      return;
    }
    const follow = p.logFollow.checked;
    const query = new URLSearchParams({ tail: String(tail) });
    if (p.logInstance.value) query.set("instance", p.logInstance.value);
    if (follow) query.set("follow", "true");
    const path = p.base + "/logs?" + query.toString();
    p.logList.replaceChildren();
    const ctrl = new AbortController();
    view.logsCtrl = ctrl;
    const work = follow
      ? streamNdjson(
          path,
          ctrl.signal,
          (batch) => appendLogs(p, batch),
          () => setText(p.logStatus, "Following new lines."),
        ).then(() => {
          if (!ctrl.signal.aborted) setText(p.logStatus, "The log stream closed. Change a control to open it again.");
        })
      : api("GET", path, undefined, { signal: ctrl.signal }).then((lines) => {
          if (ctrl.signal.aborted) return;
          const list = Array.isArray(lines) ? lines : [];
          appendLogs(p, list);
          setText(p.logStatus, "Showing " + plural(list.length, "line") + ".");
        });
    work.catch((e) => {
      if (!ctrl.signal.aborted && !isAbort(e) && session.me) setText(p.logError, errorText(e));
    });
  }

  /** The class of a log line: stderr in red, but the platform's own "[mesh] ..." lines muted. */
  function logClass(line) {
    if (line.stream !== "stderr") return "log-line";
    return /^\[mesh\] /.test(String(line.text || "")) ? "log-line log-stderr log-platform" : "log-line log-stderr";
  }

  function logLine(line) {
    return el(
      "li",
      { class: logClass(line) },
      timeEl(line.time, hms(line.time)),
      " ",
      el("span", { class: "log-instance" }, line.instance || ""),
      " ",
      el("span", { class: "log-text" }, line.text === undefined || line.text === null ? "" : String(line.text)),
    );
  }

  /** Appends lines, keeps at most MAX_LOG_LINES, and follows the bottom only if the reader was there. */
  function appendLogs(p, lines) {
    const list = p.logList;
    if (!list.isConnected) return;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 8;
    const frag = document.createDocumentFragment();
    for (const line of lines) if (line && typeof line === "object") frag.appendChild(logLine(line));
    list.appendChild(frag);
    let extra = list.childElementCount - MAX_LOG_LINES;
    while (extra-- > 0) list.firstElementChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  // ---------------------------------------------------------------- service events

  function buildEvents(p) {
    p.eventList = el("ol", { id: "events", class: "event-list", "data-empty": "No events yet." });
    return el(
      "section",
      { id: "events-section", "aria-labelledby": "events-title" },
      el("h2", { id: "events-title" }, "Recent events"),
      p.eventList,
    );
  }

  /** The history before this page opened; the live stream adds the rest. */
  async function loadServiceEvents(p) {
    const gen = view.gen;
    try {
      const list = await api("GET", "/v1/events?tail=500");
      if (gen === view.gen && Array.isArray(list)) addPageEvents(list);
    } catch (_) {
      /* not worth an alert: the live stream still fills the list */
    }
  }

  function addPageEvents(list) {
    const p = view.page;
    if (!p || p.kind !== "service") return;
    const me = session.me;
    let changed = false;
    for (const e of list) {
      if (!e || e.service !== p.key) continue;
      if (me && e.env && me.env && e.env !== me.env) continue; // the operator sees every environment's events
      const key = eventKey(e);
      if (p.eventKeys.has(key)) continue;
      p.eventKeys.add(key);
      p.events.push({ e, t: parseTime(e.time) || 0, seq: p.seq++ });
      changed = true;
    }
    if (!changed) return;
    p.events.sort((a, b) => b.t - a.t || b.seq - a.seq);
    p.events.length = Math.min(p.events.length, MAX_EVENTS);
    fill(
      p.eventList,
      p.events.map(({ e }) =>
        el(
          "li",
          { class: "event" + (/oom|failed/.test(e.kind || "") ? " event-bad" : "") },
          timeEl(e.time, hms(e.time)),
          " ",
          el("span", { class: "event-kind" }, e.kind || ""),
          e.instance ? [" ", el("span", { class: "event-instance" }, e.instance)] : null,
          " ",
          el("span", { class: "event-message" }, e.message || ""),
        ),
      ),
    );
  }

  boot();
})();
