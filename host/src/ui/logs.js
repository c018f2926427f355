/*
 * The service page's logs panel (one fetch or a follow stream, searched
 * and limited to a time range by the API, and downloadable as text) and
 * its list of recent events, fed by the history and the live events stream.
 */

import { el, fill, hms, parseTime, plural, setText, sync, timeEl } from "./dom.js";
import { api, errorText, isAbort, session, streamNdjson, view } from "./api.js";

const MAX_LOG_LINES = 2000;
/** The time ranges offered, in minutes (0: all that is kept). */
const RANGES = [
  [0, "All kept"],
  [5, "Last 5 minutes"],
  [15, "Last 15 minutes"],
  [60, "Last hour"],
  [1440, "Last 24 hours"],
];
/** How long typing in the search waits before asking again. */
const SEARCH_DEBOUNCE_MS = 300;
const MAX_EVENTS = 50;

// ---------------------------------------------------------------- logs

export function buildLogs(p) {
  p.logFollow = el("input", { id: "logs-follow", type: "checkbox", checked: true });
  p.logTail = el("input", { id: "logs-tail", type: "number", value: "200", min: "1", step: "1", inputmode: "numeric" });
  p.logInstance = el("select", { id: "logs-instance" });
  p.logSearch = el("input", { id: "logs-search", type: "search", autocomplete: "off", spellcheck: "false", placeholder: "text in a line" });
  p.logRange = el(
    "select",
    { id: "logs-range" },
    RANGES.map(([minutes, label]) => el("option", { value: String(minutes) }, label)),
  );
  p.logDownload = el("button", { id: "logs-download", type: "button" }, "Download");
  p.logStatus = el("p", { id: "logs-status", class: "msg ok", role: "status", "aria-live": "polite" });
  p.logError = el("p", { id: "logs-error", class: "msg error", role: "alert", "aria-live": "assertive" });
  p.logList = el("ol", { id: "logs", tabindex: "0", "aria-label": "Log lines", "data-empty": "No log lines." });
  const controls = el(
    "form",
    { id: "logs-controls", class: "controls" },
    el("div", { class: "field check" }, p.logFollow, el("label", { for: "logs-follow" }, "Follow")),
    el("div", { class: "field" }, el("label", { for: "logs-tail" }, "Lines"), p.logTail),
    el("div", { class: "field" }, el("label", { for: "logs-instance" }, "Instance"), p.logInstance),
    el("div", { class: "field" }, el("label", { for: "logs-search" }, "Search"), p.logSearch),
    el("div", { class: "field" }, el("label", { for: "logs-range" }, "Time range"), p.logRange),
    p.logDownload,
  );
  controls.addEventListener("submit", (ev) => {
    ev.preventDefault();
    startLogs(p);
  });
  for (const control of [p.logFollow, p.logTail, p.logInstance, p.logRange]) {
    control.addEventListener("change", () => startLogs(p));
  }
  let typing = 0;
  p.logSearch.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => startLogs(p), SEARCH_DEBOUNCE_MS);
  });
  p.logDownload.addEventListener("click", () => downloadLogs(p));
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
export function syncInstanceOptions(p, instances) {
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
export function startLogs(p) {
  // A late call for a page left behind (a search typed just before
  // leaving) must not take the current page's stream.
  if (view.page !== p) return;
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
  const query = logQuery(p);
  query.set("tail", String(tail));
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

/** What the controls ask for, but the number of lines and following. */
function logQuery(p) {
  const query = new URLSearchParams();
  if (p.logInstance.value) query.set("instance", p.logInstance.value);
  const text = p.logSearch.value.trim();
  if (text) query.set("grep", text);
  const minutes = Number(p.logRange.value);
  if (minutes > 0) query.set("since", new Date(Date.now() - minutes * 60000).toISOString());
  return query;
}

/** Every kept line the controls select, as a text file: time, instance, text. */
async function downloadLogs(p) {
  setText(p.logError, "");
  try {
    const lines = await api("GET", p.base + "/logs?" + logQuery(p).toString());
    const list = Array.isArray(lines) ? lines : [];
    const text = list.map((l) => l.time + " " + (l.instance || "") + " " + (l.text ?? "")).join("\n");
    const url = URL.createObjectURL(new Blob([text + (text ? "\n" : "")], { type: "text/plain" }));
    const link = el("a", { href: url, download: p.key.replace("/", "-") + ".log", hidden: true });
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    setText(p.logStatus, "Downloaded " + plural(list.length, "line") + ".");
  } catch (e) {
    if (!isAbort(e) && session.me) setText(p.logError, errorText(e));
  }
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

export function eventKey(e) {
  return [e.time, e.env, e.kind, e.service, e.instance, e.message].join("\u0000");
}

export function buildEvents(p) {
  p.eventList = el("ol", { id: "events", class: "event-list", "data-empty": "No events yet." });
  return el(
    "section",
    { id: "events-section", "aria-labelledby": "events-title" },
    el("h2", { id: "events-title" }, "Recent events"),
    p.eventList,
  );
}

/** The service's history before this page opened; the live stream adds the rest. */
export async function loadServiceEvents(p) {
  const gen = view.gen;
  try {
    const query = new URLSearchParams({ service: p.key, tail: String(MAX_EVENTS) });
    const list = await api("GET", "/v1/events?" + query.toString());
    if (gen === view.gen && Array.isArray(list)) addPageEvents(list);
  } catch (_) {
    /* not worth an alert: the live stream still fills the list */
  }
}

export function addPageEvents(list) {
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
  p.eventKeys = new Set(p.events.map(({ e }) => eventKey(e))); // bounded like the list
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
