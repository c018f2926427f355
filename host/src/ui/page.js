/*
 * What every page shares: mounting a page in the view, focus after
 * navigation, the action regions and the way an action runs, and the
 * instance table and endpoint list of both the overview's service cards
 * and the service page. app.js sets the refresh an action ends with.
 */

import {
  $,
  absTime,
  age,
  el,
  emptyRow,
  fill,
  fmtDuration,
  gridTable,
  isHttpUrl,
  setAttr,
  setState,
  setText,
  show,
  sync,
} from "./dom.js";
import { errorText, isAbort, session, view } from "./api.js";

/** What runAction calls once an action is done: app.js's refresh. */
let refreshPage = async () => {};

export function onRefresh(fn) {
  refreshPage = fn;
}

// ---------------------------------------------------------------- the view

/** Stops what the current view runs (log stream, stats timer). */
export function teardownView() {
  if (view.logsCtrl) view.logsCtrl.abort();
  view.logsCtrl = null;
  clearInterval(view.statsTimer);
  view.statsTimer = 0;
}

/** Puts a new page in the view and, after navigation, focus on its heading. */
export function mount(page, root) {
  teardownView();
  view.page = page;
  fill($("view"), root);
}

export function focusHeading(node) {
  if (view.focus && node) {
    view.focus = false;
    node.focus();
  }
}

// ---------------------------------------------------------------- actions

export function actionRegions() {
  return [
    el("p", { id: "action-status", class: "msg ok", role: "status", "aria-live": "polite" }),
    el("p", { id: "action-error", class: "msg error", role: "alert", "aria-live": "assertive" }),
  ];
}

export function actionError(message) {
  setText($("action-status"), "");
  setText($("action-error"), message);
}

/** Runs one action: clears both regions, shows its line or the API's error, then refreshes. */
export async function runAction(button, work) {
  if (button.getAttribute("aria-disabled") === "true") return;
  const gen = view.gen;
  setText($("action-status"), "");
  setText($("action-error"), "");
  // aria-disabled rather than disabled: a disabled button would drop keyboard focus.
  button.setAttribute("aria-disabled", "true");
  try {
    const message = await work();
    if (gen === view.gen) setText($("action-status"), message);
    await refreshPage();
  } catch (e) {
    if (gen === view.gen && session.me && !isAbort(e)) setText($("action-error"), errorText(e));
  } finally {
    button.removeAttribute("aria-disabled");
  }
}

/** A labelled text input in a form; text fields are not spell-checked or filled in. */
export function field(id, label, attrs) {
  const input = el("input", Object.assign({ id, autocomplete: "off", spellcheck: "false" }, attrs));
  return el("div", { class: "field" }, el("label", { for: id }, label), input);
}

// ---------------------------------------------------------------- instance table (shared)

export function instanceBlock() {
  const tbody = el("tbody");
  const wrap = gridTable(
    { class: "grid instances" },
    "Instances",
    ["Instance", "State", "Restarts", "Exit", "Age", "Node", "Version", "Message"],
    tbody,
  );
  const empty = el("p", { class: "empty" }, "No instances.");
  return { node: el("div", { class: "instances-block" }, wrap, empty), wrap, tbody, empty };
}

function makeInstanceRow(inst) {
  // data-label names each cell where a narrow screen stacks the row.
  const cell = (cls, label) => ({ class: cls, "data-label": label });
  return emptyRow(
    { "data-instance": inst.id },
    "id",
    cell("state", "State"),
    cell("restarts num", "Restarts"),
    cell("exit num", "Exit"),
    cell("age", "Age"),
    cell("node", "Node"),
    cell("version", "Version"),
    cell("message", "Message"),
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

export function updateInstances(block, svc) {
  const list = svc.instances || [];
  sync(block.tbody, list, (i) => i.id, makeInstanceRow, updateInstanceRow);
  show(block.wrap, list.length > 0);
  // A cron job between runs has no instances: its run summary says enough.
  show(block.empty, list.length === 0 && svc.type !== "cron");
}

export function runningCount(svc) {
  return (svc.instances || []).filter((i) => i.state === "running").length;
}

function makeEndpoint(url) {
  const link = isHttpUrl(url)
    ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer", "aria-describedby": "new-tab-note" }, url)
    : el("span", null, url);
  return el("li", null, link);
}

export function updateEndpoints(list, none, svc) {
  const urls = svc.endpoints || [];
  sync(list, urls, (u) => u, makeEndpoint);
  show(list, urls.length > 0);
  show(none, urls.length === 0);
}

export function endpointsCell() {
  const list = el("ul", { class: "endpoint-list" });
  const none = el("span", { class: "muted" }, "not published");
  return { list, none, nodes: [list, none] };
}

export function scheduleText(svc) {
  if (!svc.schedule) return "";
  return svc.schedule + (svc.timezone ? " (" + svc.timezone + ")" : "");
}

// ---------------------------------------------------------------- service page
